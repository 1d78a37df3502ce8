"""The ways the benchmark trains the same settings.

- engine: exactly what the app runs: a run folder, `TrainingJob.setup()` (data preparation,
  tokenizer, the plan, model loading, `builders.build_trainer` with the tokenized-data cache,
  the run's metrics callback), then `trainer.train()`.
- trl (the primary baseline): TRL's defaults: AutoModel with the same BitsAndBytesConfig, the
  same LoraConfig and hyperparameters, `SFTTrainer` with its default collator (batches padded to
  their longest example), gradient checkpointing on (TRL's default), no packing.
- seed: the seed projects' script: the same, with batches padded to max_length
  (`pad_to_multiple_of=max_length`, like `padding="max_length"`).
- unsloth (when installed, CUDA only): Unsloth's FastLanguageModel with the same LoRA and
  hyperparameters, in a child process (Unsloth patches transformers for the whole process).
All train on the same rows with the same loss mask (assistant/completion tokens) and the same
precision, so only the speed knobs differ.

- trl_dpo (with `--objective dpo`, the baseline): a plain DPOTrainer script, DPOConfig's defaults
  (gradient checkpointing on), the same BitsAndBytesConfig, LoraConfig, pairs and hyperparameters.

A variant is one of them with a few settings changed (the per-feature rows of the report).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.bench.measure import MemoryProbe, StepMeter, TokenCounter, release
from finetune.config import RunConfig
from finetune.models import load_tokenizer
from finetune.runs import create_run
from finetune.train.job import TrainingJob
from finetune.train.sft import lora_target_modules


@dataclass
class Variant:
    name: str
    kind: str  # engine | trl | seed | unsloth | trl_dpo
    changes: dict[str, Any] = field(default_factory=dict)  # RunConfig changes (engine) or script options
    env: dict[str, str] = field(default_factory=dict)
    about: str = ""


@dataclass
class BenchContext:
    workspace: Path  # scratch workspace for the bench's runs (its cache/ is the user's)
    model_path: str
    base: RunConfig  # the settings both ways train with; fast-path knobs left at `auto`
    device: str
    warmup: int
    rows: list[dict]  # train rows as the engine shapes them (choose_loss_mode), for the scripts
    loss_mode: str
    plan: Any = None  # the engine's plan (finetune.plan.planner.Plan): the scripts use its precision
    flops_per_token: float | None = None
    peak_tflops: float | None = None


@contextlib.contextmanager
def _environ(changes: dict[str, str]):
    saved = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _sync(device: str):
    if device != "cuda":
        return None
    import torch

    return torch.cuda.synchronize


def _train(ctx: BenchContext, trainer) -> dict[str, Any]:
    counter = TokenCounter(trainer.data_collator)
    trainer.data_collator = counter
    meter = StepMeter(counter, sync=_sync(ctx.device))
    trainer.add_callback(meter)
    trainer.train()
    result = meter.window(ctx.warmup)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result["loss_first"] = losses[0] if losses else None
    result["loss_last"] = losses[-1] if losses else None
    tps = result.get("tokens_per_s")
    if ctx.flops_per_token and ctx.peak_tflops and tps:
        result["mfu"] = tps * ctx.flops_per_token / (ctx.peak_tflops * 1e12)
    args = trainer.args
    result["settings"] = {
        "attn_implementation": getattr(trainer.model.config, "_attn_implementation", None),
        "packing": getattr(args, "packing", False),  # DPOConfig has no packing
        "padding_free": bool(getattr(counter.collator, "padding_free", False)),
        "micro_batch": f"{args.per_device_train_batch_size} x {args.gradient_accumulation_steps}",
        "pad_to_multiple_of": args.pad_to_multiple_of,
        "train_sampling_strategy": args.train_sampling_strategy,
        "gradient_checkpointing": bool(args.activation_checkpointing),
        "use_liger_kernel": bool(args.use_liger_kernel),
        "loss_type": args.loss_type,
    }
    return result


def run_engine(ctx: BenchContext, variant: Variant, rep: int) -> dict[str, Any]:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", variant.name).strip("-").lower()[:60]
    cfg = ctx.base.replace(**variant.changes, run_name=f"bench-{slug}-{rep}")
    run = create_run(cfg, ctx.workspace)
    job = TrainingJob(cfg, run, ctx.workspace, None)
    probe = MemoryProbe(ctx.device)
    trainer = model = None
    try:
        with _environ(variant.env):
            probe.start()
            started = time.perf_counter()
            trainer, model = job.setup()  # the app's own setup path (training.py)
            setup_s = time.perf_counter() - started
            result = _train(ctx, trainer)
        result["peak_mem_gb"] = probe.peak_gb()
        result["setup_s"] = setup_s
        result["cache_hit"] = "tokenized dataset from the cache" in run.log_tail(60)
        result["plan"] = job.plan.summary() if job.plan else None
        return result
    finally:
        del trainer, model, job
        release()


def _script_model(ctx: BenchContext, dtype):
    """(tokenizer, model, peft_config) as a plain TRL script loads them: the same BitsAndBytesConfig and
    LoraConfig as the engine, no planner."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    cfg = ctx.base
    tokenizer = load_tokenizer(cfg, ctx.workspace, path=ctx.model_path)
    quantization = None
    if cfg.quantization == "4bit":
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    elif cfg.quantization == "8bit":
        quantization = BitsAndBytesConfig(load_in_8bit=True)
    model = AutoModelForCausalLM.from_pretrained(
        ctx.model_path,
        quantization_config=quantization,
        dtype=dtype,
        device_map={"": 0} if ctx.device == "cuda" else None,
    )
    peft_config = None
    if cfg.method != "full":
        peft_config = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=lora_target_modules(cfg),
            use_dora=cfg.method == "dora",
            task_type="CAUSAL_LM",
        )
    return tokenizer, model, peft_config


def _script_args(ctx: BenchContext, scratch: Path, rep: int, options: dict[str, Any]) -> dict[str, Any]:
    """The TrainingArguments both plain scripts (SFT and DPO) set; the rest is TRL's defaults."""
    cfg = ctx.base
    return dict(
        output_dir=str(scratch / f"baseline-{rep}"),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps if cfg.warmup_steps > 0 else cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        optim=cfg.optim,
        bf16=ctx.plan.bf16,
        fp16=ctx.plan.fp16,
        use_cpu=ctx.device != "cuda",
        max_length=cfg.max_length,
        gradient_checkpointing=options["gradient_checkpointing"],
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=cfg.seed,
    )


def run_script(ctx: BenchContext, variant: Variant, rep: int, scratch: Path) -> dict[str, Any]:
    """A plain TRL script (kind trl, seed or trl_dpo). Options in `variant.changes`: pad_to_max (seed:
    True, trl: False), gradient_checkpointing (True, TRL's default). trl_dpo: DPOTrainer with DPOConfig's
    defaults (sigmoid loss, beta 0.1, reference = the base with the adapter disabled)."""
    import torch
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback

    cfg = ctx.base
    options = {"pad_to_max": variant.kind == "seed", "gradient_checkpointing": True, **variant.changes}
    bf16, fp16 = ctx.plan.bf16, ctx.plan.fp16
    dtype = torch.bfloat16 if bf16 else torch.float16 if fp16 else torch.float32
    probe = MemoryProbe(ctx.device)
    trainer = model = None
    try:
        with _environ(variant.env), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            probe.start()
            started = time.perf_counter()
            tokenizer, model, peft_config = _script_model(ctx, dtype)
            kwargs = _script_args(ctx, scratch, rep, options)
            if variant.kind == "trl_dpo":
                from trl import DPOConfig, DPOTrainer

                trainer_class, args = DPOTrainer, DPOConfig(**kwargs)
            else:
                from trl import SFTConfig, SFTTrainer

                args = SFTConfig(
                    **kwargs,
                    pad_to_multiple_of=cfg.max_length if options["pad_to_max"] else None,
                    assistant_only_loss=ctx.loss_mode == "assistant_only",
                    completion_only_loss=ctx.loss_mode == "completion_only",
                )
                trainer_class = SFTTrainer
            trainer = trainer_class(
                model=model,
                args=args,
                train_dataset=Dataset.from_list(ctx.rows),
                processing_class=tokenizer,
                peft_config=peft_config,
            )
            trainer.remove_callback(PrinterCallback)
            setup_s = time.perf_counter() - started
            result = _train(ctx, trainer)
        result["peak_mem_gb"] = probe.peak_gb()
        result["setup_s"] = setup_s
        result["cache_hit"] = False
        result["plan"] = None
        return result
    finally:
        del trainer, model
        release()


def run_unsloth(ctx: BenchContext, variant: Variant, rep: int, scratch: Path) -> dict[str, Any]:
    """Unsloth's own QLoRA path, in a child process (finetune/bench/unsloth_arm.py)."""
    import json
    import subprocess
    import sys

    rows_file = scratch / "unsloth_rows.jsonl"
    if not rows_file.exists():
        rows_file.write_text("".join(json.dumps(r) + "\n" for r in ctx.rows), encoding="utf-8")
    cfg = ctx.base
    spec = {
        "model_path": ctx.model_path,
        "rows": str(rows_file),
        "output_dir": str(scratch / f"unsloth-{rep}"),
        "max_length": cfg.max_length,
        "batch": cfg.per_device_train_batch_size,
        "accumulation": cfg.gradient_accumulation_steps,
        "steps": cfg.max_steps,
        "warmup": ctx.warmup,
        "lora_r": cfg.lora_r,
        "lora_alpha": cfg.lora_alpha,
        "learning_rate": cfg.learning_rate,
        "quantization": cfg.quantization,
        "loss_mode": ctx.loss_mode,
        "seed": cfg.seed,
        "flops_per_token": ctx.flops_per_token,
        "peak_tflops": ctx.peak_tflops,
    }
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "finetune.bench.unsloth_arm", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, **variant.env},
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"unsloth arm failed (exit {proc.returncode}): {' | '.join(tail)[:400]}"}
    result = json.loads(lines[-1])
    result.setdefault("setup_s", time.perf_counter() - started)
    result["cache_hit"] = False
    result["plan"] = None
    return result


def profile_engine(ctx: BenchContext, variant: Variant, steps: int = 3) -> str:
    """The engine (with `variant.changes`) under torch.profiler for `steps` optimizer steps after the
    warm-up: the top operators by self time, as a text table."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import TrainerCallback

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.device == "cuda" else [])
    profiler = profile(activities=activities, record_shapes=False)

    class Window(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == ctx.warmup:
                profiler.__enter__()
            elif state.global_step == ctx.warmup + steps:
                if ctx.device == "cuda":
                    torch.cuda.synchronize()
                profiler.__exit__(None, None, None)

    slug = re.sub(r"[^A-Za-z0-9]+", "-", variant.name).strip("-").lower()[:60]
    cfg = ctx.base.replace(**variant.changes, run_name=f"bench-{slug}", max_steps=ctx.warmup + steps + 1)
    job = TrainingJob(cfg, create_run(cfg, ctx.workspace), ctx.workspace, None)
    trainer = model = None
    try:
        trainer, model = job.setup()
        trainer.add_callback(Window())
        trainer.train()
        key = "self_cuda_time_total" if ctx.device == "cuda" else "self_cpu_time_total"
        head = f"{variant.name}: {job.plan.summary() if job.plan else ''}\n"
        return head + profiler.key_averages().table(sort_by=key, row_limit=40)
    finally:
        del trainer, model, job
        release()

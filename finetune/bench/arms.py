"""The two ways the benchmark trains the same settings.

- engine: exactly what the app runs: a run folder, `TrainingJob._setup()` (data preparation,
  tokenizer, model loading, `builders.build_trainer` with the fast path and the tokenized-data
  cache, the run's metrics callback), then `trainer.train()`.
- baseline: a plain TRL script as the seed projects write it: AutoTokenizer/AutoModel with a
  BitsAndBytesConfig, a LoraConfig, `SFTConfig` with the same hyperparameters, batches padded to
  max_length (`pad_to_multiple_of=max_length`, like `padding="max_length"`), no packing, TRL's
  defaults otherwise (gradient checkpointing on, default loss). It trains on the same rows with
  the same loss mask (assistant/completion tokens), so only the speed knobs differ.

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


@dataclass
class Variant:
    name: str
    kind: str  # engine | baseline
    changes: dict[str, Any] = field(default_factory=dict)  # RunConfig changes (engine) or baseline options
    env: dict[str, str] = field(default_factory=dict)
    about: str = ""


@dataclass
class BenchContext:
    workspace: Path  # scratch workspace for the bench's runs (its cache/ is the user's)
    model_path: str
    base: RunConfig  # the settings both ways train with; fast-path knobs left at `auto`
    device: str
    warmup: int
    rows: list[dict]  # train rows as the engine shapes them (choose_loss_mode), for the baseline
    loss_mode: str
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
        "packing": args.packing,
        "padding_free": getattr(trainer, "padding_free", None),
        "pad_to_multiple_of": args.pad_to_multiple_of,
        "train_sampling_strategy": args.train_sampling_strategy,
        "gradient_checkpointing": bool(args.activation_checkpointing),
        "use_liger_kernel": bool(args.use_liger_kernel),
        "loss_type": args.loss_type,
    }
    return result


def run_engine(ctx: BenchContext, variant: Variant, rep: int) -> dict[str, Any]:
    from finetune.runs import create_run
    from finetune.training import TrainingJob

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
            trainer, model = job._setup()  # the app's own setup path (training.py)
            setup_s = time.perf_counter() - started
            result = _train(ctx, trainer)
        result["peak_mem_gb"] = probe.peak_gb()
        result["setup_s"] = setup_s
        result["cache_hit"] = "tokenized dataset from the cache" in run.log_tail(60)
        fast = [line for line in run.log_tail(60).splitlines() if "fast path:" in line]
        result["fast_path"] = fast[-1].split("| ", 1)[-1] if fast else None
        return result
    finally:
        del trainer, model, job
        release()


def run_baseline(ctx: BenchContext, variant: Variant, rep: int, scratch: Path) -> dict[str, Any]:
    """The plain script. Options in `variant.changes`: pad_to_max (True), gradient_checkpointing (True)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from finetune.builders import lora_target_modules
    from finetune.models import cuda_available, load_tokenizer, resolve_precision

    cfg = ctx.base
    options = {"pad_to_max": True, "gradient_checkpointing": True, **variant.changes}
    bf16, fp16 = resolve_precision(cfg)
    dtype = torch.bfloat16 if bf16 else torch.float16 if fp16 else torch.float32
    probe = MemoryProbe(ctx.device)
    trainer = model = None
    try:
        with _environ(variant.env), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            probe.start()
            started = time.perf_counter()
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
                device_map={"": 0} if cuda_available() else None,
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
            args = SFTConfig(
                output_dir=str(scratch / f"baseline-{rep}"),
                max_steps=cfg.max_steps,
                per_device_train_batch_size=cfg.per_device_train_batch_size,
                gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                learning_rate=cfg.learning_rate,
                lr_scheduler_type=cfg.lr_scheduler_type,
                warmup_steps=cfg.warmup_steps if cfg.warmup_steps > 0 else cfg.warmup_ratio,
                weight_decay=cfg.weight_decay,
                optim=cfg.optim,
                bf16=bf16,
                fp16=fp16,
                use_cpu=not cuda_available(),
                max_length=cfg.max_length,
                pad_to_multiple_of=cfg.max_length if options["pad_to_max"] else None,
                gradient_checkpointing=options["gradient_checkpointing"],
                assistant_only_loss=ctx.loss_mode == "assistant_only",
                completion_only_loss=ctx.loss_mode == "completion_only",
                logging_steps=cfg.logging_steps,
                save_strategy="no",
                report_to=[],
                disable_tqdm=True,
                seed=cfg.seed,
            )
            trainer = SFTTrainer(
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
        result["fast_path"] = None
        return result
    finally:
        del trainer, model
        release()

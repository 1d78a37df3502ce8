"""`run_bench(options) -> dict`: the engine, TRL's defaults, the seed script (and Unsloth, and the
per-feature variants) trained in one process, interleaved (A B C, C B A, ...), medians over the repeats."""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.bench.arms import BenchContext, Variant, profile_engine, run_engine, run_script, run_unsloth
from finetune.bench.data import length_stats, make_pairs, make_rows, write_rows
from finetune.bench.measure import flops_params, gpu_peak_tflops, tune_malloc
from finetune.bench.weights import resolve_bench_model
from finetune.config import RunConfig
from finetune.data import prepare_data
from finetune.errors import ConfigError
from finetune.models import check_runnable, load_tokenizer
from finetune.plan.hardware import detect_hardware, detect_machine
from finetune.plan.planner import cpu_threads, make_plan
from finetune.runs import cache_dir
from finetune.train.sft import choose_loss_mode

MEDIAN_KEYS = (
    "tokens_per_s",
    "cpu_tokens_per_s",
    "step_time_s",
    "peak_mem_gb",
    "mfu",
    "real_tokens_per_step",
    "computed_tokens_per_step",
    "loss_tokens_per_step",
    "padding_fraction",
    "setup_s",
)


@dataclass
class BenchOptions:
    model: str = "demo"
    data: str | None = None
    steps: int = 5
    warmup: int = 1
    repeats: int = 2
    max_length: int = 512
    batch_size: int = 4
    grad_accum: int = 4
    rows: int = 400
    min_tokens: int = 20
    quantization: str = "4bit"
    method: str = "lora"
    lora_r: int = 16
    ablate: bool = False
    threads: int = 0  # 0: auto (see pick_threads)
    peak_tflops: float | None = None
    workspace: str | None = None
    keep: bool = False
    unsloth: bool = True  # add the Unsloth arm when unsloth is installed and there is a CUDA GPU
    profile: str | None = None  # folder: torch.profiler tables of the engine and its loss-on-every-token variant
    command: str = ""
    objective: str = "sft"  # sft, or dpo: the engine's DPO against a plain TRL DPO script


def pick_threads(requested: int) -> tuple[int, str]:
    """CPU threads for torch: `requested`, else the planner's choice for this machine (one thread when
    other work keeps the cores busy, where it is faster and far steadier; else torch's default)."""
    import torch

    if requested > 0:
        return requested, "--threads"
    threads, why = cpu_threads(detect_machine())
    return threads or torch.get_num_threads(), why


def machine_info(device: str) -> dict[str, Any]:
    hw = detect_hardware()
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"device": device, "summary": hw.summary(), "nproc": os.cpu_count(), "ram_gb": round(hw.ram_gb, 1)}
    info["cpu"] = cpu
    if hw.gpus:
        info["gpu"] = hw.gpus[0].name
        info["gpu_gb"] = round(hw.gpus[0].total_gb, 1)
    return info


def versions() -> dict[str, str]:
    import accelerate
    import bitsandbytes
    import datasets
    import peft
    import torch
    import transformers
    import trl

    mods = (torch, transformers, trl, peft, bitsandbytes, datasets, accelerate)
    return {"python": sys.version.split()[0], **{m.__name__: m.__version__ for m in mods}}


def variants_for(plan, ablate: bool, unsloth: bool) -> list[Variant]:
    """engine, TRL's defaults, the seed script (and Unsloth), plus with `ablate` one variant per planned
    decision switched the other way. For DPO: the engine and a plain TRL DPO script."""
    if plan.objective == "dpo":
        variants = [
            Variant("engine", "engine", about="the app's DPO, every knob at auto (finetune.plan.planner)"),
            Variant("TRL DPO defaults", "trl_dpo", about="DPOTrainer's defaults: checkpointing on"),
        ]
        if ablate:
            flip = not plan.gradient_checkpointing
            variants.append(
                Variant(
                    f"engine, gradient checkpointing {'on' if flip else 'off'}",
                    "engine",
                    {"gradient_checkpointing": flip},
                )
            )
        return variants
    variants = [
        Variant("engine", "engine", about="the app's engine, every knob at auto (finetune.plan.planner)"),
        Variant("TRL defaults", "trl", about="SFTTrainer's defaults: padded to the longest, checkpointing on"),
        Variant("seed script", "seed", about="padded to max_length, checkpointing on"),
    ]
    if unsloth:
        variants.append(Variant("Unsloth", "unsloth", about="FastLanguageModel, its gradient checkpointing"))
    if not ablate:
        return variants
    flip = not plan.gradient_checkpointing
    variants.append(
        Variant(
            f"engine, gradient checkpointing {'on' if flip else 'off'}",
            "engine",
            {"gradient_checkpointing": flip},
            about="auto decided it " + ("off" if flip else "on"),
        )
    )
    variants.append(
        Variant(
            f"engine, padding-free {'off' if plan.padding_free else 'on'}",
            "engine",
            {"padding_free": not plan.padding_free, "resize_micro_batch": False},
            about="padded batches" if plan.padding_free else f"padding-free over {plan.attn_implementation}",
        )
    )
    if plan.padding_free:
        variants.append(
            Variant("engine, micro-batch as set", "engine", {"resize_micro_batch": False}, about="no re-batching")
        )
    variants.append(Variant("engine, bfd packing", "engine", {"packing": True}, about="TRL packing (regroups rows)"))
    if not plan.padding_free and plan.sampler != "random":
        variants.append(
            Variant("engine, random batches", "engine", {"group_by_length": False}, about="no length grouping")
        )
    if plan.machine.liger:
        flip = not plan.use_liger_kernel
        variants.append(
            Variant(f"engine, Liger {'on' if flip else 'off'}", "engine", {"use_liger_kernel": flip}, about="kernels")
        )
    if "flash" in plan.attn_implementation:
        variants.append(Variant("engine, sdpa attention", "engine", {"attn_implementation": "sdpa"}))
    variants.append(
        Variant("engine, loss on every token", "engine", {"train_on_prompt": True}, about="no completion-only mask")
    )
    variants.append(Variant("TRL defaults, checkpointing off", "trl", {"gradient_checkpointing": False}))
    return variants


def _median(values: list) -> float | None:
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def _summarize(variant: Variant, runs: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": variant.name, "kind": variant.kind, "about": variant.about}
    out.update({key: _median([r.get(key) for r in runs]) for key in MEDIAN_KEYS})
    out["settings"] = runs[-1].get("settings") if runs else None
    out["plan"] = runs[-1].get("plan") if runs else None
    out["error"] = next((r["error"] for r in runs if r.get("error")), None)
    out["loss_first"] = runs[-1].get("loss_first") if runs else None
    out["cache_hits"] = [bool(r.get("cache_hit")) for r in runs]
    out["repeats"] = [
        {k: r.get(k) for k in ("tokens_per_s", "cpu_tokens_per_s", "step_time_s", "peak_mem_gb", "setup_s")}
        for r in runs
    ]
    return out


def _context(options: BenchOptions, scratch: Path, log) -> tuple[BenchContext, Any, dict]:
    machine = detect_machine()
    device = machine.device
    log(f"model {options.model}: preparing")
    model_path = resolve_bench_model(options.model, scratch)
    probe_cfg = RunConfig(model_name_or_path=model_path)
    tokenizer = load_tokenizer(probe_cfg, scratch, path=model_path)
    data_stats = None
    if options.data:
        data_file = Path(options.data).expanduser().resolve()
    else:
        max_tokens = max(options.min_tokens, options.max_length - 12)
        rows = make_rows(tokenizer, options.rows, options.min_tokens, max_tokens)
        data_stats = length_stats(rows, tokenizer)
        if options.objective == "dpo":
            rows = make_pairs(rows)
        data_file = write_rows(rows, scratch / "bench_data.jsonl")
    base = RunConfig(
        model_name_or_path=model_path,
        dataset_path=str(data_file),
        max_length=options.max_length,
        per_device_train_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum,
        max_steps=options.warmup + options.steps,
        val_split=0.0,
        eval_steps=0,
        save_steps=10**8,  # never within a bench run (the RunConfig bound)
        logging_steps=1,  # every arm records its first loss (what each arm trained is checked by it)
        quantization=options.quantization,
        method=options.method,
        lora_r=options.lora_r,
        lora_alpha=2 * options.lora_r,
        objective=options.objective,
    )
    problems = base.validate() + check_runnable(base, machine)
    if problems:
        raise ConfigError(problems)
    data = prepare_data(base, tokenizer)
    if base.is_preference:
        loss_mode, rows = base.objective, data.train_rows
    else:
        loss_mode, rows = choose_loss_mode(data.train_rows, tokenizer, base.train_on_prompt)
    mean = (data.stats or {}).get("mean") or None
    plan = make_plan(base, machine, model=model_path, mean_tokens=mean)
    params = flops_params(model_path)
    peak = options.peak_tflops
    if device == "cuda" and peak is None:
        import torch

        peak = gpu_peak_tflops(torch.cuda.get_device_name())
    ctx = BenchContext(
        workspace=scratch,
        model_path=model_path,
        base=base,
        device=device,
        warmup=options.warmup,
        rows=rows,
        loss_mode=loss_mode,
        flops_per_token=(6 if options.method == "full" else 4) * params if params else None,
        peak_tflops=peak if device == "cuda" else None,
        plan=plan,
    )
    data_info = {"file": str(data_file) if options.data else "generated", "rows": len(rows), "loss_mode": loss_mode}
    data_info["token_lengths"] = data_stats or {k: data.stats.get(k) for k in ("min", "mean", "p50", "max")}
    return ctx, plan, {"data": data_info, "flops_params": params}


def run_bench(options: BenchOptions, log=None) -> dict[str, Any]:
    """Train engine and baseline (and the ablations) `options.repeats` times each, interleaved."""
    import datasets
    import torch
    from transformers.utils import logging as hf_logging

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    if options.steps < 1 or options.warmup < 1 or options.repeats < 1:
        raise ConfigError(["--steps, --warmup and --repeats must be at least 1"])
    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    tune_malloc()
    threads, why = pick_threads(options.threads)
    if not torch.cuda.is_available():
        torch.set_num_threads(threads)
    scratch = Path(tempfile.mkdtemp(prefix="finetune-bench-"))
    (scratch / "cache").symlink_to(cache_dir(options.workspace), target_is_directory=True)
    started = time.time()
    try:
        ctx, plan, extra = _context(options, scratch, log)
        unsloth = options.unsloth and ctx.device == "cuda" and importlib.util.find_spec("unsloth") is not None
        variants = variants_for(plan, options.ablate, unsloth)
        runs: dict[str, list[dict]] = {v.name: [] for v in variants}
        for rep in range(options.repeats):
            order = variants if rep % 2 == 0 else list(reversed(variants))
            for variant in order:
                result = _run_variant(ctx, variant, rep, scratch)
                runs[variant.name].append(result)
                tps = result.get("tokens_per_s")
                shown = f"{tps:,.0f} tokens/s" if tps else result.get("error", "no measurement")
                log(f"[{rep + 1}/{options.repeats}] {variant.name}: {shown}")
        if options.profile:
            extra["profiles"] = _profile(ctx, Path(options.profile), log)
    finally:
        if not options.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    summaries = [_summarize(v, runs[v.name]) for v in variants]
    engine, baseline = summaries[0], summaries[1]
    seed = next((s for s in summaries if s["kind"] == "seed"), {"tokens_per_s": None})
    peer = next((s for s in summaries if s["kind"] == "unsloth"), None)
    for s in summaries:
        s["ratio_vs_baseline"] = _ratio(s["tokens_per_s"], baseline["tokens_per_s"])
        s["ratio_vs_engine"] = _ratio(s["tokens_per_s"], engine["tokens_per_s"])
    settings = {
        k: getattr(ctx.base, k)
        for k in ("max_length", "per_device_train_batch_size", "gradient_accumulation_steps", "quantization", "method")
    }
    settings.update(lora_r=options.lora_r, steps=options.steps, warmup=options.warmup, repeats=options.repeats)
    return {
        "command": options.command,
        "model": options.model,
        "device": ctx.device,
        "threads": threads if ctx.device == "cpu" else None,
        "threads_reason": why if ctx.device == "cpu" else None,
        "baseline": baseline["name"],
        "objective": options.objective,
        "engine_tokens_per_s": engine["tokens_per_s"],
        "baseline_tokens_per_s": baseline["tokens_per_s"],
        "seed_tokens_per_s": seed["tokens_per_s"],
        "unsloth_tokens_per_s": peer["tokens_per_s"] if peer else None,
        "ratio": _ratio(engine["tokens_per_s"], baseline["tokens_per_s"]),
        "ratio_vs_seed": _ratio(engine["tokens_per_s"], seed["tokens_per_s"]),
        "ratio_vs_unsloth": _ratio(engine["tokens_per_s"], peer["tokens_per_s"]) if peer else None,
        "cpu_time_ratio": _ratio(engine["cpu_tokens_per_s"], baseline["cpu_tokens_per_s"]),
        "engine_step_time_s": engine["step_time_s"],
        "baseline_step_time_s": baseline["step_time_s"],
        "engine_peak_mem_gb": engine["peak_mem_gb"],
        "baseline_peak_mem_gb": baseline["peak_mem_gb"],
        "engine_mfu": engine["mfu"],
        "baseline_mfu": baseline["mfu"],
        "memory_metric": "torch.cuda.max_memory_allocated" if ctx.device == "cuda" else "peak RSS growth",
        "peak_tflops": ctx.peak_tflops,
        "flops_per_token": ctx.flops_per_token,
        "plan": plan.to_dict(),
        "settings": settings,
        **extra,
        "variants": summaries,
        "machine": machine_info(ctx.device),
        "versions": versions(),
        "wall_s": round(time.time() - started, 1),
    }


def _run_variant(ctx: BenchContext, variant: Variant, rep: int, scratch: Path) -> dict[str, Any]:
    if variant.kind == "engine":
        return run_engine(ctx, variant, rep)
    if variant.kind == "unsloth":
        return run_unsloth(ctx, variant, rep, scratch)
    return run_script(ctx, variant, rep, scratch)


def _profile(ctx: BenchContext, folder: Path, log) -> dict[str, str]:
    """torch.profiler over the measured steps of the engine and of its loss-on-every-token variant:
    where the time of completion-only loss goes (issue 11). Tables are written to `folder`."""

    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, changes in (("engine", {}), ("loss-on-every-token", {"train_on_prompt": True})):
        path = folder / f"profile_{name}.txt"
        path.write_text(profile_engine(ctx, Variant(f"profile {name}", "engine", changes)), encoding="utf-8")
        written[name] = str(path)
        log(f"profile of {name}: {path}")
    return written


def _ratio(a, b) -> float | None:
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None

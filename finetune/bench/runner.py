"""`run_bench(options) -> dict`: both ways (and the per-feature variants) trained in one process,
interleaved (A B, B A, ...), medians over the repeats."""

from __future__ import annotations

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

from finetune.bench.arms import BenchContext, Variant, run_baseline, run_engine
from finetune.errors import ConfigError

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
    command: str = ""


def pick_threads(requested: int) -> tuple[int, str]:
    """CPU threads for torch: `requested`, else torch's default unless other work keeps the cores busy
    (1-minute load average >= half the cores), where one thread is faster and far steadier."""
    import torch

    default = torch.get_num_threads()
    if requested > 0:
        return requested, "--threads"
    try:
        load = os.getloadavg()[0]
    except OSError:
        return default, "torch default"
    cores = os.cpu_count() or 1
    if cores > 1 and load >= cores / 2:
        return 1, f"load average {load:.1f} on {cores} cores: other work is running, 1 thread"
    return default, f"torch default (load average {load:.1f} on {cores} cores)"


def machine_info(device: str) -> dict[str, Any]:
    from finetune.hardware import detect_hardware

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


def plan(base, fast, ablate: bool) -> list[Variant]:
    """engine and baseline, plus (with `ablate`) one variant per fast-path feature switched the other way."""
    variants = [
        Variant("engine", "engine", about="the app's engine, every fast-path knob at auto"),
        Variant("baseline", "baseline", about="plain TRL: padded to max_length, gradient checkpointing on"),
    ]
    if not ablate:
        return variants
    gc_flip = not fast.gradient_checkpointing
    variants.append(
        Variant(
            f"engine, gradient checkpointing {'on' if gc_flip else 'off'}",
            "engine",
            {"gradient_checkpointing": gc_flip},
            about="auto decided it " + ("off" if gc_flip else "on"),
        )
    )
    if fast.sampler != "random":
        variants.append(
            Variant("engine, random batches", "engine", {"group_by_length": False}, about="no length grouping")
        )
    if fast.sampler != "group" and not fast.packing:
        variants.append(
            Variant("engine, group_by_length", "engine", {"group_by_length": True}, about="HF LengthGroupedSampler")
        )
    variants.append(
        Variant(
            f"engine, packing {'off' if fast.packing else 'on'}",
            "engine",
            {"packing": not fast.packing},
            about="padding-free bfd packing" + ("" if fast.packing else f" over {fast.attn_implementation}"),
        )
    )
    if "flash" in fast.attn_implementation:
        variants.append(Variant("engine, sdpa attention", "engine", {"attn_implementation": "sdpa"}))
    if fast.use_liger_kernel:
        variants.append(Variant("engine, no Liger kernels", "engine", env={"FINETUNE_LIGER": "0"}))
    variants.append(
        Variant("engine, loss on every token", "engine", {"train_on_prompt": True}, about="no completion-only mask")
    )
    variants.append(
        Variant("baseline, padded to the longest", "baseline", {"pad_to_max": False}, about="dynamic padding")
    )
    variants.append(Variant("baseline, gradient checkpointing off", "baseline", {"gradient_checkpointing": False}))
    return variants


def _median(values: list) -> float | None:
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def _summarize(variant: Variant, runs: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": variant.name, "kind": variant.kind, "about": variant.about}
    out.update({key: _median([r.get(key) for r in runs]) for key in MEDIAN_KEYS})
    out["settings"] = runs[-1].get("settings") if runs else None
    out["fast_path"] = runs[-1].get("fast_path") if runs else None
    out["loss_first"] = runs[-1].get("loss_first") if runs else None
    out["cache_hits"] = [bool(r.get("cache_hit")) for r in runs]
    out["repeats"] = [
        {k: r.get(k) for k in ("tokens_per_s", "cpu_tokens_per_s", "step_time_s", "peak_mem_gb", "setup_s")}
        for r in runs
    ]
    return out


def _context(options: BenchOptions, scratch: Path, log) -> tuple[BenchContext, Any, dict]:
    from finetune.bench.data import length_stats, make_rows, write_rows
    from finetune.bench.measure import flops_params, gpu_peak_tflops
    from finetune.bench.weights import resolve_bench_model
    from finetune.builders import device_kind, resolve_fast_path
    from finetune.config import RunConfig
    from finetune.data import prepare_data
    from finetune.models import check_runnable, load_tokenizer
    from finetune.training import choose_loss_mode

    device = device_kind()
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
        data_file = write_rows(rows, scratch / "bench_data.jsonl")
        data_stats = length_stats(rows, tokenizer)
    base = RunConfig(
        model_name_or_path=model_path,
        dataset_path=str(data_file),
        max_length=options.max_length,
        per_device_train_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum,
        max_steps=options.warmup + options.steps,
        val_split=0.0,
        eval_steps=0,
        save_steps=10**9,
        quantization=options.quantization,
        method=options.method,
        lora_r=options.lora_r,
        lora_alpha=2 * options.lora_r,
    )
    problems = base.validate() + check_runnable(base)
    if problems:
        raise ConfigError(problems)
    data = prepare_data(base, tokenizer)
    loss_mode, rows = choose_loss_mode(data.train_rows, tokenizer, base.train_on_prompt)
    fast = resolve_fast_path(base, model=model_path)
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
    )
    data_info = {"file": str(data_file) if options.data else "generated", "rows": len(rows), "loss_mode": loss_mode}
    data_info["token_lengths"] = data_stats or {k: data.stats.get(k) for k in ("min", "mean", "p50", "max")}
    return ctx, fast, {"data": data_info, "flops_params": params}


def run_bench(options: BenchOptions, log=None) -> dict[str, Any]:
    """Train engine and baseline (and the ablations) `options.repeats` times each, interleaved."""
    import datasets
    import torch
    from transformers.utils import logging as hf_logging

    from finetune.bench.measure import tune_malloc
    from finetune.runs import cache_dir

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
        ctx, fast, extra = _context(options, scratch, log)
        variants = plan(ctx.base, fast, options.ablate)
        runs: dict[str, list[dict]] = {v.name: [] for v in variants}
        for rep in range(options.repeats):
            order = variants if rep % 2 == 0 else list(reversed(variants))
            for variant in order:
                arm = run_engine if variant.kind == "engine" else run_baseline
                args = (ctx, variant, rep) if variant.kind == "engine" else (ctx, variant, rep, scratch)
                result = arm(*args)
                runs[variant.name].append(result)
                tps = result.get("tokens_per_s")
                log(f"[{rep + 1}/{options.repeats}] {variant.name}: {tps:,.0f} tokens/s" if tps else variant.name)
    finally:
        if not options.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    summaries = [_summarize(v, runs[v.name]) for v in variants]
    engine, baseline = summaries[0], summaries[1]
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
        "engine_tokens_per_s": engine["tokens_per_s"],
        "baseline_tokens_per_s": baseline["tokens_per_s"],
        "ratio": _ratio(engine["tokens_per_s"], baseline["tokens_per_s"]),
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
        "fast_path": fast.to_dict(),
        "settings": settings,
        **extra,
        "variants": summaries,
        "machine": machine_info(ctx.device),
        "versions": versions(),
        "wall_s": round(time.time() - started, 1),
    }


def _ratio(a, b) -> float | None:
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None

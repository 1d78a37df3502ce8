"""`finetune estimate`: print the memory estimate of a model + preset/config as a table or JSON.

The lead wires it in `finetune/cli/main.py` with `register_cli(subparsers)`; the parser calls
`run_estimate_cli(args) -> int` (0 on success, 1 with a one-paragraph error on bad input).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from finetune.config import STRATEGY_CHOICES, RunConfig
from finetune.errors import FinetuneError
from finetune.jsontext import dumps
from finetune.plan.hardware import Machine, detect_machine
from finetune.plan.memory import DEVICES, MemoryEstimate
from finetune.plan.planner import estimate as plan_estimate
from finetune.plan.prediction import format_seconds
from finetune.presets import apply_preset
from finetune.studio import Studio

LABELS = {
    "base_weights": "base weights",
    "adapter_weights": "adapter weights",
    "gradients": "gradients",
    "optimizer_states": "optimizer states",
    "activations": "activations",
    "logits_loss": "logits + loss",
    "workspace": "backward workspace",
    "gathered_weights": "gathered layers",
    "allocator_slack": "allocator slack",
    "cuda_context": "CUDA context",
    "runtime": "runtime",
}


def register_cli(subparsers) -> argparse.ArgumentParser:
    """Add the `estimate` subcommand to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "estimate",
        help="estimate peak GPU memory of a fine-tuning run (reads only config.json)",
        description="Estimate peak training memory from the model's config.json and the run settings.",
    )
    parser.add_argument("--model", "-m", help="Hub id, local folder, bundled shape (e.g. llama-3.1-8b) or demo")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", help="preset name (see presets/)")
    source.add_argument("--config", type=Path, help="a RunConfig YAML file")
    parser.add_argument(
        "--set",
        dest="set_values",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting (repeatable), e.g. --set per_device_train_batch_size=2",
    )
    parser.add_argument("--seq-len", type=int, help="tokens per sequence (default: max_length)")
    parser.add_argument("--device", choices=DEVICES, default="cuda", help="what to estimate for (default: cuda)")
    parser.add_argument("--gpu-gb", type=float, help="GPU memory to judge against (default: the detected GPU)")
    parser.add_argument("--gpus", type=int, help="GPUs to spread the run over (default: the config's num_gpus)")
    parser.add_argument(
        "--strategy", choices=STRATEGY_CHOICES, help="how the GPUs share the work (default: the config's strategy)"
    )
    parser.add_argument(
        "--data",
        help="training data (file or Hub dataset id): adds the time prediction (steps, tokens, seconds) from its "
        "token-length audit",
    )
    parser.add_argument(
        "--price-per-hour", type=float, help="price of one GPU hour (a CPU: the machine's): adds the cost"
    )
    parser.add_argument(
        "--gpu", help="the GPU to predict the time for when it is not this machine's, e.g. A10G, H100, RTX 4090"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(func=run_estimate_cli)
    return parser


def build_config(args: argparse.Namespace) -> RunConfig:
    """Defaults, then the preset or config file, then --set, then --model."""

    config = RunConfig()
    if getattr(args, "config", None):
        config = RunConfig.from_yaml(args.config)
    elif getattr(args, "preset", None):
        config = apply_preset(config, args.preset)
    if getattr(args, "set_values", None):
        config = config.with_overrides(args.set_values)
    if getattr(args, "model", None):
        config = config.replace(model_name_or_path=args.model)
    if getattr(args, "gpus", None) is not None:
        config = config.replace(num_gpus=args.gpus)
    if getattr(args, "strategy", None):
        config = config.replace(strategy=args.strategy)
    if getattr(args, "data", None):
        config = config.replace(dataset_path=args.data)
    if getattr(args, "price_per_hour", None) is not None:
        config = config.replace(price_per_hour=args.price_per_hour)
    return config


def _machine(args: argparse.Namespace):
    """The machine to plan for: the detected one when it is what --device asks for (and no --gpu-gb),
    else one described by --device and --gpu-gb. Returns (machine, GPU name, GPU memory)."""

    device = getattr(args, "device", "cuda") or "cuda"
    detected = detect_machine()
    named = getattr(args, "gpu", None)
    if detected.device == device and not getattr(args, "gpu_gb", None) and not named:
        return detected, detected.gpu_name, detected.gpu_gb
    gpu_gb = float(getattr(args, "gpu_gb", None) or 0.0)
    name = f"a {gpu_gb:g} GB GPU" if gpu_gb else ""
    if named:
        name = f"{named} ({gpu_gb:g} GB)" if gpu_gb else named
    extra = {"cpu_count": detected.cpu_count, "load_average": detected.load_average} if device == "cpu" else {}
    if named:
        extra["gpu_name"] = named
    return Machine.virtual(device, gpu_gb, **extra), name, gpu_gb


def format_table(estimate: MemoryEstimate, gpu_name: str = "", gpu_gb: float = 0.0) -> str:
    """Readable multi-line summary of an estimate."""
    i, p = estimate.inputs, estimate.params
    share = 100 * p["trainable"] / max(1, p["total"])
    method = (
        "full fine-tuning" if i["method"] == "full" else f"{i['method']} r{i['lora_r']} on {i['lora_target_modules']}"
    )
    where = f"per GPU of {estimate.gpus} ({estimate.strategy})" if estimate.gpus > 1 else "one GPU"
    lines = [
        f"Memory estimate ({where}) for {estimate.model} ({p['total'] / 1e9:.2f}B parameters, "
        f"{p['trainable'] / 1e6:.1f}M trainable = {share:.2f}%)",
        f"  {i['quantization']} · {method} · batch {i['batch_size']} x {i['seq_len']} tokens · gradient checkpointing "
        f"{'on' if i['gradient_checkpointing'] else 'off'} · {i['optim']} · {i['compute_dtype']} on {i['device']}",
        "",
    ]
    for key, value in estimate.breakdown.items():
        lines.append(f"  {LABELS.get(key, key):<20} {value:8.2f} GB")
    lines.append(f"  {'-' * 31}")
    lines.append(f"  {'total per GPU' if estimate.gpus > 1 else 'total':<20} {estimate.total_gb:8.2f} GB")
    if i["device"] == "cuda":
        lines.append(f"  {'max_memory_allocated':<20} {estimate.allocated_gb:8.2f} GB  (what PyTorch itself reports)")
    if gpu_gb > 0:
        lines += ["", f"  On {gpu_name} ({gpu_gb:.1f} GB): {estimate.verdict(gpu_gb)}"]
    if estimate.plan is not None:
        lines += ["", "Plan (what auto decided):"] + [f"  {line[len('plan: ') :]}" for line in estimate.plan.lines()]
    lines += ["", "Notes:"] + [f"  - {note}" for note in estimate.notes]
    return "\n".join(lines)


def run_estimate_cli(args: argparse.Namespace) -> int:
    """Handler of `finetune estimate`; returns the exit code."""
    try:
        # stdout carries the table or the JSON only: a library imported on the way (DeepSpeed logs
        # its accelerator choice to stdout) writes to stderr instead
        with contextlib.redirect_stdout(sys.stderr):
            config = build_config(args)
            machine, gpu_name, gpu_gb = _machine(args)
            plan, estimate = plan_estimate(config, machine, seq_len=args.seq_len)
            prediction = _predict(config, machine) if config.dataset_path else None
    except FinetuneError as exc:
        print(f"finetune estimate: {exc}", file=sys.stderr)
        return 1
    if args.json:
        data = estimate.to_dict()
        data["plan"] = plan.to_dict()
        data["preset"] = getattr(args, "preset", None)
        data["config_file"] = str(args.config) if getattr(args, "config", None) else None
        data["overrides"] = list(getattr(args, "set_values", []) or [])
        if gpu_gb > 0:
            data["gpu"] = {"name": gpu_name, "total_gb": round(gpu_gb, 2), "verdict": estimate.verdict(gpu_gb)}
        if prediction is not None:
            time_data = prediction.to_dict()
            data["time"] = time_data
            for key in ("predicted_steps", "predicted_tokens", "predicted_seconds", "predicted_cost"):
                data[key] = time_data.get(key)
        print(dumps(data, indent=1))
    else:
        print(format_table(estimate, gpu_name, gpu_gb))
        if prediction is not None:
            print("\n" + format_time(prediction))
    return 0


def _predict(config: RunConfig, machine):
    """The time prediction of `config` on `machine` (its data's token lengths, the CPU's calibration)."""

    studio = Studio(restrict_paths=False, machine=machine)
    prediction = studio.timing.predict(config, machine=machine)
    if prediction.estimate is None and prediction.why_not and "Error" in prediction.why_not.split(":")[0]:
        raise FinetuneError(prediction.why_not)
    return prediction


def format_time(prediction) -> str:
    """The time prediction as lines of text (the CLI's table)."""

    est = prediction.estimate
    if est is None:
        return f"Time: no prediction ({prediction.why_not})"
    cost = f" · cost {est.cost:.2f} at {est.price_per_hour:g}/h per device" if est.cost is not None else ""
    speed = f"{est.tokens_per_s:,.0f} tokens/s"
    if est.mfu is not None:
        speed += f", MFU {est.mfu:.0%}"
    else:
        speed += f", {est.flops_per_s / 1e9:.1f} GFLOP/s"
    lines = [
        f"Time ({prediction.data}): {est.steps} steps · {est.tokens:,.0f} tokens · {speed} · "
        f"about {format_seconds(est.seconds)}{cost}",
        f"  training {format_seconds(est.train_seconds)}, evaluation {format_seconds(est.eval_seconds)}, "
        f"checkpoints {format_seconds(est.save_seconds)} (loading the model and data not included)",
    ]
    lines += [f"  {name}: {why}" for name, why in est.reasons]
    lines += [f"  - {note}" for note in est.notes + ([prediction.busy_cpu] if prediction.busy_cpu else [])]
    return "\n".join(lines)

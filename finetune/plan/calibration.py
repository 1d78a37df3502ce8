"""The CPU's throughput for the time prediction: measured once per machine, cached in the workspace.

A CPU has no datasheet peak that training reaches, and small models train far below it (Python, kernel
launches and dequantization dominate): the calibration (finetune/train/calibrate.py) trains the built-in
demo model for a few steps through the engine's own builders, with the run's method, quantization,
checkpointing and objective, and fits three numbers from the step times:

    seconds per optimizer step = step_s + passes x pass_s + matmul FLOPs / flops_per_s
                                 + attention FLOPs / attention_flops_per_s

(rows of three lengths, and the short rows split into the run's accumulated passes, at least two), plus one evaluation and
one checkpoint. Step times are interquartile means of CPU time on one thread, so a few steps slowed by
other work on a shared machine do not move them. The result is cached in <workspace>/cache/calibration/cpu.json under a key of the machine (CPU
model, cores, torch version, torch threads) and the run's kind; a changed machine is measured again. Each
finished run of that kind refines it (`refine`: the median measured/predicted ratio of the latest five).
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any

from finetune.config import RunConfig
from finetune.files import write_text_atomic
from finetune.plan.throughput import Throughput

CALIBRATION_VERSION = 3
CALIBRATION_DEMO_LAYERS = 2  # the demo model's decoder layers, what the fixed costs were measured on
_lock = threading.Lock()


def cache_path(workspace: str | Path) -> Path:
    return Path(workspace) / "cache" / "calibration" / "cpu.json"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_key(plan) -> dict[str, Any]:
    """What makes this machine this machine for the calibration: a change of any part measures again."""
    import torch

    return {
        "version": CALIBRATION_VERSION,
        "cpu": cpu_model(),
        "cores": plan.machine.cpu_count,
        "torch": str(torch.__version__),
        "threads": plan.cpu_threads or torch.get_num_threads(),
    }


def run_kind(config: RunConfig, plan) -> dict[str, Any]:
    """The parts of a run that change the fixed costs per pass and per step."""
    return {
        "method": config.method,
        "quantization": "none" if config.method == "full" else config.quantization,
        "checkpointing": bool(plan.gradient_checkpointing),
        "objective": config.objective,
        # measured: a pass costs more the more passes a step accumulates (on this CPU, 2 rows x 4 passes took
        # 2.3x the time of 4 rows x 2), so the split phase is measured at the run's own accumulation
        "accumulation": max(2, plan.gradient_accumulation_steps),
    }


def key_text(plan, config: RunConfig) -> str:
    return json.dumps({**machine_key(plan), **run_kind(config, plan)}, sort_keys=True)


def _read(workspace: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(cache_path(workspace).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached(workspace: str | Path, config: RunConfig, plan) -> dict[str, Any] | None:
    """The stored calibration of this machine and run kind, or None."""
    entry = _read(workspace).get(key_text(plan, config))
    return entry if isinstance(entry, dict) and isinstance(entry.get("flops_per_s"), (int, float)) else None


def store(workspace: str | Path, config: RunConfig, plan, entry: dict[str, Any]) -> None:
    with _lock:
        data = _read(workspace)
        data[key_text(plan, config)] = entry
        path = cache_path(workspace)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(data, indent=1))


def _solve3(rows: list[list[float]], values: list[float]) -> list[float] | None:
    """x with rows @ x = values (Cramer's rule), None when the system is singular."""

    def det(m):
        return (
            m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
        )

    whole = det(rows)
    if abs(whole) < 1e-30:
        return None
    out = []
    for col in range(3):
        swapped = [[values[i] if j == col else rows[i][j] for j in range(3)] for i in range(3)]
        out.append(det(swapped) / whole)
    return out


REFINE_RUNS = 5  # the latest finished runs whose measured/predicted ratio refines a calibration
REFINE_BOUNDS = (0.5, 2.0)


def refine(workspace: str | Path, config: RunConfig, plan, *, measured_s: float, predicted_s: float) -> None:
    """A finished run of this kind measured `measured_s` where `predicted_s` was predicted: its calibration keeps
    the ratio (against the unrefined calibration) and is refined by the median of the latest REFINE_RUNS. One
    calibration is a snapshot of a few seconds; the runs see the machine as it is over minutes."""
    entry = cached(workspace, config, plan)
    if entry is None or predicted_s <= 0 or measured_s <= 0:
        return
    raw = measured_s / predicted_s * float(entry.get("correction", 1.0))
    ratios = ([*entry.get("ratios", []), raw])[-REFINE_RUNS:]
    low, high = REFINE_BOUNDS
    correction = min(high, max(low, sorted(ratios)[len(ratios) // 2]))
    store(workspace, config, plan, {**entry, "ratios": ratios, "correction": correction})


def fit(phases: dict[str, dict[str, float]]) -> dict[str, float]:
    """flops_per_s, attention_flops_per_s, pass_s, step_s from median step times, each phase {seconds, flops
    (matmuls), attention (FLOPs), passes}: `short`, `long` and `longest` rows (one pass per step) and `split`
    (the short rows in two accumulated passes). Attention gets its own rate when the three lengths tell it
    apart (on a CPU small attention heads run far below the matmuls), else shares the matmuls' rate."""
    short, long, split = phases["short"], phases["long"], phases["split"]
    longest = phases.get("longest")
    rate = attention_rate = None
    fixed = None
    if longest is not None:
        solved = _solve3(
            [[1.0, p["flops"], p["attention"]] for p in (short, long, longest)],
            [p["seconds"] for p in (short, long, longest)],
        )
        if solved is not None and solved[1] > 0 and solved[2] > 0 and solved[0] >= 0:
            fixed, rate, attention_rate = solved[0], 1 / solved[1], 1 / solved[2]
    if rate is None:  # one rate for everything, from the short and long rows
        total_short, total_long = short["flops"] + short["attention"], long["flops"] + long["attention"]
        gained = long["seconds"] - short["seconds"]
        if gained > 0 and total_long > total_short:
            rate = (total_long - total_short) / gained
        else:  # noise hid the difference: count the whole long step as computation (a slower, safe estimate)
            rate = total_long / long["seconds"]
        attention_rate = rate
        fixed = max(0.0, short["seconds"] - total_short / rate)

    def compute(p):
        return p["flops"] / rate + p["attention"] / attention_rate

    extra_passes = split["passes"] - short["passes"]
    pass_s = (split["seconds"] - short["seconds"] - (compute(split) - compute(short))) / max(1, extra_passes)
    pass_s = min(max(0.0, pass_s), fixed)
    step_s = max(0.0, fixed - short["passes"] * pass_s)
    return {"flops_per_s": rate, "attention_flops_per_s": attention_rate, "pass_s": pass_s, "step_s": step_s}


def throughput(entry: dict[str, Any], shape, config: RunConfig) -> Throughput:
    """A stored calibration as the Throughput of a run of `shape` (the fixed costs scale with its layers)."""
    layers = getattr(shape, "num_layers", CALIBRATION_DEMO_LAYERS) or CALIBRATION_DEMO_LAYERS
    scale = layers / CALIBRATION_DEMO_LAYERS
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.get("measured_at", 0)))
    source = (
        f"measured on this CPU ({entry.get('cpu', '?')}, {entry.get('threads', '?')} torch thread(s), "
        f"{when}): {entry['flops_per_s'] / 1e9:.2f} GFLOP/s sustained (attention "
        f"{(entry.get('attention_flops_per_s') or entry['flops_per_s']) / 1e9:.2f}), {entry['pass_s'] * 1e3:.1f} ms per pass, "
        f"{entry['step_s'] * 1e3:.1f} ms per step ({entry.get('kind', '')})"
    )
    reasons: tuple[str, ...] = ()
    if abs(scale - 1) > 1e-9:
        reasons = (
            f"the CPU was calibrated on the demo model ({CALIBRATION_DEMO_LAYERS} layers); the fixed costs are "
            f"scaled to {layers} layers and its FLOP/s (small matrices) is likely below this model's: "
            "unmeasured for this model",
        )
    load = entry.get("load_average")
    if isinstance(load, (int, float)) and load >= (entry.get("cores") or 1) / 2:
        reasons += (f"the CPU was shared when measured (load average {load:.1f}): times vary with other work",)
    c = float(entry.get("correction", 1.0))  # refined by finished runs (refine); 1 until then
    if entry.get("ratios"):
        source += f"; refined by {len(entry['ratios'])} finished run(s) of this kind: x{c:.2f}"
    return Throughput(
        device="cpu",
        flops_per_s=float(entry["flops_per_s"]) / c,
        attention_flops_per_s=float(entry.get("attention_flops_per_s") or entry["flops_per_s"]) / c,
        pass_s=float(entry["pass_s"]) * scale * c,
        step_s=float(entry["step_s"]) * scale * c,
        eval_pass_s=float(entry.get("eval_pass_s", 0.0)) * scale * c,
        save_s=float(entry.get("save_s", 0.0)) * c,
        measured=True,
        source=source,
        reasons=reasons,
    )


def load_average() -> float:
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return 0.0

"""How long a benchmark takes on this machine: measured, never guessed.

Every benchmark run records how many lm-eval requests of each kind it answered and how long they took,
per model, quantization and device, in `<workspace>/benchmarks/speed.json`. `estimate_minutes(task,
...)` turns a curated task's size (benchmark_tasks.CURATED) into minutes at the speed measured for
that model here, counting both sides (base and fine-tuned); with no measurement yet it says so.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from finetune.evaluation.benchmark_tasks import BUILTIN_TASK, CURATED, CuratedTask
from finetune.evaluation.common import as_run, write_json

_lock = threading.Lock()


def _device() -> str:
    try:
        import torch

        return f"cuda:{torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001 - no torch or a broken driver: the machine is not told apart
        return "unknown"


def speed_key(config: Any, device: str | None = None) -> str:
    return f"{config.model_name_or_path} | {config.quantization} | {device or _device()}"


def speed_path(workspace: Path) -> Path:
    return workspace / "benchmarks" / "speed.json"


def _workspace_of(run: Any) -> Path | None:
    path = as_run(run).path
    return path.parent.parent if path.parent.name == "runs" else None


def load_speeds(workspace: Path) -> dict[str, dict]:
    try:
        data = json.loads(speed_path(workspace).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_speed(run: Any, speed: dict[str, list]) -> None:
    """Add one benchmark's (requests, seconds) per request kind to the workspace's speed record."""
    workspace = _workspace_of(run)
    if workspace is None or not speed:
        return
    key = speed_key(as_run(run).config())
    with _lock:
        data = load_speeds(workspace)
        entry = data.setdefault(key, {})
        for kind, (requests, seconds) in speed.items():
            if requests and seconds > 0:
                entry[kind] = {"per_s": round(requests / seconds, 3), "requests": int(requests), "time": time.time()}
        speed_path(workspace).parent.mkdir(parents=True, exist_ok=True)
        write_json(speed_path(workspace), data)


def estimate_minutes(task: CuratedTask, per_s: dict[str, float]) -> float | None:
    """Minutes for base + fine-tuned at the measured requests/s (None when unmeasured or unsized)."""
    kind = "loglikelihood" if task.kind == "multiple_choice" else "generate_until"
    rate = per_s.get(kind)
    if not rate or not task.requests:
        return None
    return 2 * task.requests / rate / 60


def curated_rows(workspace: Path, config: Any | None) -> list[dict[str, Any]]:
    """The curated list with each task's size and, when this machine has measured the model's speed,
    the time it takes (both sides)."""
    measured = load_speeds(workspace).get(speed_key(config), {}) if config is not None else {}
    per_s = {kind: v.get("per_s") for kind, v in measured.items() if isinstance(v, dict)}
    rows = []
    for task in CURATED:
        minutes = estimate_minutes(task, per_s)
        if task.max_tokens:
            size = f"{task.docs:,} questions, up to {task.max_tokens} generated tokens each"
        else:
            size = f"{task.docs:,} questions" + (f", about {task.requests:,} requests" if task.requests else "")
        if minutes is not None:
            when = f"about {minutes:.0f} min here" if minutes >= 1 else "under a minute here"
        elif task.kind == "generate_until" and per_s:
            when = "not measured here for generation yet"
        elif not task.requests:
            when = "not estimated (the number of choices varies)"
        else:
            when = "not measured on this machine yet: run the built-in set once"
        where = "shipped, offline" if task.name == BUILTIN_TASK else f"Hub: {task.dataset}"
        rows.append({"task": task.name, "what": f"{task.label}: {task.what} ({where})", "size": size, "time": when})
    return rows

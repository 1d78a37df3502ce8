"""Predicted against measured time on this CPU: a handful of demo runs, each trained for real after its
prediction (the one it records in prediction.json), with the error per configuration.

Configurations: the demo default (the cpu preset on the bundled sample), a larger max_length with long
rows (generated chat rows of 20-500 tokens, max_length 512), gradient accumulation (2 x 4), gradient
checkpointing on, and a preference run (DPO on the bundled pairs). The CPU is calibrated once per kind
of run (cached in the workspace) before its first prediction, as the app does.

The prediction is the CPU time a run needs: on one torch thread (the plan's choice on a shared machine) it
is compared with the training phase's process CPU time and with its wall-clock time; on a machine shared
with other work only the first can be expected to match. Target: within 25% per configuration (printed,
never asserted).

Usage: python bench/predict_time.py [--save bench/results/predict_time_cpu] [--only NAME ...] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TARGET = 0.25


def configurations(workspace: Path) -> dict[str, dict]:
    """name -> (RunConfig overrides on the cpu preset, what it checks)."""
    from finetune.bench.data import make_rows, write_rows
    from finetune.config import RunConfig
    from finetune.models import load_tokenizer

    tokenizer = load_tokenizer(RunConfig(), workspace)
    long_rows = write_rows(
        make_rows(tokenizer, n_rows=160, min_tokens=20, max_tokens=500, seed=0), workspace / "long.jsonl"
    )
    return {
        "demo default": {"changes": {}, "about": "cpu preset, bundled sample, 12 epochs"},
        "max_length 512, long rows": {
            "changes": {
                "dataset_path": str(long_rows),
                "max_length": 512,
                "max_steps": 40,
                "per_device_train_batch_size": 4,
            },
            "about": "generated rows of 20-500 tokens (finetune/bench/data.py)",
        },
        "accumulation 2 x 4": {
            "changes": {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 4, "max_steps": 60},
            "about": "four passes per optimizer step",
        },
        "gradient checkpointing": {
            "changes": {"gradient_checkpointing": True, "max_steps": 80},
            "about": "a recompute forward per pass",
        },
        "DPO (preference)": {
            "changes": {"objective": "dpo", "learning_rate": 5e-4, "max_steps": 60},
            "about": "bundled preference pairs, reference = adapter disabled",
        },
    }


def run_one(workspace: Path, changes: dict) -> dict:
    from finetune.config import RunConfig
    from finetune.presets import apply_preset
    from finetune.studio import Studio
    from finetune.train.start import start_training
    from finetune.train.timing import read_record

    config = apply_preset(RunConfig(), "cpu").replace(**changes)
    studio = Studio.open(workspace, restrict_paths=False)
    before = studio.timing.predict(config)  # calibrates this kind of run once, as the Model tab would
    load_before = os.getloadavg()[0]
    job = start_training(config, workspace=workspace)
    state = job.wait(3600)
    record = read_record(job.run.path)
    predicted, actual = record.get("predicted") or {}, record.get("actual") or {}
    seconds, cpu, wall = predicted.get("predicted_seconds"), actual.get("cpu_seconds"), actual.get("seconds")
    return {
        "state": state,
        "run": job.run.name,
        "predicted_s": seconds,
        "predicted_before_start_s": before.estimate.seconds if before.estimate else None,
        "cpu_s": cpu,
        "wall_s": wall,
        "error_cpu": cpu / seconds - 1 if seconds and cpu else None,
        "error_wall": wall / seconds - 1 if seconds and wall else None,
        "steps": (predicted.get("predicted_steps"), actual.get("steps")),
        "tokens": (predicted.get("predicted_tokens"), actual.get("tokens")),
        "tokens_per_s": (predicted.get("predicted_tokens_per_s"), actual.get("tokens_per_s")),
        "load_average": (round(load_before, 2), round(os.getloadavg()[0], 2)),
        "throughput": (predicted.get("throughput") or {}).get("source"),
    }


def machine() -> dict:
    import torch
    import transformers
    import trl

    from finetune.plan.calibration import cpu_model

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "threads_default": torch.get_num_threads(),
    }


def pct(value) -> str:
    return f"{value:+.0%}" if isinstance(value, (int, float)) else "-"


def report(rows: dict, info: dict, took: float) -> str:
    lines = [
        "# Predicted against measured time, CPU (demo model)",
        "",
        "Command: `python bench/predict_time.py --save bench/results/predict_time_cpu`",
        "",
        f"- machine: {info['cpu']}, {info['cores']} cores; python {info['python']}, torch {info['torch']}, "
        f"transformers {info['transformers']}, trl {info['trl']}",
        "- **the machine was shared with other agents' work while this ran** (load averages per row): the prediction "
        "is the CPU time a run needs (the calibration is fitted on CPU time with one torch thread), so it is "
        "compared with the training phase's process CPU time; its wall-clock time is shown too and depends on the "
        "other work",
        f"- target: within {TARGET:.0%} per configuration; total {took / 60:.1f} min",
        "",
        "| configuration | steps (pred / run) | tokens (pred / run) | predicted | CPU time | error | wall time | "
        "wall error | load avg before / after |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, runs in rows.items():
        for r in runs:
            lines.append(
                f"| {name} | {r['steps'][0]} / {r['steps'][1]} | {r['tokens'][0]} / {r['tokens'][1]} | "
                f"{r['predicted_s']:.1f} s | {r['cpu_s']:.1f} s | {pct(r['error_cpu'])} | {r['wall_s']:.1f} s | "
                f"{pct(r['error_wall'])} | {r['load_average'][0]} / {r['load_average'][1]} |"
            )
    errors = [abs(r["error_cpu"]) for runs in rows.values() for r in runs if r["error_cpu"] is not None]
    within = sum(1 for e in errors if e <= TARGET)
    lines += ["", f"**{within} of {len(errors)} within {TARGET:.0%} of the CPU time** (median |error| "
              f"{statistics.median(errors):.0%})" if errors else "no result"]  # fmt: skip
    lines += ["", "Throughput each prediction used (the calibration of its kind of run):", ""]
    lines += sorted({f"- {r['throughput']}" for runs in rows.values() for r in runs if r["throughput"]})
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--save", help="write PREFIX.md and PREFIX.json")
    parser.add_argument("--only", nargs="*", help="run only these configurations (names as printed)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workspace", help="default: a temporary one (its calibration is measured afresh)")
    args = parser.parse_args(argv)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="predict-time-") as scratch:
        workspace = Path(args.workspace or scratch)
        configs = configurations(workspace)
        rows: dict[str, list] = {}
        for name, spec in configs.items():
            if args.only and name not in args.only:
                continue
            for _ in range(args.repeats):
                result = run_one(workspace, spec["changes"])
                rows.setdefault(name, []).append(result)
                print(
                    f"{name}: predicted {result['predicted_s']:.1f} s, CPU {result['cpu_s']:.1f} s "
                    f"({pct(result['error_cpu'])}), wall {result['wall_s']:.1f} s ({pct(result['error_wall'])}), "
                    f"load {result['load_average']}",
                    flush=True,
                )
        info = machine()
        text = report(rows, info, time.time() - started)
    print(text)
    if args.save:
        prefix = Path(args.save)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        prefix.with_suffix(".md").write_text(text, encoding="utf-8")
        data = {"machine": info, "configurations": {n: c for n, c in configs.items() if n in rows}, "rows": rows}
        prefix.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

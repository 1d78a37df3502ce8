"""Soak: many short `demo` runs back to back in ONE process, the way a long-lived app serves them,
with memory measured after each. A leak (a model, a trainer, a comparer, a thread or a file handle
kept alive per run) shows up as resident memory (or threads / open files) that keeps growing.

Each run, through the engine the app uses: start_training on the CPU preset (QLoRA on the demo model
and the bundled sample data) -> every 4th run is stopped mid-training -> compare base vs adapter on
a prompt (finetune.evaluation.compare, then release_comparer as the app does before training) -> export the
adapter zip, and every 5th run also a merged 16-bit model. Then gc, and the measurements:
RSS (psutil), CUDA allocated/reserved on a GPU, threads, open file descriptors.

Verdict: runs 1-2 are warm-up (lazy imports, allocator arenas, tokenizer caches). The mean RSS of
runs 11-20 must be within GROWTH_LIMIT (5%) of the mean of runs 3-10, and the least-squares slope
over runs 3-20 under SLOPE_LIMIT_MB (4 MB per run); threads and fds must not grow (+2 tolerated).

Usage: python bench/soak.py [--runs 20] [--steps 10] [--workspace DIR] [--out bench/results]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WARMUP = 2
GROWTH_LIMIT = 0.05
SLOPE_LIMIT_MB = 4.0
COUNT_SLACK = 2
PROMPT = "What is the capital of France?"


def measure() -> dict:
    import psutil
    import torch

    gc.collect()
    proc = psutil.Process()
    out = {
        "rss_mb": proc.memory_info().rss / 2**20,
        "threads": threading.active_count(),
        "fds": proc.num_fds() if hasattr(proc, "num_fds") else None,
    }
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        out["cuda_allocated_mb"] = torch.cuda.memory_allocated() / 2**20
        out["cuda_reserved_mb"] = torch.cuda.memory_reserved() / 2**20
    return out


def one_run(index: int, workspace: Path, base, steps: int) -> dict:
    from finetune.evaluation.compare import GenerationSettings, get_comparer, release_comparer
    from finetune.export.merge import merge_adapter, zip_adapter
    from finetune.train.start import start_training

    stop = index % 4 == 3
    merge = index % 5 == 4
    cfg = base.replace(run_name=f"soak-{index + 1:02d}", max_steps=steps * (4 if stop else 1))
    started = time.perf_counter()
    job = start_training(cfg, workspace=workspace)
    if stop:
        while job.is_alive() and job.progress()["step"] < steps // 2:
            time.sleep(0.05)
        job.stop()
    state = job.wait(600)
    trained = time.perf_counter()
    if state not in ("done", "stopped") or not job.run.has_adapter():
        raise SystemExit(f"run {index + 1} ended {state}: {job.message}")
    result = get_comparer(job.run).compare(PROMPT, GenerationSettings(max_new_tokens=16))
    release_comparer()
    zipped = zip_adapter(job.run)
    if merge:
        merge_adapter(job.run)
    finished = time.perf_counter()
    step = job.run.status().get("step")
    del job
    return {
        "run": index + 1,
        "state": state,
        "steps": step,
        "stopped": stop,
        "merged": merge,
        "answers_differ": result.base != result.finetuned,
        "zip_kb": round(zipped.stat().st_size / 1024, 1),
        "train_s": round(trained - started, 2),
        "total_s": round(finished - started, 2),
        **{k: (round(v, 1) if isinstance(v, float) else v) for k, v in measure().items()},
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _slope(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    mx, my = _mean(xs), _mean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def verdict(records: list[dict], baseline: dict) -> dict:
    n = len(records)
    half = max(n // 2, WARMUP + 1)
    first = [r for r in records if WARMUP < r["run"] <= half]
    second = [r for r in records if r["run"] > half]
    steady = [r for r in records if r["run"] > WARMUP]
    m1, m2 = _mean([r["rss_mb"] for r in first]), _mean([r["rss_mb"] for r in second])
    growth = (m2 - m1) / m1 if m1 == m1 and m1 else float("nan")
    slope = _slope([r["run"] for r in steady], [r["rss_mb"] for r in steady])
    threads = [r["threads"] for r in steady]
    fds = [r["fds"] for r in steady if r["fds"] is not None]
    checks = {
        "rss_growth": growth <= GROWTH_LIMIT,
        "rss_slope": slope <= SLOPE_LIMIT_MB,
        "threads": not threads or threads[-1] <= threads[0] + COUNT_SLACK,
        "fds": not fds or fds[-1] <= fds[0] + COUNT_SLACK,
    }
    out = {
        "runs": n,
        "warmup_runs": WARMUP,
        "first_half": f"runs {WARMUP + 1}-{half}",
        "second_half": f"runs {half + 1}-{n}",
        "rss_mean_first_mb": round(m1, 1),
        "rss_mean_second_mb": round(m2, 1),
        "rss_growth": round(growth, 4),
        "rss_slope_mb_per_run": round(slope, 2),
        "rss_before_first_run_mb": round(baseline["rss_mb"], 1),
        "threads_first_last": [threads[0], threads[-1]] if threads else None,
        "fds_first_last": [fds[0], fds[-1]] if fds else None,
        "limits": {"rss_growth": GROWTH_LIMIT, "rss_slope_mb_per_run": SLOPE_LIMIT_MB, "count_slack": COUNT_SLACK},
        "checks": checks,
        "pass": all(checks.values()),
    }
    if any("cuda_allocated_mb" in r for r in records):
        cuda = [r.get("cuda_allocated_mb", 0.0) for r in steady]
        out["cuda_allocated_first_last_mb"] = [cuda[0], cuda[-1]]
        out["checks"]["cuda"] = cuda[-1] <= cuda[0] + 64
        out["pass"] = all(out["checks"].values())
    return out


COLUMNS = ["run", "state", "steps", "merged", "train_s", "total_s", "rss_mb", "threads", "fds"]


def table(records: list[dict]) -> str:
    cols = COLUMNS + (
        ["cuda_allocated_mb", "cuda_reserved_mb"] if any("cuda_allocated_mb" in r for r in records) else []
    )
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in records:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)


def report_md(records: list[dict], summary: dict, env: dict) -> str:
    ok = "PASS" if summary["pass"] else "FAIL"
    lines = [
        f"# Soak: {summary['runs']} demo runs in one process ({env['device']})",
        "",
        f"Generated by `python bench/soak.py` on {env['date']} ({env['platform']}, {env['cpus']} CPUs, "
        f"torch {env['torch']}, transformers {env['transformers']}, trl {env['trl']}, peft {env['peft']}).",
        "",
        "Each run: start (CPU preset, QLoRA, demo model, sample data) -> every 4th run stopped mid-training -> "
        "compare base vs adapter -> adapter zip (every 5th run also a merged model); then gc and the measurements.",
        "",
        table(records),
        "",
        f"## Verdict: {ok}",
        "",
        f"- RSS before the first run: {summary['rss_before_first_run_mb']} MB (imports done).",
        f"- Mean RSS {summary['first_half']}: {summary['rss_mean_first_mb']} MB; {summary['second_half']}: "
        f"{summary['rss_mean_second_mb']} MB; growth {summary['rss_growth']:+.1%} (limit {GROWTH_LIMIT:+.0%}). "
        f"Runs 1-{WARMUP} are warm-up.",
        f"- Least-squares slope of RSS over runs {WARMUP + 1}-{summary['runs']}: "
        f"{summary['rss_slope_mb_per_run']:+.2f} MB per run (limit {SLOPE_LIMIT_MB:g}).",
        f"- Threads (first, last steady run): {summary['threads_first_last']}; open fds: {summary['fds_first_last']} "
        f"(growth of more than {COUNT_SLACK} fails).",
    ]
    if "cuda_allocated_first_last_mb" in summary:
        lines.append(f"- CUDA allocated (first, last steady run): {summary['cuda_allocated_first_last_mb']} MB.")
    lines += ["", "Checks: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in summary["checks"].items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run (a stopped run is cut at half)")
    parser.add_argument("--workspace", help="workspace for the runs (default: a temporary folder, removed after)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="folder for soak_<device>.md/.json")
    args = parser.parse_args(argv)

    import torch
    import transformers

    from finetune.config import RunConfig
    from finetune.presets import apply_preset

    device = "cuda" if torch.cuda.is_available() else "cpu"
    base = apply_preset(RunConfig(), "cpu").replace(
        eval_steps=max(args.steps // 2, 1), save_steps=max(args.steps // 2, 1), logging_steps=1, save_total_limit=2
    )
    tmp = None
    if args.workspace:
        workspace = Path(args.workspace)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="finetune-soak-")
        workspace = Path(tmp.name)
    baseline = measure()
    records = []
    print(f"soak: {args.runs} runs of {args.steps} steps on {device}, workspace {workspace}", flush=True)
    print(" | ".join(COLUMNS), flush=True)
    started = time.time()
    try:
        for index in range(args.runs):
            record = one_run(index, workspace, base, args.steps)
            records.append(record)
            print(" | ".join(str(record.get(c, "")) for c in COLUMNS), flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    summary = verdict(records, baseline)
    summary["wall_s"] = round(time.time() - started, 1)
    import peft
    import trl

    env = {
        "device": device,
        "date": time.strftime("%Y-%m-%d"),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "peft": peft.__version__,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"soak_{device}.json").write_text(
        json.dumps({"env": env, "settings": vars(args) | {"base": base.to_dict()}, "summary": summary, "runs": records},
                   indent=1, default=str),
        encoding="utf-8",
    )  # fmt: skip
    (out / f"soak_{device}.md").write_text(report_md(records, summary, env), encoding="utf-8")
    print()
    print(report_md(records, summary, env).split("## ", 1)[1])
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())

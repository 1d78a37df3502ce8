"""How much an open browser slows training: the same demo run trained in-process with and without
a poller, interleaved (plain, polled, polled, plain, ...), medians reported. Goal: < 3% slower.

Pollers (`--mode`):
- engine: a thread calls `Run.metrics(since=n)` and `TrainingJob.progress()` every second, the
  engine calls the Train tab makes;
- ui: a thread calls the Train tab's own gr.Timer handler every second (found in the built app's
  Blocks by its `tick` trigger), as one open page does, including the plotly figures it rebuilds,
  and serializes the figures to JSON as Gradio does before sending them. The HTTP/websocket hop
  of a real browser is not included.

Throughput of a run: real tokens / training time from the Trainer's own log (`num_tokens`,
`train_runtime`), so setup (model loading, tokenization) is not counted.

Usage: python bench/poll_overhead.py [--mode engine|ui|both] [--pairs 3] [--max-steps 300]
       [--threads N] [--interval 1.0] [--save bench/results/poll_overhead]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class EnginePoller:
    """What the Train tab asks the engine every second."""

    def __init__(self, job):
        self.job = job
        self.seen = 0

    def __call__(self) -> None:
        fresh = self.job.run.metrics(since=self.seen)
        self.seen += len(fresh)
        self.job.progress()


class UiPoller:
    """The Train tab's own timer handler, called as one open page would call it."""

    def __init__(self, blocks, job):
        self.fn = _timer_handler(blocks)
        self.name = job.run.name
        self.drawn = 0
        self.sig = ""
        self.plotted_at = 0.0

    def __call__(self) -> None:
        from ui.train_tab import TICK_KEYS

        out = dict(zip(TICK_KEYS, self.fn(self.name, self.drawn, self.sig, self.plotted_at)))
        for value in out.values():
            if hasattr(value, "to_json"):  # plotly figure: Gradio sends it as JSON
                value.to_json()
            elif hasattr(value, "value") and hasattr(getattr(value, "value", None), "to_json"):
                value.value.to_json()
        if isinstance(out["drawn"], int):
            self.drawn = out["drawn"]
        if isinstance(out["sig"], str):
            self.sig = out["sig"]
        if isinstance(out["plotted_at"], float):
            self.plotted_at = out["plotted_at"]


def _timer_handler(blocks):
    """The function the Train tab's gr.Timer ticks (whatever it is called)."""
    for block_fn in blocks.fns.values():
        fn = getattr(block_fn, "fn", None)
        targets = [t[1] if isinstance(t, tuple) else t for t in getattr(block_fn, "targets", [])]
        if fn is not None and getattr(fn, "__module__", "") == "ui.train_tab" and "tick" in targets:
            return fn
    raise RuntimeError("no gr.Timer handler found in ui.train_tab")


def _poll_loop(poller, job, interval: float, stop: threading.Event, calls: list) -> None:
    while not stop.is_set() and job.is_alive():
        started = time.perf_counter()
        try:
            poller()
            calls.append(time.perf_counter() - started)
        except Exception as exc:  # a broken poller must not hide the measurement
            calls.append(float("nan"))
            print(f"poller error: {type(exc).__name__}: {exc}", file=sys.stderr)
        stop.wait(max(0.0, interval - (time.perf_counter() - started)))


def train_once(config, workspace: Path, mode: str | None, interval: float, blocks=None) -> dict:
    from finetune.train.start import start_training

    job = start_training(config, workspace=workspace)
    calls: list[float] = []
    stop = threading.Event()
    thread = None
    if mode:
        # wait until the run is set up, so every poll lands while it trains
        while job.is_alive() and job.state not in ("training",):
            time.sleep(0.05)
        poller = EnginePoller(job) if mode == "engine" else UiPoller(blocks, job)
        thread = threading.Thread(target=_poll_loop, args=(poller, job, interval, stop, calls), daemon=True)
        thread.start()
    state = job.wait()
    stop.set()
    if thread is not None:
        thread.join()
    if state != "done":
        raise RuntimeError(f"training ended {state}: {job.message}")
    records = job.run.metrics()
    runtime = next(m["train_runtime"] for m in reversed(records) if "train_runtime" in m)
    tokens = max(m.get("num_tokens", 0) for m in records)
    return {
        "mode": mode or "plain",
        "train_runtime_s": runtime,
        "tokens_per_s": tokens / runtime,
        "polls": len(calls),
        "poll_ms_median": 1000 * statistics.median(calls) if calls else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["engine", "ui", "both"], default="both")
    parser.add_argument("--pairs", type=int, default=3, help="plain/polled pairs per mode (default 3)")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: as `finetune bench`)")
    parser.add_argument("--save", help="write PREFIX.json and PREFIX.md")
    args = parser.parse_args(argv)

    import datasets
    import torch
    from transformers.utils import logging as hf_logging

    from finetune.bench.runner import machine_info, pick_threads, versions
    from finetune.config import RunConfig
    from finetune.runs import cache_dir

    datasets.disable_progress_bars()
    hf_logging.set_verbosity_error()
    threads, why = pick_threads(args.threads)
    torch.set_num_threads(threads)
    workspace = Path(tempfile.mkdtemp(prefix="finetune-poll-"))
    (workspace / "cache").symlink_to(cache_dir(), target_is_directory=True)
    config = RunConfig(
        model_name_or_path="demo",
        max_steps=args.max_steps,
        logging_steps=1,
        eval_steps=0,
        save_steps=10**9,
        max_length=256,
    )
    modes = ["engine", "ui"] if args.mode == "both" else [args.mode]
    blocks = None
    if "ui" in modes:
        from ui import build_app

        blocks = build_app(workspace)
    # each mode is compared with the plain runs interleaved with it (the machine's load drifts)
    results: dict[str, dict[str, list[dict]]] = {}
    try:
        train_once(config, workspace, None, args.interval)  # warm-up: caches, lazy imports
        for mode in modes:
            results[mode] = {"plain": [], "polled": []}
            for pair in range(args.pairs):
                order = [None, mode] if pair % 2 == 0 else [mode, None]
                for m in order:
                    r = train_once(config, workspace, m, args.interval, blocks)
                    results[mode]["polled" if m else "plain"].append(r)
                    print(
                        f"{r['mode']:7s} {r['tokens_per_s']:8.0f} tokens/s  {r['train_runtime_s']:6.1f} s  "
                        f"{r['polls']} polls",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        shutil.rmtree(workspace, ignore_errors=True)

    summary = {}
    for mode in modes:
        plain_runs, polled_runs = results[mode]["plain"], results[mode]["polled"]
        plain = statistics.median(r["tokens_per_s"] for r in plain_runs)
        polled = statistics.median(r["tokens_per_s"] for r in polled_runs)
        summary[mode] = {
            "plain_tokens_per_s": plain,
            "polled_tokens_per_s": polled,
            "slowdown": 1 - polled / plain,
            "slowdown_per_pair": [1 - q["tokens_per_s"] / p["tokens_per_s"] for p, q in zip(plain_runs, polled_runs)],
            "poll_ms_median": statistics.median(r["poll_ms_median"] for r in polled_runs if r["poll_ms_median"]),
            "polls_per_run": statistics.median(r["polls"] for r in polled_runs),
            "runs": {"plain": plain_runs, "polled": polled_runs},
        }
    out = {
        "command": "python bench/poll_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {"max_steps": args.max_steps, "interval_s": args.interval, "pairs": args.pairs, "model": "demo"},
        "threads": threads,
        "threads_reason": why,
        "machine": machine_info("cpu" if not torch.cuda.is_available() else "cuda"),
        "versions": versions(),
        "platform": platform.platform(),
        "result": summary,
    }
    text = _markdown(out)
    print(text)
    if args.save:
        prefix = Path(args.save)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        prefix.with_suffix(".json").write_text(json.dumps(out, indent=1, default=str) + "\n", encoding="utf-8")
        prefix.with_suffix(".md").write_text(text, encoding="utf-8")
    return 0


def _markdown(out: dict) -> str:
    res = out["result"]
    lines = [
        "# Poll overhead: training with the Train tab open",
        "",
        "```",
        out["command"],
        "```",
        "",
        f"- machine: {out['machine']['summary']}; torch threads {out['threads']} ({out['threads_reason']})",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in out["versions"].items()),
        f"- run: demo model, bundled sample chat, {out['settings']['max_steps']} steps, logging every step; "
        f"poll every {out['settings']['interval_s']} s; {out['settings']['pairs']} interleaved pairs per mode",
        "",
        "| poller | plain tokens/s | polled tokens/s | slowdown (medians) | per pair | one poll (median) |",
        "|---|---|---|---|---|---|",
    ]
    for mode in ("engine", "ui"):
        if mode in res:
            r = res[mode]
            pairs = ", ".join(f"{100 * p:+.1f}%" for p in r["slowdown_per_pair"])
            lines.append(
                f"| {mode} | {r['plain_tokens_per_s']:,.0f} | {r['polled_tokens_per_s']:,.0f} | "
                f"{100 * r['slowdown']:+.1f}% | {pairs} | {r['poll_ms_median']:.1f} ms |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

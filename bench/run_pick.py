"""Time a run listing and a run pick in a workspace of many finished runs (issue 21, item 5).

Builds a workspace of N finished runs with M metric lines each (one run written through the engine's own
writers: create_run, append_metrics, write_status, a saved adapter and checkpoint; then copied), and
times in one process:

- a listing (`Studio.runs()`): cold (the first in a process: every run's status.json, config.yaml and
  adapter header read), warm (after that: only the files' identities are looked at, 5 per run) and
  again (asked again within a second while no run was added, renamed or removed: the same listing);
- a pick: the engine calls the app makes today when a run is selected (Train's "Run shown", a history
  row, Test's or Export's list): the three run lists (`run_names`, twice with adapters only), the Train
  tab's next poll (`Studio.run`, `Studio.progress`, the metrics log from 0, its count, the log tail, the
  history listing and the overlay list), the Test tab's latest evaluation, latest prompt grid and A/B
  tally, and the Export tab's model card. Each pick selects another run (its metrics read for the first
  time) and pays for one full warm listing, so it is the cold cost of a pick.

    python bench/run_pick.py --runs 500 --lines 2000 --save bench/results/run_pick
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
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _fake_adapter(folder: Path) -> None:
    """A small but well-formed PEFT adapter folder (a real safetensors file, a readable config)."""
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {"base_model.model.q_proj.lora_A.weight": np.zeros((8, 64), dtype=np.float32)},
        str(folder / "adapter_model.safetensors"),
    )
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16, "peft_type": "LORA"}))


def build(workspace: Path, runs: int, lines: int) -> float:
    """The workspace of `runs` finished runs of `lines` metric lines; returns the seconds it took."""
    from finetune.config import RunConfig
    from finetune.runs import create_run

    start = time.perf_counter()
    first = create_run(RunConfig(run_name="run-0000", dataset_path="support.jsonl"), workspace)
    records = []
    for step in range(1, lines + 1):
        record = {"step": step, "epoch": step / lines * 3, "time": step * 0.5, "loss": 2.0 / step**0.3}
        record.update(learning_rate=2e-4, grad_norm=1.1, mean_token_accuracy=0.5, num_tokens=step * 4096.0)
        if step % 100 == 0:
            record["eval_loss"] = 2.2 / step**0.3
        records.append(record)
    first.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in records[:-1]))
    first.reload_metrics()
    first.append_metrics(records[-1])  # the writer's own append: its buffer now is the file
    _fake_adapter(first.adapter_dir)
    checkpoint = first.checkpoints_dir / f"checkpoint-{lines}"
    _fake_adapter(checkpoint)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": lines}))
    first.data_summary_path.write_text(json.dumps({"format": "messages", "rows": 5000, "train_rows": 4500}))
    first.log(f"Finished {lines} steps")
    first.write_status("done", f"Finished {lines} steps; the adapter is saved.", step=lines, total_steps=lines)
    for i in range(1, runs):
        shutil.copytree(first.path, first.path.parent / f"run-{i:04d}", copy_function=shutil.copy2)
    return time.perf_counter() - start


def pick(studio, name: str) -> None:
    """The engine calls of one pick, as listed in the module docstring."""
    studio.run_names()
    studio.run_names(with_adapter=True)
    studio.run_names(with_adapter=True)
    run = studio.run(name)
    studio.progress(name)
    run.metrics(since=0)
    run.metrics_count()
    run.log_tail(40)
    studio.runs()
    studio.run_names()
    studio.judge.latest_evaluation(name)
    studio.judge.latest_grid(name)
    studio.judge.tally(name)
    studio.export.model_card(name)


def measure(workspace: Path, picks: int) -> dict:
    from finetune.studio import Studio

    try:
        from finetune.runs.workspace import forget_listing
    except ImportError:  # a commit before the run listing remembered anything (to time the "before")

        def forget_listing(workspace):
            return None

    studio = Studio(workspace, restrict_paths=True)
    t0 = time.perf_counter()
    listed = studio.runs()
    cold = time.perf_counter() - t0
    warm, memo = [], []
    for _ in range(5):
        forget_listing(workspace)  # a listing that checks every run again (summaries remembered)
        t0 = time.perf_counter()
        studio.runs()
        warm.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        studio.runs()  # asked again at once, as a pick does: the same listing
        memo.append(time.perf_counter() - t0)
    names = [r.name for r in listed]
    pick(studio, names[-1])  # the imports a first pick pulls in (evaluation, export) are not a pick's cost
    times = []
    for name in names[:picks]:
        forget_listing(workspace)  # each pick pays for one full listing of its own
        t0 = time.perf_counter()
        pick(studio, name)
        times.append(time.perf_counter() - t0)
    return {
        "runs": len(listed),
        "listing_cold_s": round(cold, 3),
        "listing_warm_median_s": round(statistics.median(warm), 4),
        "listing_again_median_s": round(statistics.median(memo), 5),
        "pick_median_s": round(statistics.median(times), 4),
        "pick_max_s": round(max(times), 4),
        "picks": len(times),
    }


def machine() -> dict:
    import psutil

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--picks", type=int, default=20)
    parser.add_argument("--workspace", help="build here (default: a temporary folder, removed after)")
    parser.add_argument("--save", help="write <prefix>.json and <prefix>.md")
    args = parser.parse_args(argv)
    root = Path(args.workspace) if args.workspace else Path(tempfile.mkdtemp(prefix="run-pick-"))
    try:
        built = build(root, args.runs, args.lines)
        result = {
            "machine": machine(),
            "built_s": round(built, 1),
            "lines_per_run": args.lines,
            **measure(root, args.picks),
        }
    finally:
        if not args.workspace:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=1))
    if args.save:
        Path(f"{args.save}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory (RSS) and time of `finetune validate` on a large JSON Lines file (issue 22, item 4).

Writes a file of small valid chat rows of about --mb megabytes (or uses --data), runs
`python -m finetune.cli validate FILE` in a child process, and reports the child's peak RSS
(getrusage of the children) and wall time, beside the same command on the bundled 110-row sample
(what the imports and the tokenizer alone take).

    python bench/validate_memory.py --mb 216 --save bench/results/validate_memory
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_rows(path: Path, megabytes: float) -> int:
    """Chat rows of ~120 bytes until the file holds `megabytes` MiB; returns how many."""
    rng = random.Random(0)
    rows = 0
    with open(path, "w", encoding="utf-8") as fh:
        while fh.tell() < megabytes * 2**20:
            a, b = rng.randint(1, 999), rng.randint(1, 999)
            messages = [
                {"role": "user", "content": f"What is {a} plus {b}?"},
                {"role": "assistant", "content": f"It is {a + b}."},
            ]
            fh.write(json.dumps({"messages": messages}) + "\n")
            rows += 1
    return rows


def validate(data: Path, workspace: Path) -> dict:
    """Peak RSS (MB) and seconds of one `finetune validate` child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "finetune.cli", "validate", str(data), "--workspace", str(workspace)],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if done.returncode != 0:
        raise SystemExit(f"validate failed ({done.returncode}): {done.stderr[-2000:]}")
    # ru_maxrss of the children is the largest of them so far: measure the big file after the sample
    return {"peak_rss_mb": round(peak_kb / 1024), "seconds": round(seconds, 1), "earlier_peak_kb": before,
            "output": done.stdout.strip().splitlines()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=216.0, help="size of the generated file (MiB)")
    parser.add_argument("--data", help="validate this file instead of a generated one")
    parser.add_argument("--save", help="write <prefix>.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="validate-memory-") as tmp:
        folder = Path(tmp)
        data = Path(args.data) if args.data else folder / "rows.jsonl"
        rows = None if args.data else write_rows(data, args.mb)
        baseline = validate(ROOT / "finetune" / "samples" / "sample_chat.jsonl", folder / "ws")
        large = validate(data, folder / "ws")
        result = {
            "machine": {
                "platform": platform.platform(),
                "python": platform.python_version(),
                "cpu_count": os.cpu_count(),
                "load_average_1m": round(os.getloadavg()[0], 2),
            },
            "file_mb": round(data.stat().st_size / 2**20, 1),
            "rows": rows,
            "sample_peak_rss_mb": baseline["peak_rss_mb"],
            "large_peak_rss_mb": large["peak_rss_mb"],
            "large_seconds": large["seconds"],
            "large_output": large["output"],
        }
    print(json.dumps(result, indent=1))
    if args.save:
        Path(f"{args.save}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

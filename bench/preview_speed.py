"""Time the Data tab's pipeline on one large single-row JSONL file: read + validate (load_records),
token statistics (token_length_stats), the example preview (render_example + its HTML), and the
peak / after memory of the process.

    python bench/preview_speed.py --sizes 0.5 1 2 10 --save bench/results/preview_speed
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def measure(size_mb: float, workspace: Path, shape: str) -> dict:
    from finetune.config import RunConfig
    from finetune.data import load_records, render_example, token_length_stats
    from finetune.models import load_tokenizer
    from ui.data_view import segments_html

    tokenizer = load_tokenizer(RunConfig(model_name_or_path="demo"), workspace)
    n = int(size_mb * 10**6)
    words = ("lorem ipsum dolor sit amet " * (n // 27 + 1))[:n]
    row = (
        {"text": words}
        if shape == "text"
        else {"messages": [{"role": "user", "content": "Summarize:"}, {"role": "assistant", "content": words}]}
    )
    path = workspace / f"big-{size_mb}mb.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    gc.collect()
    before = _rss_mb()
    out = {"size_mb": size_mb, "shape": shape, "file_bytes": path.stat().st_size, "rss_before_mb": round(before)}
    t0 = time.perf_counter()
    report = load_records(str(path))
    t1 = time.perf_counter()
    stats = token_length_stats(report.rows, tokenizer, 1024)
    t2 = time.perf_counter()
    rendered = render_example(report.rows[0], tokenizer)
    html = segments_html(rendered)
    t3 = time.perf_counter()
    import psutil

    peak = getattr(psutil.Process().memory_info(), "rss", 0) / 2**20
    out.update(
        validate_s=round(t1 - t0, 2),
        token_stats_s=round(t2 - t1, 2),
        preview_s=round(t3 - t2, 2),
        total_s=round(t3 - t0, 2),
        tokens=stats["max"],
        preview_chars=len(rendered["text"]),
        preview_html_chars=len(html),
        rss_end_mb=round(peak),
    )
    del report, stats, rendered, html
    gc.collect()
    out["rss_after_mb"] = round(_rss_mb())
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=float, nargs="+", default=[0.5, 1, 2, 10])
    p.add_argument("--shape", choices=["messages", "text"], default="messages")
    p.add_argument("--save", help="write <save>.json")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        for size in args.sizes:
            r = measure(size, ws, args.shape)
            print(json.dumps(r), flush=True)
            results.append(r)
    if args.save:
        meta = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
            "python": platform.python_version(),
        }
        Path(args.save + ".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`finetune evaluate` beyond the run's own rows: benchmarks, the forgetting check, the checkpoint curve and
votes as preference pairs. Each goes through the Studio's judging desk, as the app does; stdout holds only
the result (one JSON object with --json), progress goes to stderr when it is a terminal."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from finetune.evaluation.common import EvaluationError
from finetune.evaluation.compare import GenerationSettings
from finetune.studio import Studio


def _studio(args: argparse.Namespace):
    return Studio(args.workspace, restrict_paths=False)


def _progress():
    """A one-line progress display on stderr (only on a terminal)."""
    if not sys.stderr.isatty():
        return None

    def progress(fraction: float, message: str) -> None:
        print(f"\r{fraction:4.0%} {message}\033[K", end="" if fraction < 1 else "\n", file=sys.stderr, flush=True)

    return progress


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise EvaluationError(f"--limit must be at least 1, got {limit}")


def benchmark_json(bench: Any) -> dict[str, Any]:
    """For each task, the base and fine-tuned scores with their stderr, the difference and the verdict."""
    tasks: dict[str, dict] = {}
    for r in bench.rows:
        tasks.setdefault(r.task, {})[r.metric] = {
            "base": r.base,
            "base_stderr": r.base_stderr,
            "finetuned": r.finetuned,
            "finetuned_stderr": r.finetuned_stderr,
            "diff": r.diff,
            "diff_stderr": r.diff_stderr,
            "paired": r.paired,
            "higher_is_better": r.higher_is_better,
            "questions": r.n,
            "verdict": r.verdict,
        }
    return {
        "run": bench.run,
        "adapter": bench.adapter,
        "kind": bench.kind,
        "limit": bench.limit,
        "tasks": tasks,
        "worse": [f"{r.task} {r.metric}" for r in bench.worse],
        "seconds": bench.seconds,
        "stopped": bench.stopped,
        "folder": str(bench.folder) if bench.folder else None,
    }


def format_benchmark(bench: Any) -> str:
    def pm(v, se):
        return "-" if v is None else f"{v:.3f}" + (f" ±{1.96 * se:.3f}" if se is not None else "")

    lines = [f"run {bench.run} ({bench.adapter}), {bench.limit or 'all'} questions per task"]
    lines.append(f"{'task':24} {'metric':12} {'base':>15} {'fine-tuned':>15} {'difference':>15}  verdict")
    for r in bench.rows:
        lines.append(
            f"{r.task[:24]:24} {r.metric[:12]:12} {pm(r.base, r.base_stderr):>15} "
            f"{pm(r.finetuned, r.finetuned_stderr):>15} {pm(r.diff, r.diff_stderr):>15}  {r.verdict}"
        )
    lines.append("(± is the 95% interval; worse = the fine-tune is worse beyond noise)")
    if bench.folder:
        lines.append(f"saved in {bench.folder}")
    return "\n".join(lines)


def run_benchmark_cli(args: argparse.Namespace) -> int:
    _check_limit(args.limit)
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() != ".json":
        raise EvaluationError(f"--out for benchmarks must end in .json (got '{out.name}')")
    judge = _studio(args).judge
    if args.forgetting:
        check = judge.forgetting_check(args.run, limit=args.limit, progress=_progress())
        bench, line = check.benchmark, check.text()
    else:
        bench = judge.benchmark(args.run, args.benchmark, limit=args.limit, checkpoint=args.checkpoint,
                                chat_template=args.chat_template, progress=_progress())  # fmt: skip
        line = ""
    data = benchmark_json(bench)
    if args.forgetting:
        data["forgetting"] = {"verdict": check.verdict, "text": line, "task_metric": check.task_metric}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    print(
        json.dumps(data, indent=2, default=str)
        if args.json
        else (format_benchmark(bench) + (f"\n{line}" if line else ""))
    )
    return 0


def run_curve_cli(args: argparse.Namespace) -> int:
    _check_limit(args.limit)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    judge = _studio(args).judge
    progress = _progress()
    kind = "benchmark" if args.benchmark else "batch"
    limit = args.limit if args.limit is not None else (None if args.benchmark else 20)
    curve = judge.checkpoint_curve(
        args.run,
        kind=kind,
        data=args.data,
        limit=limit,
        settings=settings,
        tasks=args.benchmark or "",
        metric=args.metric,
        progress=(lambda f, m: progress(f, m)) if (progress and kind == "benchmark") else None,
    )
    best = curve.best()
    data = curve.to_dict()
    data["best"] = {"name": best.name, "step": best.step, "ref": best.ref} if best else None
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    lines = [f"{curve.kind} curve of {curve.run} ({curve.source}); best by {curve.metric}"]
    lines.append(f"{'point':16} {'step':>6} " + " ".join(f"{m[:14]:>14}" for m in curve.metrics))
    lines.append(f"{'base':16} {'-':>6} " + " ".join(f"{_num(curve.base.get(m)):>14}" for m in curve.metrics))
    for p in curve.points:
        mark = " *" if best is not None and p.name == best.name else ""
        lines.append(
            f"{p.name + mark:16} {p.step:>6} " + " ".join(f"{_num(p.scores.get(m)):>14}" for m in curve.metrics)
        )
    if best is not None:
        lines.append(f"best: {best.name}; continue from it with --from-run {best.ref}")
    print("\n".join(lines))
    return 0


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def run_votes_cli(args: argparse.Namespace) -> int:
    if not args.out:
        raise EvaluationError("--votes-to-preference needs --out: the .jsonl file to write the pairs to")
    names = [n.strip() for n in args.votes_to_preference.split(",") if n.strip()]
    studio = _studio(args)
    result = studio.judge.votes_to_preference(names, args.out)
    first = studio.run(names[0])
    model = first.config().model_name_or_path
    command = f"finetune train --model {model} --from-run {first.path} --set objective=dpo --data {result.path}"
    if args.json:
        data = {k: v for k, v in result.__dict__.items() if k != "path"}
        print(json.dumps({**data, "path": str(result.path), "train_command": command}, indent=2, default=str))
    else:
        print(f"{result.text()}\nwritten to {result.path}\ntrain DPO on them: {command}")
    return 0

"""`finetune evaluate`: batch evaluation, benchmarks, checkpoint curves and votes from the command line.

    finetune evaluate --run DIR [--data FILE] [--limit N] --out rows.jsonl|rows.csv [--json]
    finetune evaluate --run DIR --benchmark TASKS [--limit N] [--checkpoint C] [--out results.json] [--json]
    finetune evaluate --run DIR --forgetting [--json]                 # the built-in general set
    finetune evaluate --run DIR --all-checkpoints [--benchmark TASKS] [--json]   # the checkpoint curve
    finetune evaluate --votes-to-preference RUN[,RUN...] --out pairs.jsonl       # votes -> DPO data

Batch evaluation writes the scored rows to --out (format by extension), saves the usual copy under
`<run>/evaluations/<timestamp>/`, and prints the summary (one JSON object with --json). Benchmarks
(TASKS: comma-separated lm-eval task names, task YAML files or folders) are saved under
`<run>/benchmarks/<timestamp>/`; --out optionally copies the results there.
Errors are one paragraph on stderr and exit status 1 (also when called without cli.main).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from finetune.cli.evaluate_more import run_benchmark_cli, run_curve_cli, run_votes_cli
from finetune.errors import FinetuneError
from finetune.evaluation.charts import summary_metrics
from finetune.evaluation.common import EvaluationError
from finetune.evaluation.compare import GenerationSettings
from finetune.evaluation.preference import evaluate_with_preferences
from finetune.jsontext import dumps
from finetune.runs import open_run

OUT_SUFFIXES = (".jsonl", ".csv")


def register_cli(subparsers) -> argparse.ArgumentParser:
    """Add the `evaluate` subcommand to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score base and fine-tuned answers on held-out data (exact match, token F1, ROUGE-L, labels; "
        "preference accuracy and mean margin on chosen/rejected pairs)",
        description="Generate base and fine-tuned answers for the run's validation rows (or --data) and score them "
        "against the reference answers.",
    )
    parser.add_argument("--run", help="run folder or run name")
    parser.add_argument("--data", help="evaluate on this file instead of the run's validation split")
    parser.add_argument(
        "--limit", type=int, default=None, help="at most this many rows (default: 50), or questions per benchmark task"
    )
    parser.add_argument(
        "--out",
        help="where to write the rows (.jsonl or .csv; required for batch evaluation), the benchmark results "
        "(.json, optional) or the preference pairs (.jsonl)",
    )
    parser.add_argument(
        "--benchmark",
        metavar="TASKS",
        help="lm-eval tasks on base and fine-tuned: comma-separated task names (e.g. finetune_general,arc_easy), "
        "task YAML files or folders of them",
    )
    parser.add_argument("--forgetting", action="store_true", help="the forgetting check: the built-in general set")
    parser.add_argument(
        "--all-checkpoints",
        action="store_true",
        help="score every saved checkpoint and the final adapter (batch evaluation, or --benchmark TASKS) as a curve",
    )
    parser.add_argument("--metric", help="with --all-checkpoints: the metric that picks the best checkpoint")
    parser.add_argument(
        "--chat-template", action="store_true", help="benchmarks: prompts through the run's chat template"
    )
    parser.add_argument(
        "--votes-to-preference",
        metavar="RUNS",
        help="write the blind A/B votes of these runs (comma-separated) as preference pairs to --out (.jsonl)",
    )
    parser.add_argument(
        "--labels", help="comma-separated label set: score as classification (default: detected from the references)"
    )
    parser.add_argument("--checkpoint", help="use this checkpoint folder of the run instead of the final adapter")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument("--workspace", help="workspace folder (default: $FINETUNE_WORKSPACE or ./workspace)")
    parser.set_defaults(func=run_evaluate_cli)
    return parser


def run_evaluate_cli(args: argparse.Namespace) -> int:
    """The handler; FinetuneErrors become one paragraph on stderr and exit status 1."""

    try:
        if args.votes_to_preference:
            return run_votes_cli(args)
        if not args.run:
            raise EvaluationError("--run is required (the run folder or name to evaluate)")
        if args.all_checkpoints:
            return run_curve_cli(args)
        if args.benchmark or args.forgetting:
            return run_benchmark_cli(args)
        return _evaluate(args)
    except FinetuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _evaluate(args: argparse.Namespace) -> int:
    if not args.out:
        raise EvaluationError("--out is required for batch evaluation: a .jsonl or .csv file for the scored rows")
    args.limit = 50 if args.limit is None else args.limit
    out = Path(args.out)
    if out.suffix.lower() not in OUT_SUFFIXES:  # checked before any model is loaded
        raise EvaluationError(f"--out must end in .jsonl or .csv (got '{out.name}'): the extension picks the format")
    if args.limit is not None and args.limit < 1:
        raise EvaluationError(f"--limit must be at least 1, got {args.limit}")
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    settings.check()
    labels = [label.strip() for label in args.labels.split(",") if label.strip()] if args.labels else None
    run = open_run(args.run, args.workspace)
    evaluation = evaluate_with_preferences(
        run,
        args.data,
        limit=args.limit,
        settings=settings,
        adapter=args.checkpoint,
        labels=labels,
        progress=_progress_printer(),
    )
    evaluation.write(out)
    summary = evaluation.summary
    if args.json:
        print(dumps(summary))
    else:
        print(format_summary(summary, out, evaluation.folder))
    return 0


def _progress_printer():
    """Row counter on stderr when it is a terminal (stdout stays clean for --json)."""
    if not sys.stderr.isatty():
        return None

    def progress(done: int, total: int) -> None:
        print(f"\rrow {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    return progress


def format_summary(summary: dict[str, Any], out: Path, folder: Path | None) -> str:
    """The summary as a small table for people."""

    lines = [
        f"data:     {summary.get('source')}",
        f"rows:     {summary['n']}" + (" (stopped)" if summary.get("stopped") else ""),
    ]
    if summary.get("label_like"):
        lines.append(f"labels:   {', '.join(summary['labels'])}")
    lines.append(f"{'metric':14} {'base':>8} {'fine-tuned':>11}")
    metrics = summary_metrics(summary) + ["perplexity", "mean_tokens", "mean_seconds"]
    if "preference_pairs" in summary:
        lines.append(f"pairs:    {summary['preference_pairs']} (log p(chosen) vs log p(rejected))")
        metrics = metrics[:1] + ["mean_margin"] + metrics[1:]
    for metric in metrics:
        base, tuned = summary["base"].get(metric), summary["finetuned"].get(metric)
        lines.append(f"{metric:14} {_num(base):>8} {_num(tuned):>11}")
    lines.append(
        f"{summary['differ']} rows differ; fine-tuned worse than base on {summary['finetuned_worse']}, "
        f"better on {summary['finetuned_better']} ({summary['primary_metric']})"
    )
    lines += [f"warning:  {w}" for w in summary.get("warnings", [])]
    lines += [f"note:     {n}" for n in summary.get("notes", [])]
    lines.append(f"rows written to {out}" + (f"; saved copy in {folder}" if folder else ""))
    return "\n".join(lines)


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"

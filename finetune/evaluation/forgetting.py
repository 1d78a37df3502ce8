"""The forgetting check: did the fine-tune get worse at everything else?

One click after a run: the built-in general set (60 multiple-choice questions of our own, shipped in
finetune/evaluation/tasks/, seconds on a GPU; on the 2-core CPU here about half a minute for the demo)
is scored by lm-eval on the base and the fine-tuned model, and read as **lost** (accuracy lower beyond
noise: the 95% interval of the paired difference below zero), **kept** (within noise) or **gained**,
next to the run's own task metric from its latest batch evaluation, so the trade-off is on one screen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from finetune.evaluation.batch import latest_evaluation
from finetune.evaluation.benchmark import Benchmark, MetricRow, latest_benchmark, run_benchmark
from finetune.evaluation.benchmark_tasks import BUILTIN_TASK

GENERAL_METRIC = "acc"
VERDICTS = {"worse": "lost", "better": "gained", "same": "kept", "unknown": "unknown"}


@dataclass
class ForgettingCheck:
    benchmark: Benchmark
    general: MetricRow | None  # the general set's accuracy, base vs fine-tuned
    task_metric: dict[str, Any] | None  # {"metric", "base", "finetuned", "rows", "evaluation"} or None

    @property
    def verdict(self) -> str:
        """kept | lost | gained | unknown."""
        return VERDICTS[self.general.verdict] if self.general else "unknown"

    def text(self) -> str:
        """One line for people: the general set's verdict and the task metric beside it."""
        g = self.general
        if g is None or g.base is None or g.finetuned is None:
            return "The general set gave no accuracy to compare."
        se = f" ± {1.96 * g.diff_stderr:.3f}" if g.diff_stderr is not None else ""
        line = (
            f"General knowledge {self.verdict}: accuracy {g.base:.3f} → {g.finetuned:.3f} "
            f"({g.diff:+.3f}{se}, 95%, {g.n} questions)"
        )
        t = self.task_metric
        if t and t.get("base") is not None and t.get("finetuned") is not None:
            line += f"; your task ({t['metric']}): {t['base']:.3f} → {t['finetuned']:.3f} on {t['rows']} rows"
        else:
            line += "; no batch evaluation of your task yet (run one to see both on one screen)"
        return line + "."


def task_metric(run: Any) -> dict[str, Any] | None:
    """The primary metric of the run's latest batch evaluation, base and fine-tuned."""

    evaluation = latest_evaluation(run)
    if evaluation is None:
        return None
    s = evaluation.summary
    metric = s.get("primary_metric") or "rouge_l"
    return {
        "metric": metric,
        "base": s.get("base", {}).get(metric),
        "finetuned": s.get("finetuned", {}).get(metric),
        "rows": s.get("n", 0),
        "evaluation": evaluation.folder.name if evaluation.folder else "",
    }


def read_check(run: Any, bench: Benchmark) -> ForgettingCheck:
    general = next((r for r in bench.rows if r.task == BUILTIN_TASK and r.metric == GENERAL_METRIC), None)
    return ForgettingCheck(bench, general, task_metric(run))


def forgetting_check(run: Any, *, limit: int | None = None, progress=None, stop=None) -> ForgettingCheck:
    """Score the built-in general set on base and fine-tuned (saved as a benchmark of kind forgetting)."""
    bench = run_benchmark(run, BUILTIN_TASK, limit=limit, progress=progress, stop=stop, kind="forgetting")
    return read_check(run, bench)


def latest_check(run: Any) -> ForgettingCheck | None:
    bench = latest_benchmark(run, kind="forgetting")
    return read_check(run, bench) if bench is not None else None

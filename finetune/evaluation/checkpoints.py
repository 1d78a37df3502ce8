"""The best checkpoint by the numbers: every saved checkpoint and the final adapter scored the same way,
as a curve (a metric per training step, the base model as a flat line), the best point marked.

Two kinds: `batch` (the run's held-out rows, as batch evaluation scores them: exact match, token F1,
ROUGE-L, BLEU, labels, validation perplexity) and `benchmark` (lm-eval tasks). The base is scored once;
each point attaches its adapter on the same base (one model in memory). Each point also carries the
training's own eval_loss at its step when one was logged there. Saved as
`<run>/evaluations/curve-<timestamp>.json`. A point names how to use it: `ref` is what
`start_from_run` takes to continue from it (`run@step`, or the run for the final adapter).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finetune.evaluation.benchmark import BenchmarkStopped, metric_rows, score_sides
from finetune.evaluation.benchmark_tasks import resolve_tasks
from finetune.evaluation.common import (
    EvaluationError,
    StopCheck,
    as_run,
    comparer_for,
    evaluations_dir,
    load_saved,
    report_progress,
    saved_files,
    settings_dict,
    should_stop,
    stamp,
    unique_path,
    write_json,
)
from finetune.evaluation.compare import GenerationSettings
from finetune.evaluation.examples import examples_from_rows, generate_example, load_eval_rows
from finetune.evaluation.metrics import detect_labels, label_scores, score_answer, strip_think
from finetune.evaluation.seed_metrics import answer_tokens, corpus_bleu
from finetune.names import checkpoint_ref

LOWER_IS_BETTER = ("perplexity", "eval_loss")
KINDS = ("batch", "benchmark")


@dataclass
class CurvePoint:
    name: str  # checkpoint-N | final
    step: int
    ref: str  # start_from_run for "continue from this checkpoint"
    scores: dict[str, float | None] = field(default_factory=dict)
    eval_loss: float | None = None


@dataclass
class CheckpointCurve:
    run: str
    kind: str  # batch | benchmark
    metric: str  # the one that picks the best point
    base: dict[str, float | None]
    points: list[CurvePoint]
    metrics: list[str]
    source: str = ""
    n: int = 0
    stopped: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    path: Path | None = None

    @property
    def higher_is_better(self) -> bool:
        return not any(self.metric.startswith(m) or self.metric.endswith(m) for m in LOWER_IS_BETTER)

    def best(self, metric: str | None = None) -> CurvePoint | None:
        """The point with the best value of `metric` (default: the curve's); the earliest on a tie."""
        metric = metric or self.metric
        scored = [p for p in self.points if isinstance(p.scores.get(metric), (int, float))]
        if not scored:
            return None
        sign = -1 if any(metric.startswith(m) or metric.endswith(m) for m in LOWER_IS_BETTER) else 1
        return max(scored, key=lambda p: (sign * p.scores[metric], -p.step))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path) if self.path else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointCurve:
        points = [CurvePoint(**p) for p in data.get("points", [])]
        return cls(**{**data, "points": points, "path": Path(data["path"]) if data.get("path") else None})


def curve_points(run: Any) -> list[tuple[str, int, Path]]:
    """(name, step, folder) of every saved checkpoint holding an adapter, then the final adapter."""
    run = as_run(run)
    points = [(p.name, int(p.name.split("-")[-1]), p) for p in run.checkpoints() if _loadable(p)]
    if run.has_adapter():
        step = int(run.status().get("step") or (points[-1][1] if points else 0))
        points.append(("final", step, run.adapter_dir))
    if not points:
        raise EvaluationError(f"run {run.name} has no saved checkpoint or final adapter to score yet")
    return points


def _loadable(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file() or (folder / "config.json").is_file()


def _eval_losses(run: Any) -> dict[int, float]:
    return {
        int(m["step"]): float(m["eval_loss"])
        for m in as_run(run).metrics()
        if isinstance(m.get("eval_loss"), (int, float)) and isinstance(m.get("step"), (int, float))
    }


def _point(run: Any, name: str, step: int) -> CurvePoint:
    ref = as_run(run).name if name == "final" else checkpoint_ref(as_run(run).name, step)
    return CurvePoint(name, step, ref)


# --- batch evaluation at every point -------------------------------------------------------
def _side_scores(examples, answers, labels) -> dict[str, float | None]:
    scores = [score_answer(a, e.reference, labels) for a, e in zip(answers, examples)]
    out: dict[str, float | None] = {
        m: sum(s[m] for s in scores) / len(scores) for m in ("exact_match", "token_f1", "rouge_l")
    }
    out["bleu"] = corpus_bleu([strip_think(a) for a in answers], [e.reference for e in examples])
    if labels:
        out["accuracy"] = label_scores(
            [s.get("label") for s in scores], [e.reference for e in examples], labels
        ).accuracy
    return out


def _perplexity(comparer, examples, use_adapter: bool, adapter: str | None, max_length: int) -> float | None:
    import math

    nll, tokens = 0.0, 0
    for example in examples:
        prompt_ids, answer_ids = answer_tokens(comparer.tokenizer, example, max_length)
        if answer_ids:
            nll -= comparer.completion_logps(prompt_ids, [answer_ids], use_adapter, adapter)[0]
            tokens += len(answer_ids)
    return math.exp(min(nll / tokens, 700.0)) if tokens else None


def batch_curve(run: Any, data=None, *, limit: int = 20, settings=None, metric: str | None = None,
                progress=None, stop: StopCheck = None, save: bool = True) -> CheckpointCurve:  # fmt: skip
    """Batch evaluation (base once, then every checkpoint and the final adapter) as a curve."""

    settings = (settings or GenerationSettings()).check()
    run = as_run(run)
    points = curve_points(run)
    rows, source, _ = load_eval_rows(run, data)
    examples, _ = examples_from_rows(rows, limit)
    labels = detect_labels([e.reference for e in examples])
    comparer = comparer_for(run, points[-1][2])
    max_length = run.config().max_length
    total, done = len(examples) * (len(points) + 1), 0
    report_progress(progress, 0, total)

    def answers_of(use_adapter: bool, adapter: str | None) -> list[str] | None:
        nonlocal done
        out = []
        for example in examples:
            if should_stop(stop):
                return None
            out.append(generate_example(comparer, example, use_adapter, settings, adapter, stop).text)
            done += 1
            report_progress(progress, done, total)
        return out

    base_answers = answers_of(False, None)
    curve = CheckpointCurve(run.name, "batch", "", {}, [], [], str(source), len(examples), base_answers is None,
                            settings_dict(settings))  # fmt: skip
    if base_answers is not None:
        curve.base = {**_side_scores(examples, base_answers, labels),
                      "perplexity": _perplexity(comparer, examples, False, None, max_length)}  # fmt: skip
        losses = _eval_losses(run)
        for name, step, folder in points:
            adapter = comparer.load_adapter(folder)
            answers = answers_of(True, adapter)
            if answers is None:
                curve.stopped = True
                break
            point = _point(run, name, step)
            point.scores = {**_side_scores(examples, answers, labels),
                            "perplexity": _perplexity(comparer, examples, True, adapter, max_length)}  # fmt: skip
            point.eval_loss = losses.get(step)
            curve.points.append(point)
    if run.has_adapter():
        comparer.load_adapter(run.adapter_dir)  # the other views stay on the final adapter
    curve.metrics = [m for m in ("exact_match", "token_f1", "rouge_l", "bleu", "accuracy", "perplexity")
                     if m in curve.base]  # fmt: skip
    curve.metric = pick_metric(curve.metrics, metric, "accuracy" if labels else "rouge_l")
    return _finish(run, curve, save)


def pick_metric(available: list[str], wanted: str | None, default: str) -> str:
    if wanted:
        if wanted not in available:
            raise EvaluationError(f"metric {wanted!r} is not on this curve: use one of {', '.join(available)}")
        return wanted
    return default if default in available else (available[0] if available else default)


# --- benchmarks at every point ---------------------------------------------------------------
def benchmark_curve(run: Any, tasks, *, limit: int | None = None, metric: str | None = None, progress=None,
                    stop: StopCheck = None, save: bool = True) -> CheckpointCurve:  # fmt: skip
    """lm-eval `tasks` on the base, every checkpoint and the final adapter, as a curve."""

    specs = resolve_tasks(tasks)
    run = as_run(run)
    points = curve_points(run)
    comparer = comparer_for(run, points[-1][2])
    batch = int(run.config().per_device_eval_batch_size or 8)
    curve = CheckpointCurve(run.name, "benchmark", "", {}, [], [], ", ".join(s.name for s in specs), limit or 0)
    results: dict[str, dict] = {}
    todo = [("base", None)] + [(name, folder) for name, _, folder in points]
    try:
        for i, (name, folder) in enumerate(todo):  # one adapter attached at a time (the Comparer keeps a few)
            adapter = comparer.load_adapter(folder) if folder is not None else None

            def report(fraction: float, message: str, i=i) -> None:
                if progress is not None:
                    progress((i + fraction) / len(todo), message)

            side = [(name, folder is not None, adapter)]
            results.update(score_sides(comparer, specs, side, limit=limit, chat_template=False, batch_size=batch,
                                       progress=report, stop=stop)[0])  # fmt: skip
    except BenchmarkStopped:
        curve.stopped = True
        return curve
    finally:
        if run.has_adapter():
            comparer.load_adapter(run.adapter_dir)
    losses = _eval_losses(run)
    for name, step, _ in points:
        rows = metric_rows(specs, results["base"], results[name])
        point = _point(run, name, step)
        point.scores = {f"{r.task} {r.metric}": r.finetuned for r in rows}
        point.eval_loss = losses.get(step)
        curve.base = {f"{r.task} {r.metric}": r.base for r in rows}
        curve.points.append(point)
    curve.metrics = list(curve.base)
    curve.metric = pick_metric(curve.metrics, metric, curve.metrics[0] if curve.metrics else "")
    return _finish(run, curve, save)


# --- saved curves ----------------------------------------------------------------------------
def _finish(run: Any, curve: CheckpointCurve, save: bool) -> CheckpointCurve:
    if save and curve.points:
        curve.path = unique_path(evaluations_dir(as_run(run)), f"curve-{stamp()}", ".json")
        write_json(curve.path, curve.to_dict())
    return curve


def list_curves(run: Any) -> list[Path]:
    return saved_files(run, "curve")


def load_curve(path: str | Path) -> CheckpointCurve:
    return load_saved(path, CheckpointCurve, "checkpoint curve")


def latest_curve(run: Any) -> CheckpointCurve | None:
    found = list_curves(run)
    return load_curve(found[-1]) if found else None

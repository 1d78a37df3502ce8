"""Standard benchmarks, base vs fine-tuned: EleutherAI's lm-evaluation-harness on both sides of a run.

`run_benchmark(run, "finetune_general,arc_easy", limit=50)` scores the same tasks on the base (the
adapter disabled) and on the fine-tuned model (the final adapter or a checkpoint), on the ONE model the
Comparer holds: lm-eval gets that model object (`HFLM(pretrained=model)`), so nothing is loaded twice
and the base really is the base (the adapter is disabled for the whole base pass, under the model lock).

Each metric row has both scores with their stderr, the difference and its stderr. The difference is
paired where lm-eval logs a score per question (accuracy): the standard error of the mean per-question
difference, which is what "worse beyond noise" needs; else the two stderrs combined as independent. A
row is `worse` when the 95% interval of the difference lies entirely on the bad side of zero.

Saved in `<run>/benchmarks/<timestamp>/results.json` (plus lm-eval's own results per side). Progress
is `progress(fraction, message)`; `stop` ends the run between batches of requests (nothing is saved:
a half-scored task would mislead). Every run also records its speed (see benchmark_speed.py).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finetune.evaluation.benchmark_speed import record_speed
from finetune.evaluation.benchmark_tasks import TaskSpec, registry, resolve_tasks
from finetune.evaluation.common import (
    EvaluationError,
    StopCheck,
    as_run,
    comparer_for,
    should_stop,
    stamp,
    unique_path,
    write_json,
)

SIDES = ("base", "finetuned")
Z_95 = 1.959963984540054
BOOTSTRAP_ITERS = 1000  # stderr of metrics without a closed form (lm-eval's default, 100000, takes minutes)
SKIP_KEYS = ("name", "alias", "sample_len", "samples", " ")


class BenchmarkStopped(Exception):
    """Raised inside lm-eval's loop when the user asks to stop."""


@dataclass
class MetricRow:
    """One task x metric: both scores, the difference (fine-tuned - base) and whether it is noise."""

    task: str
    metric: str
    base: float | None
    base_stderr: float | None
    finetuned: float | None
    finetuned_stderr: float | None
    diff: float | None
    diff_stderr: float | None
    paired: bool  # diff_stderr from per-question differences
    higher_is_better: bool
    n: int  # questions scored
    verdict: str  # worse | better | same (within noise) | unknown

    @property
    def worse(self) -> bool:
        return self.verdict == "worse"


@dataclass
class Benchmark:
    run: str
    adapter: str  # final | checkpoint-N
    tasks: list[str]
    rows: list[MetricRow]
    limit: int | None = None
    chat_template: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    stopped: bool = False
    kind: str = "benchmark"  # benchmark | forgetting
    notes: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    folder: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["folder"] = str(self.folder) if self.folder else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Benchmark:
        rows = [MetricRow(**r) for r in data.get("rows", [])]
        folder = Path(data["folder"]) if data.get("folder") else None
        return cls(**{**data, "rows": rows, "folder": folder})

    @property
    def worse(self) -> list[MetricRow]:
        return [r for r in self.rows if r.worse]

    def table(self) -> list[dict[str, Any]]:
        """One dict per row for tables: task, metric, base ± stderr, fine-tuned ± stderr, difference."""
        return [
            {
                "task": r.task,
                "metric": r.metric,
                "base": r.base,
                "base ±": r.base_stderr,
                "fine-tuned": r.finetuned,
                "fine-tuned ±": r.finetuned_stderr,
                "difference": r.diff,
                "difference ±": r.diff_stderr,
                "verdict": r.verdict,
                "questions": r.n,
            }
            for r in self.rows
        ]


# --- lm-eval's model, with progress and stop ------------------------------------------------
def progress_lm(model: Any, tokenizer: Any, *, batch_size: int, report, stop: StopCheck, speed: dict):
    """lm-eval's HFLM over a model already in memory, answering its requests in chunks so progress
    can be reported and a stop honoured between chunks; `speed[kind]` collects (requests, seconds)."""
    from lm_eval.models.huggingface import HFLM

    quiet_lm_eval()

    class ProgressLM(HFLM):
        def _chunked(self, kind: str, method, requests, chunk: int):
            out, total, start = [], len(requests), time.perf_counter()
            for i in range(0, total, chunk):
                if should_stop(stop):
                    raise BenchmarkStopped()
                out += method(requests[i : i + chunk], disable_tqdm=True)
                report(min(i + chunk, total), total, kind)
            done = speed.setdefault(kind, [0, 0.0])
            done[0] += total
            done[1] += time.perf_counter() - start
            return out

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return self._chunked("loglikelihood", super().loglikelihood, requests, max(64, 8 * batch_size))

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            return self._chunked("loglikelihood_rolling", super().loglikelihood_rolling, requests, max(8, batch_size))

        def generate_until(self, requests, disable_tqdm: bool = False):
            return self._chunked("generate_until", super().generate_until, requests, max(8, batch_size))

    return ProgressLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


def quiet_lm_eval() -> None:
    """lm-eval's INFO/WARNING lines (e.g. "pretrained is not a str": we pass the model on purpose) stay out
    of the app's log and the CLI's stderr; its errors still show."""
    logging.getLogger("lm_eval").setLevel(logging.ERROR)


def _task_manager(specs: list[TaskSpec]):
    from lm_eval.tasks import TaskManager

    folders = sorted({s.include_path for s in specs if s.include_path})
    if any(s.source == "lm-eval" for s in specs):
        return TaskManager(include_path=folders) if folders else registry()
    return TaskManager(include_path=folders or None, include_defaults=False)


def _evaluate_side(lm: Any, specs: list[TaskSpec], manager: Any, limit: int | None, chat_template: bool) -> dict:
    from lm_eval import simple_evaluate

    quiet_lm_eval()
    try:
        return simple_evaluate(
            model=lm,
            tasks=[s.spec for s in specs],
            task_manager=manager,
            limit=limit,
            log_samples=True,
            bootstrap_iters=BOOTSTRAP_ITERS,
            apply_chat_template=chat_template,
            fewshot_as_multiturn=chat_template,
        )
    except BenchmarkStopped:
        raise
    except (FileNotFoundError, ValueError, KeyError, TypeError, RuntimeError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:400]
        raise EvaluationError(f"lm-eval could not run {', '.join(s.name for s in specs)}: {first}") from None


# --- reading lm-eval's results --------------------------------------------------------------
def _number(value: Any) -> float | None:
    return (
        float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else None
    )


def task_metrics(results: dict, task: str) -> dict[str, tuple[float | None, float | None]]:
    """{metric (with its filter unless "none"): (value, stderr)} of one task or group."""
    out = {}
    for key, value in (results.get("results", {}).get(task) or {}).items():
        if key in SKIP_KEYS or "_stderr" in key or "," not in key:
            continue
        metric, filt = key.split(",", 1)
        name = metric if filt == "none" else f"{metric} ({filt})"
        out[name] = (_number(value), _number(results["results"][task].get(f"{metric}_stderr,{filt}")))
    return out


def _leaf_tasks(results: dict, task: str) -> list[str]:
    children = (results.get("group_subtasks") or {}).get(task)
    if not children:
        return [task]
    return [leaf for child in children for leaf in _leaf_tasks(results, child)]


def per_question(results: dict, task: str, metric: str) -> dict[tuple, float]:
    """{(task, doc_id, filter): score} for a metric lm-eval logs per question (accuracy); {} else."""
    name, _, filt = metric.partition(" (")
    filt = filt.rstrip(")") or "none"
    out = {}
    for leaf in _leaf_tasks(results, task):
        for sample in (results.get("samples") or {}).get(leaf, []):
            value = _number(sample.get(name))
            if value is not None and sample.get("filter", "none") == filt:
                out[(leaf, sample.get("doc_id"), filt)] = value
    return out


def compare_metric(task: str, metric: str, base: dict, tuned: dict, higher_is_better: bool) -> MetricRow:
    (b, b_se), (f, f_se) = task_metrics(base, task).get(metric, (None, None)), task_metrics(tuned, task)[metric]
    diff = f - b if b is not None and f is not None else None
    pb, pf = per_question(base, task, metric), per_question(tuned, task, metric)
    shared = sorted(set(pb) & set(pf), key=str)
    paired = len(shared) >= 2
    if paired:
        d = [pf[k] - pb[k] for k in shared]
        mean = sum(d) / len(d)
        diff_se = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d))
    else:
        diff_se = math.sqrt(b_se**2 + f_se**2) if b_se is not None and f_se is not None else None
    n = len(shared) or int((tuned.get("n-samples", {}).get(task) or {}).get("effective") or 0)
    return MetricRow(task, metric, b, b_se, f, f_se, diff, diff_se, paired, higher_is_better, n,
                     verdict(diff, diff_se, higher_is_better))  # fmt: skip


def verdict(diff: float | None, diff_se: float | None, higher_is_better: bool) -> str:
    """worse / better when the 95% interval of the difference excludes zero, same within it."""
    if diff is None:
        return "unknown"
    gain = diff if higher_is_better else -diff
    if diff_se is None:
        return "worse" if gain < 0 else "better" if gain > 0 else "same"
    if diff_se == 0:  # every question moved the same way (or none moved)
        return "same" if gain == 0 else "worse" if gain < 0 else "better"
    if gain < -Z_95 * diff_se:
        return "worse"
    return "better" if gain > Z_95 * diff_se else "same"


def metric_rows(specs: list[TaskSpec], base: dict, tuned: dict) -> list[MetricRow]:
    rows = []
    for spec in specs:
        better = (tuned.get("higher_is_better") or {}).get(spec.name) or {}
        for metric in task_metrics(tuned, spec.name):
            hib = better.get(metric.split(" (")[0], True)
            rows.append(compare_metric(spec.name, metric, base, tuned, bool(hib)))
    return rows


# --- running ---------------------------------------------------------------------------------
def score_sides(comparer, specs, sides, *, limit, chat_template, batch_size, progress=None, stop=None):
    """lm-eval's results for each side `(label, use_adapter, adapter name)`, one after the other on the
    Comparer's model: ({label: results}, {label: seconds}, speed). Raises BenchmarkStopped on a stop."""
    manager = _task_manager(specs)
    results, seconds, speed = {}, {}, {}
    for i, (label, use_adapter, adapter) in enumerate(sides):

        def report(done: int, total: int, what: str, i=i, label=label) -> None:
            if progress is not None:
                shown_as = "fine-tuned" if label == "finetuned" else label
                progress((i + done / max(total, 1)) / len(sides), f"{shown_as}: {what} {done} of {total}")

        start = time.perf_counter()
        with comparer.holding(use_adapter, adapter if use_adapter else None) as model:
            lm = progress_lm(model, comparer.tokenizer, batch_size=batch_size, report=report, stop=stop, speed=speed)
            results[label] = _evaluate_side(lm, specs, manager, limit, chat_template)
        seconds[label] = round(time.perf_counter() - start, 2)
    return results, seconds, speed


def run_benchmark(
    comparer_or_run: Any,
    tasks: str | list[str],
    *,
    limit: int | None = None,
    checkpoint: str | Path | None = None,
    chat_template: bool = False,
    batch_size: int | None = None,
    progress=None,
    stop: StopCheck = None,
    save: bool = True,
    kind: str = "benchmark",
) -> Benchmark:
    """Run `tasks` on the base and the fine-tuned model of a run (or the checkpoint folder `checkpoint`).
    `limit`: at most this many questions per task (a quick look). `chat_template`: prompts through the
    run's chat template (lm-eval's --apply_chat_template), else plain text as the benchmarks define them."""

    if limit is not None and int(limit) < 1:
        raise EvaluationError(f"limit must be at least 1 question per task, got {limit}")
    specs = resolve_tasks(tasks)  # every task checked before a model loads
    run = as_run(comparer_or_run)
    comparer = comparer_for(comparer_or_run, checkpoint)
    adapter = comparer.active_adapter or "final"
    batch = int(batch_size or run.config().per_device_eval_batch_size or 8)
    sides = [("base", False, None), ("finetuned", True, adapter)]
    try:
        results, seconds, speed = score_sides(comparer, specs, sides, limit=limit, chat_template=chat_template,
                                              batch_size=batch, progress=progress, stop=stop)  # fmt: skip
    except BenchmarkStopped:
        return Benchmark(run.name, display_adapter(adapter), [s.name for s in specs], [], limit, chat_template,
                         stopped=True, kind=kind)  # fmt: skip
    record_speed(run, speed)
    rows = metric_rows(specs, results["base"], results["finetuned"])
    notes = [f"{s.name}: {n}" for s in specs for n in s.notes]
    bench = Benchmark(run.name, display_adapter(adapter), [s.name for s in specs], rows, limit, chat_template,
                      seconds, kind=kind, notes=notes)  # fmt: skip
    if save:
        bench.folder = save_benchmark(run, bench, results)
    return bench


def display_adapter(name: str) -> str:
    """The Comparer's adapter name as people read it: final, checkpoint-N."""
    return name.replace("checkpoint_", "checkpoint-") if name else "final"


# --- saved benchmarks -------------------------------------------------------------------------
def benchmarks_dir(run: Any) -> Path:
    return as_run(run).path / "benchmarks"


def save_benchmark(run: Any, bench: Benchmark, raw: dict[str, dict] | None = None) -> Path:
    root = benchmarks_dir(run)
    root.mkdir(parents=True, exist_ok=True)
    while True:  # mkdir is the atomic claim of a name (two saves in one second)
        folder = unique_path(root, stamp())
        try:
            folder.mkdir()
            break
        except FileExistsError:
            continue
    bench.folder = folder
    for side, result in (raw or {}).items():  # lm-eval's own numbers, without the per-question samples
        write_json(folder / f"lm_eval_{side}.json", {k: v for k, v in result.items() if k != "samples"})
    write_json(folder / "results.json", bench.to_dict())  # last: its presence marks a complete save
    return folder


def list_benchmarks(run: Any, kind: str | None = None) -> list[Path]:
    """Saved benchmark folders, oldest first (optionally only one kind: benchmark | forgetting)."""
    root = benchmarks_dir(run)
    found = sorted(p for p in root.iterdir() if (p / "results.json").is_file()) if root.is_dir() else []
    return [p for p in found if kind is None or load_benchmark(p).kind == kind]


def load_benchmark(folder: str | Path) -> Benchmark:
    import json

    folder = Path(folder)
    try:
        data = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        bench = Benchmark.from_dict(data)
    except (OSError, ValueError, TypeError) as exc:
        raise EvaluationError(f"cannot read the benchmark in {folder}: {exc}") from None
    bench.folder = folder
    return bench


def latest_benchmark(run: Any, kind: str | None = None) -> Benchmark | None:
    found = list_benchmarks(run, kind)
    return load_benchmark(found[-1]) if found else None

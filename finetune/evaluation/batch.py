"""Batch evaluation: base and fine-tuned over held-out rows, scored against the references.

`evaluate()` generates both answers for up to `limit` rows (validation split by default),
scores each (see metrics.py), and saves `<run>/evaluations/<timestamp>/` with rows.csv,
rows.jsonl and summary.json. It reports `(done, total)` rows to `progress` and checks
`stop` before each generation, so a UI can show a bar and a stop button; a stopped
evaluation keeps (and saves) the rows finished so far, marked `stopped`.

"Fine-tuned worse than base" compares one primary score per row: label correctness when the references
look like labels, else ROUGE-L. The summary also has each model's corpus BLEU and validation perplexity
(seed_metrics.py), with `notes` on where they mislead.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.evaluation.charts import summary_figure
from finetune.evaluation.common import (
    EvaluationError,
    Progress,
    StopCheck,
    as_run,
    comparer_for,
    evaluations_dir,
    report_progress,
    settings_dict,
    should_stop,
    spreadsheet_safe,
    stamp,
    unique_path,
    write_json,
)
from finetune.evaluation.compare import GenerationSettings
from finetune.evaluation.examples import examples_from_rows, generate_example, load_eval_rows
from finetune.evaluation.gguf_side import gguf_path, is_gguf_side
from finetune.evaluation.metrics import detect_labels, label_scores, normalize_answer, score_answer, strip_think
from finetune.evaluation.seed_metrics import seed_metrics
from finetune.evaluation.sides import side_label
from finetune.names import display_name

MODELS = ("base", "finetuned")
TEXT_METRICS = ("exact_match", "token_f1", "rouge_l")
LABEL_METRICS = ("accuracy", "macro_f1")
FILTERS = ("all", "differ", "worse")
DEFAULT_LIMIT = 50


@dataclass
class EvalRow:
    """One evaluated example. Scores per model: exact_match, token_f1, rouge_l (+ label, correct)."""

    index: int
    prompt: str
    reference: str
    base: str
    finetuned: str
    base_tokens: int = 0
    finetuned_tokens: int = 0
    base_seconds: float = 0.0
    finetuned_seconds: float = 0.0
    base_scores: dict[str, Any] = field(default_factory=dict)
    finetuned_scores: dict[str, Any] = field(default_factory=dict)
    differ: bool = False  # answers differ (after removing reasoning and surrounding space)
    finetuned_worse: bool = False  # primary score below base's: a forgetting candidate

    def record(self) -> dict[str, Any]:
        """A flat dict: one CSV/JSONL row (scores as base_<metric>, finetuned_<metric>)."""
        out: dict[str, Any] = {
            "index": self.index,
            "prompt": self.prompt,
            "reference": self.reference,
            "base": self.base,
            "finetuned": self.finetuned,
        }
        for model in MODELS:
            out.update({f"{model}_{k}": v for k, v in getattr(self, f"{model}_scores").items()})
            out[f"{model}_tokens"] = getattr(self, f"{model}_tokens")
            out[f"{model}_seconds"] = round(getattr(self, f"{model}_seconds"), 4)
        out["differ"], out["finetuned_worse"] = self.differ, self.finetuned_worse
        return out

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> EvalRow:
        scores = {m: {k[len(m) + 1 :]: v for k, v in rec.items() if _is_score_key(k, m)} for m in MODELS}
        return cls(
            index=int(rec.get("index", 0)),
            prompt=rec.get("prompt", ""),
            reference=rec.get("reference", ""),
            base=rec.get("base", ""),
            finetuned=rec.get("finetuned", ""),
            base_tokens=int(rec.get("base_tokens", 0)),
            finetuned_tokens=int(rec.get("finetuned_tokens", 0)),
            base_seconds=float(rec.get("base_seconds", 0.0)),
            finetuned_seconds=float(rec.get("finetuned_seconds", 0.0)),
            base_scores=scores["base"],
            finetuned_scores=scores["finetuned"],
            differ=bool(rec.get("differ")),
            finetuned_worse=bool(rec.get("finetuned_worse")),
        )


def _is_score_key(key: str, model: str) -> bool:
    rest = key[len(model) + 1 :] if key.startswith(model + "_") else ""
    return rest in (*TEXT_METRICS, "label", "correct") or rest == "reward" or rest.startswith("reward/")


@dataclass
class Evaluation:
    rows: list[EvalRow]
    summary: dict[str, Any]
    folder: Path | None = None  # where it was saved, if it was

    def filtered(self, which: str = "all") -> list[EvalRow]:
        """all | differ (the answers differ) | worse (fine-tuned scored below base)."""
        if which not in FILTERS:
            raise EvaluationError(f"filter '{which}' is not one of: {', '.join(FILTERS)}")
        if which == "differ":
            return [r for r in self.rows if r.differ]
        if which == "worse":
            return [r for r in self.rows if r.finetuned_worse]
        return list(self.rows)

    def records(self, which: str = "all") -> list[dict[str, Any]]:
        return [r.record() for r in self.filtered(which)]

    def to_dataframe(self, which: str = "all"):
        import pandas as pd

        return pd.DataFrame(self.records(which))

    def write(self, path: str | Path, which: str = "all") -> Path:
        """Rows to `path`, format by extension: .csv or .jsonl."""
        return write_rows(self.records(which), path)

    def figure(self):
        return summary_figure(self.summary)


def write_rows(records: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise EvaluationError(f"cannot write rows to '{path.name}': the file name must end in .csv or .jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        if suffix == ".jsonl":
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        else:
            columns = list(dict.fromkeys(k for rec in records for k in rec)) or ["index", "prompt", "reference"]
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(spreadsheet_safe(rec) for rec in records)
    return path


# running ----------------------------------------------------------------------------
def evaluate(
    comparer_or_run: Any,
    data: str | Path | None = None,
    *,
    limit: int | None = DEFAULT_LIMIT,
    settings: Any = None,
    adapter: str | Path | None = None,
    labels: list[str] | None = None,
    progress: Progress | None = None,
    stop: StopCheck = None,
    save: bool = True,
    rows: list[dict] | None = None,
    against: str | None = None,
) -> Evaluation:
    """Generate and score base and fine-tuned answers for up to `limit` rows.

    `data`: a file (default: the run's validation rows). `adapter`: a checkpoint folder in
    the run (default: the final adapter). `rows`: normalized rows to use instead of reading `data`. `labels`: force label metrics with this label set
    (default: detected from the references). `settings.system_prompt` is not used: rows are
    formatted exactly as in training, with their own system turn if they had one. `against`
    ("gguf:<file>", see evaluation.sides) puts one of the run's GGUF exports in the "base" column.
    """

    settings = (settings or GenerationSettings()).check()
    run = as_run(comparer_or_run)
    if rows is None:
        rows, source, warnings = load_eval_rows(run, data)
    else:  # rows already read (e.g. preference pairs turned into prompt + reference)
        source, warnings = display_name(data) if data else "rows", []
    examples, skipped = examples_from_rows(rows, limit)
    if labels is not None:
        labels = [normalize_answer(label) for label in labels if normalize_answer(label)] or None
    else:
        labels = detect_labels([e.reference for e in examples])
    if is_gguf_side(against):
        gguf_path(run, against)  # a missing file is refused before anything is generated
    comparer = comparer_for(comparer_or_run, adapter)
    name = comparer.active_adapter
    results: list[EvalRow] = []
    stopped = False
    report_progress(progress, 0, len(examples))
    for example in examples:
        if should_stop(stop):
            stopped = True
            break
        base = generate_example(comparer, example, False, settings, name, stop, against)
        tuned = None if should_stop(stop) else generate_example(comparer, example, True, settings, name, stop)
        if tuned is None or should_stop(stop):  # a cut-short row is dropped: it would score unfairly
            stopped = True
            break
        results.append(_score_row(example, base, tuned, labels))
        report_progress(progress, len(results), len(examples))
    summary = summarize(results, labels)
    summary["notes"] = add_seed_metrics(summary, comparer, examples, results, name, stop)
    summary.update(
        source=source,
        requested=len(examples),
        stopped=stopped,
        adapter=name,
        run=run.name,
        against=against or "base",
        against_label=side_label(against),
        settings=settings_dict(settings),
        skipped=skipped[:50],
        warnings=warnings,
    )
    evaluation = Evaluation(results, summary)
    if save:
        evaluation.folder = save_evaluation(run, evaluation)
    return evaluation


def _score_row(example: Any, base: Any, tuned: Any, labels: list[str] | None) -> EvalRow:
    base_scores = score_answer(base.text, example.reference, labels)
    tuned_scores = score_answer(tuned.text, example.reference, labels)
    key = "correct" if labels else "rouge_l"
    return EvalRow(
        index=example.index,
        prompt=example.prompt_text,
        reference=example.reference,
        base=base.text,
        finetuned=tuned.text,
        base_tokens=base.tokens,
        finetuned_tokens=tuned.tokens,
        base_seconds=base.seconds,
        finetuned_seconds=tuned.seconds,
        base_scores=base_scores,
        finetuned_scores=tuned_scores,
        differ=strip_think(base.text) != strip_think(tuned.text),
        finetuned_worse=tuned_scores[key] < base_scores[key] - 1e-12,
    )


def summarize(rows: list[EvalRow], labels: list[str] | None = None) -> dict[str, Any]:
    """Per model: n and mean exact_match, token_f1, rouge_l, tokens, seconds (+ accuracy and
    macro_f1 over `labels`); plus how many rows differ and how many got worse / better."""
    n = len(rows)
    summary: dict[str, Any] = {"n": n, "label_like": bool(labels), "labels": list(labels or [])}
    summary["primary_metric"] = "accuracy" if labels else "rouge_l"
    for model in MODELS:
        scores = [getattr(r, f"{model}_scores") for r in rows]
        stats: dict[str, Any] = {"n": n}
        for metric in TEXT_METRICS:
            stats[metric] = _mean([s[metric] for s in scores])
        if labels:
            ls = label_scores([s.get("label") for s in scores], [r.reference for r in rows], labels)
            stats.update(accuracy=ls.accuracy if n else None, macro_f1=ls.macro_f1 if n else None)
            stats["per_label_f1"] = ls.per_label
        stats["mean_tokens"] = _mean([getattr(r, f"{model}_tokens") for r in rows])
        stats["mean_seconds"] = _mean([getattr(r, f"{model}_seconds") for r in rows])
        summary[model] = stats
    summary["differ"] = sum(r.differ for r in rows)
    summary["finetuned_worse"] = sum(r.finetuned_worse for r in rows)
    key = "correct" if labels else "rouge_l"
    summary["finetuned_better"] = sum(r.finetuned_scores[key] > r.base_scores[key] + 1e-12 for r in rows)
    return summary


def add_seed_metrics(
    summary: dict[str, Any], comparer: Any, examples: list, rows: list[EvalRow], adapter, stop
) -> list:
    """Corpus BLEU and validation perplexity per model into `summary` (seed_metrics.py); returns the notes
    on where they mislead."""

    if not rows:
        return []
    scores, notes = seed_metrics(comparer, examples, rows, adapter, stop)
    for model in MODELS:
        summary[model].update(scores[model])
    return notes


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


# saved evaluations --------------------------------------------------------------------
def save_evaluation(run: Any, evaluation: Evaluation) -> Path:
    """`<run>/evaluations/<timestamp>/` with rows.csv, rows.jsonl and summary.json."""
    while True:  # two evaluations saved in the same second get -2, -3... (mkdir is the atomic claim)
        folder = unique_path(evaluations_dir(as_run(run)), stamp())
        try:
            folder.mkdir()
            break
        except FileExistsError:
            continue
    records = evaluation.records()
    write_rows(records, folder / "rows.csv")
    write_rows(records, folder / "rows.jsonl")
    write_json(folder / "summary.json", evaluation.summary)  # last: its presence marks a complete save
    return folder


def list_evaluations(run: Any) -> list[Path]:
    """Saved evaluation folders, oldest first (names are timestamps)."""
    folder = as_run(run).path / "evaluations"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if (p / "summary.json").is_file())


def load_evaluation(folder: str | Path) -> Evaluation:
    folder = Path(folder)
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        lines = (folder / "rows.jsonl").read_text(encoding="utf-8").splitlines()
    except (OSError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"cannot read the evaluation in {folder}: {exc}") from None
    rows = [EvalRow.from_record(json.loads(line)) for line in lines if line.strip()]
    return Evaluation(rows, summary, folder)


def latest_evaluation(run: Any) -> Evaluation | None:
    found = list_evaluations(run)
    return load_evaluation(found[-1]) if found else None

"""Preference evaluation: does the model give the chosen answer a higher log-probability than the
rejected one? For base (adapter disabled) and fine-tuned, on held-out pairs.

`preference_accuracy` is the share of pairs where log p(chosen | prompt) > log p(rejected | prompt)
(summed over the answer's tokens, tokenized as TRL's DPO trainer does); `mean_margin` is the mean of
their difference in nats. Unpaired (KTO) rows are paired by prompt: a prompt with a good and a bad
completion makes a pair; the others are skipped and counted.
Saved in `<run>/preference_evaluations/<timestamp>/` (rows.jsonl, rows.csv, summary.json).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.data.templates import pair_token_ids
from finetune.evaluation.batch import evaluate, write_rows
from finetune.evaluation.common import (
    EvaluationError,
    Progress,
    StopCheck,
    as_run,
    comparer_for,
    report_progress,
    should_stop,
    stamp,
    unique_path,
    write_json,
)
from finetune.evaluation.examples import load_eval_rows
from finetune.evaluation.rewards import add_reward_scores, is_prompt_data

MODELS = ("base", "finetuned")
DEFAULT_LIMIT = 200


@dataclass
class PreferenceEvaluation:
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    folder: Path | None = None


def is_preference_data(rows: list[dict]) -> bool:
    return bool(rows) and ("chosen" in rows[0] or "label" in rows[0])


def pairs_of(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """Chosen/rejected pairs from preference rows; unpaired rows are joined by identical prompt."""
    if rows and "chosen" in rows[0]:
        return [r for r in rows if "chosen" in r], []
    good: dict[str, dict] = {}
    bad: dict[str, dict] = {}
    for row in rows:
        key = repr(row["prompt"])
        (good if row["label"] else bad).setdefault(key, row)
    pairs = [
        {"prompt": good[key]["prompt"], "chosen": good[key]["completion"], "rejected": bad[key]["completion"]}
        for key in good
        if key in bad
    ]
    unpaired = len(rows) - 2 * len(pairs)
    notes = (
        [f"{unpaired} unpaired rows have no opposite-label completion for their prompt; skipped"] if unpaired else []
    )
    return pairs, notes


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in value)
    return str(value)


def evaluate_preferences(
    comparer_or_run: Any,
    data: str | Path | None = None,
    *,
    rows: list[dict] | None = None,
    limit: int | None = DEFAULT_LIMIT,
    adapter: str | Path | None = None,
    progress: Progress | None = None,
    stop: StopCheck = None,
    save: bool = True,
) -> PreferenceEvaluation:
    """Preference accuracy and mean margin of base and fine-tuned on up to `limit` pairs of `data` (a
    preference file; default: the run's validation rows), or of `rows` when given."""

    run = as_run(comparer_or_run)
    warnings: list[str] = []
    if rows is None:
        rows, source, warnings = load_eval_rows(run, data)
    else:
        source = str(data or "rows")
    if not is_preference_data(rows):
        raise EvaluationError(
            f"{source} holds no preference pairs (chosen/rejected, or prompt/completion/label rows): "
            "preference accuracy needs them"
        )
    if limit is not None and limit < 1:
        raise EvaluationError(f"limit must be at least 1 pair, got {limit}")
    pairs, notes = pairs_of(rows)
    if not pairs:
        raise EvaluationError(f"{source}: no prompt has both a good and a bad completion, so there is no pair to score")
    pairs = pairs[:limit] if limit else pairs
    comparer = comparer_for(comparer_or_run, adapter)
    name = comparer.active_adapter
    results: list[dict[str, Any]] = []
    stopped = False
    max_length = run.config().max_length
    too_long = 0
    report_progress(progress, 0, len(pairs))
    for index, pair in enumerate(pairs):
        if should_stop(stop):
            stopped = True
            break
        prompt_ids, answers = pair_token_ids(comparer.tokenizer, pair, max_length)
        if not all(answers):  # the prompt alone fills max_length: TRL drops such pairs too
            too_long += 1
            report_progress(progress, len(results), len(pairs))
            continue
        record: dict[str, Any] = {
            "index": index,
            "prompt": _text(pair["prompt"]),
            "chosen": _text(pair["chosen"]),
            "rejected": _text(pair["rejected"]),
        }
        for model in MODELS:
            chosen, rejected = comparer.completion_logps(prompt_ids, answers, model == "finetuned", name)
            record[f"{model}_chosen_logp"] = round(chosen, 4)
            record[f"{model}_rejected_logp"] = round(rejected, 4)
            record[f"{model}_margin"] = round(chosen - rejected, 4)
            record[f"{model}_prefers_chosen"] = chosen > rejected
        results.append(record)
        report_progress(progress, len(results), len(pairs))
    summary = summarize_preferences(results)
    summary.update(
        kind="preference",
        source=source,
        requested=len(pairs),
        stopped=stopped,
        adapter=name,
        run=run.name,
        warnings=list(warnings)
        + notes
        + ([f"{too_long} pairs skipped: their prompt alone fills max_length={max_length}"] if too_long else []),
    )
    evaluation = PreferenceEvaluation(results, summary)
    if save:
        evaluation.folder = save_preference_evaluation(run, evaluation)
    return evaluation


def summarize_preferences(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per model: preference_accuracy, mean_margin, mean chosen/rejected log-probabilities."""
    n = len(records)
    summary: dict[str, Any] = {"n": n}
    for model in MODELS:
        summary[model] = {
            "n": n,
            "preference_accuracy": _mean([float(r[f"{model}_prefers_chosen"]) for r in records]),
            "mean_margin": _mean([r[f"{model}_margin"] for r in records]),
            "mean_chosen_logp": _mean([r[f"{model}_chosen_logp"] for r in records]),
            "mean_rejected_logp": _mean([r[f"{model}_rejected_logp"] for r in records]),
        }
    summary["finetuned_better"] = sum(r["finetuned_margin"] > r["base_margin"] for r in records)
    return summary


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def save_preference_evaluation(run: Any, evaluation: PreferenceEvaluation) -> Path:
    parent = as_run(run).path / "preference_evaluations"
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        folder = unique_path(parent, stamp())
        try:
            folder.mkdir()
            break
        except FileExistsError:
            continue
    write_rows(evaluation.rows, folder / "rows.csv")
    write_rows(evaluation.rows, folder / "rows.jsonl")
    write_json(folder / "summary.json", evaluation.summary)
    return folder


def as_reference_rows(rows: list[dict]) -> list[dict]:
    """Preference rows as rows the generation evaluation scores (the chosen / good answer is the
    reference), so the usual exact-match, F1 and ROUGE-L apply too."""
    out = []
    for row in rows:
        answer = row.get("chosen", row.get("completion"))
        if "label" in row and not row["label"]:
            continue
        if isinstance(row["prompt"], list):
            out.append({"messages": list(row["prompt"]) + list(answer)})
        else:
            out.append({"prompt": row["prompt"], "completion": answer})
    return out


PREFERENCE_KEYS = ("preference_accuracy", "mean_margin", "mean_chosen_logp", "mean_rejected_logp")


def merge_preference_summary(summary: dict[str, Any], preference: dict[str, Any], folder: Path | None) -> None:
    """Per model, preference_accuracy and mean_margin beside the generation scores (which used the
    chosen answers as references); the pair count and where the pairs were saved."""
    for model in MODELS:
        summary[model].update({k: preference[model][k] for k in PREFERENCE_KEYS})
    summary["preference_pairs"] = preference["n"]
    summary["preference_folder"] = str(folder) if folder else None
    summary["warnings"] = list(summary.get("warnings") or []) + list(preference.get("warnings") or [])


def evaluate_with_preferences(
    run: Any,
    data: str | Path | None = None,
    *,
    limit: int | None,
    settings: Any = None,
    adapter: str | Path | None = None,
    labels: list[str] | None = None,
    progress: Progress | None = None,
    stop: StopCheck = None,
    against: str | None = None,
    allow_custom_rewards: bool = True,
):
    """The batch evaluation of held-out rows; on preference pairs also preference accuracy and mean
    margin per model (in the same summary, saved with it), the chosen answers serving as references; on
    GRPO's prompt rows also the mean reward per model (finetune.evaluation.rewards; a custom reward file only
    with `allow_custom_rewards`). `against` (a GGUF side) replaces the base in the generated answers;
    preference accuracy is then left out (it compares the base's log-probabilities, which a GGUF side does
    not stand for)."""

    run = as_run(run)
    rows, source, warnings = load_eval_rows(run, data)
    preference = None
    prompt_rows = is_prompt_data(rows)  # GRPO's prompts: scored with the run's reward functions too
    if not prompt_rows and is_preference_data(rows):
        if against and against != "base":
            warnings = [*warnings, "preference accuracy is not computed against a GGUF side; pick the base for it"]
        else:
            preference = evaluate_preferences(run, source, rows=rows, limit=limit, adapter=adapter, stop=stop)
        rows = as_reference_rows(rows)
    evaluation = evaluate(
        run,
        source,
        rows=rows,
        limit=limit,
        settings=settings,
        adapter=adapter,
        labels=labels,
        progress=progress,
        stop=stop,
        against=against,
    )
    summary = evaluation.summary
    summary["warnings"] = list(warnings) + list(summary.get("warnings") or [])
    if prompt_rows:
        add_reward_scores(evaluation, rows, run.config(), allow_custom=allow_custom_rewards)
    if preference is not None:
        merge_preference_summary(summary, preference.summary, preference.folder)
    if evaluation.folder is not None:
        write_json(evaluation.folder / "summary.json", summary)
    return evaluation

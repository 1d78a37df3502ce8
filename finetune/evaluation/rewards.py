"""Judging a GRPO run with its own reward functions: base vs fine-tuned mean reward on held-out prompts.

The batch evaluation generates both answers for each prompt row (finetune.evaluation.batch, the answer
column as the reference for the text metrics); this adds, per model, `mean_reward` (the weighted total, as
in training) and `reward/<function>` (each function's mean), each row's rewards (`reward`,
`reward/<function>` in its scores), and makes the reward the primary metric: a row is "fine-tuned worse"
when its reward fell. A custom reward file runs code: without `allow_custom` it is left out, and said.
"""

from __future__ import annotations

from typing import Any

from finetune.data.prompts import is_prompt_row
from finetune.evaluation.batch import MODELS, Evaluation, write_rows
from finetune.reward_spec import CUSTOM, parse_reward_functions
from finetune.train.rewards import build_reward_functions, score_completions

EPSILON = 1e-12


def is_prompt_data(rows: list[dict]) -> bool:
    return bool(rows) and is_prompt_row(rows[0])


def reward_config(config: Any, allow_custom: bool) -> tuple[Any, list[str]]:
    """The run's reward settings (a GRPO run's own; contains_answer for prompt rows of another run), without
    custom code when it is not allowed; and a warning for what was left out."""
    if config.objective != "grpo":
        return config.replace(objective="grpo", reward_functions="contains_answer", reward_custom_file=""), [
            "this run was not trained with reward functions: mean_reward is contains_answer's"
        ]
    items, _ = parse_reward_functions(config.reward_functions)
    if allow_custom or all(name != CUSTOM for name, _ in items):
        return config, []
    kept = ", ".join(f"{name}:{weight:g}" for name, weight in items if name != CUSTOM)
    warning = (
        "the custom reward function was not scored: it runs code and this app's host did not allow it "
        "(python app.py --allow-custom-rewards)"
    )
    if not kept:
        return None, [warning + "; no other reward function to score with"]
    return config.replace(reward_functions=kept, reward_custom_file=""), [warning]


def add_reward_scores(evaluation: Evaluation, rows: list[dict], config: Any, *, allow_custom: bool = True) -> None:
    """Score both models' answers of `evaluation` (made from `rows`) with the run's reward functions, in place."""
    scored_config, warnings = reward_config(config, allow_custom)
    summary = evaluation.summary
    summary["warnings"] = list(summary.get("warnings") or []) + warnings
    if scored_config is None or not evaluation.rows:
        return
    functions, weights = build_reward_functions(scored_config)
    source = [rows[r.index] for r in evaluation.rows]
    for model in MODELS:
        texts = [getattr(r, model) for r in evaluation.rows]
        tokens = [getattr(r, f"{model}_tokens") for r in evaluation.rows]
        for row, values in zip(evaluation.rows, score_completions(functions, weights, source, texts, tokens)):
            scores = getattr(row, f"{model}_scores")
            scores["reward"] = values.pop("reward")
            scores.update({f"reward/{name}": value for name, value in values.items()})
        stats = summary[model]
        stats["mean_reward"] = _mean([getattr(r, f"{model}_scores")["reward"] for r in evaluation.rows])
        for f in functions:
            stats[f"reward/{f.__name__}"] = _mean(
                [getattr(r, f"{model}_scores")[f"reward/{f.__name__}"] for r in evaluation.rows]
            )
    for row in evaluation.rows:
        row.finetuned_worse = row.finetuned_scores["reward"] < row.base_scores["reward"] - EPSILON
    summary["finetuned_worse"] = sum(r.finetuned_worse for r in evaluation.rows)
    summary["finetuned_better"] = sum(
        r.finetuned_scores["reward"] > r.base_scores["reward"] + EPSILON for r in evaluation.rows
    )
    summary["primary_metric"] = "mean_reward"
    summary["reward_functions"] = scored_config.reward_functions
    summary["extra_metrics"] = ["mean_reward", *(f"reward/{f.__name__}" for f in functions if len(functions) > 1)]
    if evaluation.folder is not None:  # the saved rows gain their rewards (the caller rewrites summary.json)
        for name in ("rows.csv", "rows.jsonl"):
            write_rows(evaluation.records(), evaluation.folder / name)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None

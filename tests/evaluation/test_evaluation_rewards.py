"""Judging a GRPO run with its own reward functions: base vs fine-tuned mean reward on the held-out prompts,
saved with the evaluation; a custom reward file is left out (and said) where custom code is not allowed."""

from __future__ import annotations

import json

import pytest

from finetune.evaluation.generation import GenerationSettings
from finetune.evaluation.preference import evaluate_with_preferences
from finetune.studio import Studio

pytestmark = pytest.mark.slow
SETTINGS = GenerationSettings(max_new_tokens=24)


def test_batch_evaluation_scores_both_models_with_the_runs_rewards(trained_grpo_run, copy_run):
    run = copy_run(trained_grpo_run)
    evaluation = evaluate_with_preferences(run, limit=11, settings=SETTINGS)
    s = evaluation.summary
    assert s["n"] == 11 and s["primary_metric"] == "mean_reward" and s["extra_metrics"] == ["mean_reward"]
    base, tuned = s["base"]["mean_reward"], s["finetuned"]["mean_reward"]
    print(f"held-out mean reward (greedy, 24 tokens): base {base:.3f}, fine-tuned {tuned:.3f}")
    assert 0 <= base <= 1 and 0 <= tuned <= 1
    from finetune.train.answers import contains_answer

    for row in evaluation.rows:  # each row's reward is the function's on that answer, for both models
        assert row.base_scores["reward"] == contains_answer(row.base, row.reference)
        assert row.finetuned_scores["reward"] == contains_answer(row.finetuned, row.reference)
        assert row.finetuned_worse == (row.finetuned_scores["reward"] < row.base_scores["reward"])
    assert s["finetuned_better"] == sum(r.finetuned_scores["reward"] > r.base_scores["reward"] for r in evaluation.rows)
    saved = json.loads((evaluation.folder / "summary.json").read_text())
    assert saved["finetuned"]["mean_reward"] == tuned
    lines = (evaluation.folder / "rows.jsonl").read_text().splitlines()
    assert "finetuned_reward" in json.loads(lines[0])
    from finetune.evaluation import load_evaluation

    again = load_evaluation(evaluation.folder)
    assert again.rows[0].finetuned_scores["reward"] == evaluation.rows[0].finetuned_scores["reward"]


def test_the_app_leaves_a_custom_reward_out_unless_allowed(trained_grpo_run, copy_run, workspace):
    run = copy_run(trained_grpo_run, "grpo-with-custom")  # its own name: the session's job owns "trained-grpo"
    file = workspace / "reward.py"
    file.write_text("def reward(completions, **columns):\n    return [2.0] * len(completions)\n")
    config = run.config().replace(reward_functions="contains_answer, custom", reward_custom_file=str(file))
    config.to_yaml(run.config_path)
    studio = Studio(workspace)  # the app's: custom code not allowed
    refused = studio.judge.evaluate(run.name, None, limit=2, settings=SETTINGS)
    assert "custom reward function was not scored" in " ".join(refused.summary["warnings"])
    assert refused.summary["reward_functions"] == "contains_answer:1"
    studio.rewards.allow_custom_code()
    allowed = studio.judge.evaluate(run.name, None, limit=2, settings=SETTINGS)
    assert allowed.summary["extra_metrics"] == ["mean_reward", "reward/contains_answer", "reward/custom"]
    assert allowed.summary["base"]["reward/custom"] == 2.0

"""The studio's GRPO desk: a custom reward file runs code, so the app (restrict_paths) refuses it unless its
host allowed it, and then only from the allowed places; the CLI allows it. Notes before Start; samples."""

from __future__ import annotations

import json

import pytest

from finetune.config import RunConfig
from finetune.errors import ConfigError, FinetuneError
from finetune.studio import Studio


def custom_config(path) -> RunConfig:
    return RunConfig(
        objective="grpo",
        reward_functions="contains_answer, custom:0.5",
        reward_custom_file=str(path),
        per_device_train_batch_size=8,
        gradient_accumulation_steps=1,
    )


def test_the_app_refuses_custom_reward_code_unless_its_host_allowed_it(workspace, tmp_path):
    file = workspace / "reward.py"
    file.write_text("def reward(completions, **columns):\n    return [0.0] * len(completions)\n")
    app = Studio(workspace)  # the web app's studio: restrict_paths=True
    assert not app.rewards.custom_allowed and "--allow-custom-rewards" in app.rewards.custom_note()
    with pytest.raises(ConfigError, match="python app.py --allow-custom-rewards"):
        app.start(custom_config(file))
    assert not (workspace / "runs").exists() or not any((workspace / "runs").iterdir())  # nothing was made
    with pytest.raises(ConfigError, match="did not allow"):
        app.rewards.store_custom_file(str(file))
    app.rewards.allow_custom_code()
    assert "allowed here" in app.rewards.custom_note()
    app.rewards.check_allowed(custom_config(file))  # inside the workspace: fine
    outside = tmp_path / "elsewhere.py"
    outside.write_text(file.read_text())
    with pytest.raises(FinetuneError, match="reward_custom_file"):
        app.rewards.check_allowed(custom_config(outside))
    stored = app.rewards.store_custom_file(str(outside))
    assert stored.startswith(str(workspace / "rewards")) and stored.endswith("elsewhere.py")
    # the command line's studio may always run it, from anywhere
    Studio(workspace, restrict_paths=False).rewards.check_allowed(custom_config(outside))


def test_notes_warn_of_a_learning_rate_that_collapses_grpo(workspace):
    desk = Studio(workspace).rewards
    assert desk.notes(RunConfig()) == []
    notes = desk.notes(
        RunConfig(objective="grpo", learning_rate=5e-3, per_device_train_batch_size=32, gradient_accumulation_steps=1)
    )
    assert "8 completions for each of 4 prompts" in notes[0]
    assert "5e-3 collapsed" in notes[1]
    assert [name for name, _ in desk.functions()][-1] == "custom"


def test_samples_of_a_run(workspace):
    from tests.helpers_runs import make_run

    run = make_run(workspace, run_name="with-samples")
    folder = run.path / "completions"
    folder.mkdir()
    for step in (1, 10):
        record = {"step": step, "prompt": "q", "completion": "c", "rewards": {"contains_answer": 1.0}, "reward": 1.0}
        (folder / f"step-{step:06d}.jsonl").write_text(json.dumps(record) + "\n")
    desk = Studio(workspace).rewards
    assert desk.sample_steps("with-samples") == [1, 10]
    assert desk.samples("with-samples")[0]["step"] == 10 and desk.samples("with-samples", 1)[0]["step"] == 1

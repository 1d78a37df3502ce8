"""Everything a run would fail on is refused before its folder exists: the config's own checks (seed,
step intervals), LoRA targets that match no layer of the model, a token budget that leaves no answer
token, a YAML key given twice. No run folder, no half-made anything."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from finetune.config import RunConfig
from finetune.errors import ConfigError
from finetune.train.prechecks import lora_target_match_problems, model_folder, weight_shapes
from finetune.train.start import start_training


def _runs(workspace) -> list:
    runs = workspace / "runs"
    return sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []


def test_lora_targets_are_read_against_the_models_own_layers(demo_path):
    shapes = weight_shapes(model_folder(str(demo_path)))
    assert any(name.endswith("q_proj.weight") for name in shapes)

    def problems(spec: str) -> list[str]:
        return lora_target_match_problems(RunConfig(lora_target_modules=spec), str(demo_path))

    for fine in ("all-linear", "All-Linear", "attention", "q_proj,v_proj", "[q_proj, v_proj]", "self_attn.q_proj"):
        assert problems(fine) == [], fine
    (unknown,) = problems("q_proj,qq_proj")
    assert unknown.startswith("lora_target_modules: 'qq_proj' matches no layer of demo; its layers with weight")
    assert "q_proj" in unknown and "down_proj" in unknown
    (norm,) = problems("input_layernorm")
    assert "'input_layernorm' is not a linear layer of demo" in norm
    assert lora_target_match_problems(RunConfig(method="full", quantization="none"), str(demo_path)) == []


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"seed": -1}, "seed: must be a whole number from 0"),
        ({"eval_steps": 1.5}, "eval_steps: '1.5' is neither a fraction"),
        ({"logging_steps": 1.5, "save_steps": 2.5}, "save_steps: '2.5' is neither a fraction"),
        ({"lora_target_modules": "nonexistent_proj"}, "'nonexistent_proj' matches no layer of demo"),
        ({"max_length": 16, "dataset_path": "LONG"}, "max_length: 16 tokens leaves no answer token to train on"),
    ],
)
def test_a_run_that_cannot_train_is_refused_before_its_folder_exists(workspace, demo_path, tmp_path, changes, named):
    if changes.get("dataset_path") == "LONG":  # every prompt longer than max_length: nothing left to train on
        data = tmp_path / "long_prompts.jsonl"
        data.write_text("".join(json.dumps({"prompt": "word " * 60, "completion": "yes"}) + "\n" for _ in range(8)))
        changes = {**changes, "dataset_path": str(data)}
    config = RunConfig(model_name_or_path="demo", max_steps=2, run_name="refused").replace(**changes)
    with pytest.raises(ConfigError) as caught:
        start_training(config, workspace=workspace)
    assert any(named in problem for problem in caught.value.problems), caught.value.problems
    assert _runs(workspace) == []  # nothing was made


def test_a_long_prompt_among_short_ones_still_trains(workspace, demo_path, tmp_path):
    """Only when no example keeps an answer token is the run refused: TRL drops the others itself."""
    from finetune.train.prechecks import local_tokenizer, token_budget_problems

    rows = [{"prompt": "word " * 60, "completion": "yes"}, {"prompt": "Hi", "completion": "Hello"}]
    config = RunConfig(model_name_or_path="demo", max_length=16)
    tokenizer = local_tokenizer(config, str(demo_path))
    assert tokenizer is not None
    assert token_budget_problems(config, rows, tokenizer) == []
    assert token_budget_problems(config, rows[:1], tokenizer)[0].startswith("max_length: 16 tokens")
    assert token_budget_problems(config.replace(train_on_prompt=True), rows[:1], tokenizer) == []


def test_the_cli_names_a_duplicate_yaml_key_and_makes_no_run(workspace, tmp_path):
    config = tmp_path / "twice.yaml"
    config.write_text("model_name_or_path: demo\nmax_steps: 2\nmax_steps: 3\n")
    cmd = [sys.executable, "-m", "finetune.cli", "train", "--config", str(config), "--workspace", str(workspace)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "line 3: the setting 'max_steps' is given twice (first on line 2)" in done.stderr
    assert _runs(workspace) == []

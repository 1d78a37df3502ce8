"""RunConfig: defaults, YAML round trip, overrides, and validation that reports every problem at once."""

from __future__ import annotations

import dataclasses

import pytest

from finetune.config import RunConfig, field_help
from finetune.errors import ConfigError


def test_every_field_has_help_a_group_and_a_default():
    for name, meta in field_help().items():
        assert meta["help"].strip(), name
        assert meta["group"], name
        assert "default" in meta, name
    assert RunConfig().validate() == []


def test_yaml_round_trip(tmp_path):
    config = RunConfig(
        model_name_or_path="Qwen/Qwen2.5-0.5B-Instruct",
        lora_r=64,
        learning_rate=1.5e-4,
        bf16=True,
        eval_steps=0.2,
        column_mapping={"instruction": "question"},
    )
    path = tmp_path / "run.yaml"
    config.to_yaml(path)
    assert RunConfig.from_yaml(path) == config


def test_partial_yaml_fills_the_rest_with_defaults(tmp_path):
    path = tmp_path / "partial.yaml"
    path.write_text("lora_r: 8\nmethod: dora\n")
    config = RunConfig.from_yaml(path)
    assert (config.lora_r, config.method, config.learning_rate) == (8, "dora", RunConfig().learning_rate)


def test_overrides_parse_yaml_scalars():
    config = RunConfig().with_overrides(
        ["lora_r=32", "bf16=false", "eval_steps=0.25", "save_steps=100", "run_name=a.b"]
    )
    assert config.lora_r == 32 and config.bf16 is False
    assert config.eval_steps == 0.25 and config.save_steps == 100 and isinstance(config.save_steps, int)
    with pytest.raises(ConfigError, match="key=value"):
        RunConfig().with_overrides(["lora_r"])


def test_unknown_keys_and_wrong_types_are_all_reported(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("lora_rank: 8\nlearning_rate: fast\nper_device_train_batch_size: 2.5\npacking: maybe\n")
    with pytest.raises(ConfigError) as err:
        RunConfig.from_yaml(path)
    problems = err.value.problems
    assert len(problems) == 4
    text = str(err.value)
    assert "lora_rank" in text and "did you mean 'lora_r'" in text
    assert "learning_rate" in text and "per_device_train_batch_size" in text and "packing" in text
    assert all(p.startswith(str(path)) for p in problems)


def test_validation_reports_every_problem_at_once():
    config = RunConfig(
        learning_rate=-1,
        per_device_train_batch_size=0,
        max_length=0,
        lora_r=0,
        method="full",
        quantization="4bit",
        optim="sgdx",
        run_name="../escape",
    )
    problems = config.validate()
    for field in ("learning_rate", "per_device_train_batch_size", "max_length", "quantization", "optim", "run_name"):
        assert any(p.startswith(field) for p in problems), (field, problems)
    with pytest.raises(ConfigError):
        config.check()


def test_not_yaml_and_not_a_mapping(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        RunConfig.from_yaml(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        RunConfig.from_yaml(listing)
    with pytest.raises(ConfigError, match="not found"):
        RunConfig.from_yaml(tmp_path / "missing.yaml")


def test_config_names_match_the_issue():
    names = {f.name for f in dataclasses.fields(RunConfig)}
    expected = """model_name_or_path dataset_path eval_dataset_path dataset_format output_dir method quantization
    lora_r lora_alpha lora_dropout lora_target_modules learning_rate num_train_epochs max_steps
    per_device_train_batch_size gradient_accumulation_steps warmup_steps warmup_ratio lr_scheduler_type
    weight_decay max_grad_norm optim bf16 fp16 gradient_checkpointing max_length packing logging_steps
    eval_steps save_steps save_total_limit early_stopping_patience early_stopping_threshold
    load_best_model_at_end seed report_to attn_implementation""".split()
    assert set(expected) <= names


# --- GRPO (objective grpo) ----------------------------------------------------------------------------
def test_grpo_settings_are_checked_together():
    from finetune.config import RunConfig

    ok = RunConfig(objective="grpo", per_device_train_batch_size=4, gradient_accumulation_steps=4)
    assert ok.validate() == [] and ok.num_generations == 8 and ok.reward_functions == "contains_answer"
    problems = "\n".join(
        RunConfig(
            objective="grpo",
            per_device_train_batch_size=3,
            gradient_accumulation_steps=1,
            max_completion_length=2048,
            max_length=1024,
            temperature=0,
            kl_coef=0.1,
            method="full",
            quantization="none",
            reward_functions="",
        ).validate()
    )
    assert "3 completions per step, which is not a multiple of num_generations (8)" in problems
    assert "max_completion_length: 2048 leaves no room for the prompt within max_length 1024" in problems
    assert "temperature: GRPO samples its completions" in problems
    assert "kl_coef: with method full the reference would be a second copy" in problems
    assert "reward_functions: name at least one reward function" in problems
    assert any("num_generations" in p for p in RunConfig(objective="grpo", num_generations=1).validate())
    several = RunConfig(objective="grpo", per_device_train_batch_size=3, gradient_accumulation_steps=1, num_gpus=2)
    assert any("x num_gpus = 6 completions per step" in p for p in several.validate())
    assert RunConfig(objective="grpo", per_device_train_batch_size=4, gradient_accumulation_steps=1, num_gpus=2,
                     num_generations=8).validate() == []  # fmt: skip
    # the list form of YAML and the CLI's --set both work
    assert RunConfig.from_dict(
        {"objective": "grpo", "reward_functions": ["exact_answer", "length:0.5"]}
    ).reward_functions == ("exact_answer,length:0.5")


# --- what the trainer would refuse, checked before anything is made (issue 22) ----------------------------
@pytest.mark.parametrize(
    "changes, field",
    [
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"eval_steps": 1.5}, "eval_steps"),
        ({"logging_steps": 1.5}, "logging_steps"),
        ({"save_steps": 2.5}, "save_steps"),
        ({"lr_scheduler_type": "reduce_lr_on_plateau", "eval_steps": 0}, "lr_scheduler_type"),
    ],
)
def test_what_the_trainer_refuses_is_refused_by_the_config(changes, field):
    problems = RunConfig.from_dict(changes).validate()
    assert len(problems) == 1 and problems[0].startswith(f"{field}: "), problems


def test_fractions_and_whole_step_intervals_stay_allowed():
    config = RunConfig.from_dict({"eval_steps": 0.25, "logging_steps": 2.0, "save_steps": 10, "seed": 0})
    assert config.validate() == [] and config.logging_steps == 2 and isinstance(config.logging_steps, int)


def test_every_problem_comes_in_one_round():
    """Coercion problems (not a number) and range problems (a number out of range) together: fixing
    three then learning of a fourth is the round this refuses."""
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_dict({"lora_r": 1.5, "max_steps": "x", "seed": -7, "learning_rate": 5, "eval_steps": 2.5})
    named = sorted(problem.split(":")[0] for problem in caught.value.problems)
    assert named == ["eval_steps", "learning_rate", "lora_r", "max_steps", "seed"]
    config = RunConfig.from_dict({"max_steps": 10**12, "warmup_steps": -1, "seed": -2})
    assert sorted(p.split(":")[0] for p in config.validate()) == ["max_steps", "seed", "warmup_steps"]


def test_a_yaml_key_given_twice_is_named_with_its_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("learning_rate: 1e-4\nlora_r: 8\nlearning_rate: 3e-4\n")
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_yaml(path)
    (problem,) = caught.value.problems
    assert "line 3: the setting 'learning_rate' is given twice (first on line 1)" in problem
    nested = tmp_path / "nested.yaml"
    nested.write_text("column_mapping:\n  prompt: q\n  prompt: question\n")
    with pytest.raises(ConfigError, match="'prompt' is given twice"):
        RunConfig.from_yaml(nested)
    fine = tmp_path / "fine.yaml"
    fine.write_text("column_mapping: {prompt: q, completion: a}\nlora_target_modules: [q_proj, v_proj]\n")
    assert RunConfig.from_yaml(fine).lora_target_modules == "q_proj,v_proj"


def test_the_learning_rate_help_says_the_demo_preset_is_deliberately_high():
    from finetune.config import field_help
    from finetune.presets import load_preset

    help_text = field_help()["learning_rate"]["help"]
    assert "1e-4 to 3e-4" in help_text and "deliberately high" in help_text
    assert f"{load_preset('cpu')['learning_rate']:.0e}".replace("e-03", "e-3") in help_text  # the preset's own 5e-3


def test_a_config_error_of_many_long_problems_still_counts_the_rest():
    """Problems that each name a long path fill the message: the listing stops early and the count of the
    rest stays at its end (it was once cut off by the message bound)."""
    from finetune.errors import MAX_MESSAGE_CHARS, ConfigError

    long_path = "/tmp/" + "deep/" * 40 + "settings.yaml"
    text = str(ConfigError([f"{long_path}: unknown setting 'key_{i}'" for i in range(20_000)]))
    assert len(text) <= MAX_MESSAGE_CHARS and "more characters not shown" not in text
    listed = text.count("unknown setting")
    assert 1 <= listed < 20 and text.endswith(f"... and {20_000 - listed:,} more problems")
    short = str(ConfigError([f"unknown setting 'key_{i}'" for i in range(30)]))
    assert short.count("unknown setting") == 20 and short.endswith("... and 10 more problems")

"""The "run this on your cluster" commands: quoted, pointing at shipped configs, and read back
by the real CLI parser into the same config."""

from __future__ import annotations

import shlex

import pytest
import yaml

from finetune.cli.main import build_parser, build_train_config
from finetune.config import RunConfig
from finetune.launch_commands import STRATEGIES, accelerate_command, accelerate_config_path, train_command


def _cli_args(command: str) -> list[str]:
    """The words after `finetune` / `-m finetune.cli`, as the CLI's argv."""
    words = shlex.split(command)
    start = words.index("finetune.cli") + 1 if "finetune.cli" in words else words.index("finetune") + 1
    return words[start:]


def test_train_command_plain():
    assert train_command("runs/my config.yaml") == "finetune train --config 'runs/my config.yaml'"


def test_train_command_overrides_round_trip_through_the_cli(tmp_path):
    config_file = tmp_path / "run.yaml"
    RunConfig(model_name_or_path="demo").to_yaml(config_file)
    overrides = {
        "learning_rate": 1e-05,  # repr is "1e-05", which YAML would read as a string
        "max_steps": 12,
        "packing": True,
        "lora_target_modules": "q_proj,v_proj",
        "run_name": "it's-mine",
    }
    command = train_command(str(config_file), overrides)
    config = build_train_config(build_parser().parse_args(_cli_args(command)))
    assert config.learning_rate == 1e-05 and isinstance(config.learning_rate, float)
    assert config.max_steps == 12
    assert config.packing is True
    assert config.lora_target_modules == "q_proj,v_proj"
    assert config.run_name == "it's-mine"


def test_hostile_values_stay_one_word():
    command = train_command("a.yaml; rm -rf ~", {"run_name": "$(reboot)`id`"})
    words = shlex.split(command)
    assert words == ["finetune", "train", "--config", "a.yaml; rm -rf ~", "--set", "run_name=$(reboot)`id`"]


def test_strings_that_look_like_other_types_keep_their_type():
    command = train_command("a.yaml", {"run_name": "yes", "report_to": "1"})
    sets = [w for w in shlex.split(command) if "=" in w]
    assert [yaml.safe_load(s.split("=", 1)[1]) for s in sets] == ["yes", "1"]


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_accelerate_command_uses_the_shipped_config(strategy):
    command = accelerate_command("/shared/ws/run.yaml", num_processes=4, strategy=strategy)
    words = shlex.split(command)
    assert words[:2] == ["accelerate", "launch"]
    config_file = words[words.index("--config_file") + 1]
    assert config_file == f"accelerate_configs/{STRATEGIES[strategy]}"
    assert accelerate_config_path(strategy).is_file()
    assert words[words.index("--num_processes") + 1] == "4"
    assert words[-5:] == ["-m", "finetune.cli", "train", "--config", "/shared/ws/run.yaml"]
    args = build_parser().parse_args(_cli_args(command))
    assert args.command == "train" and args.config == "/shared/ws/run.yaml"


def test_accelerate_command_defaults_and_overrides():
    command = accelerate_command("run.yaml")
    assert command == (
        "accelerate launch --config_file accelerate_configs/ddp.yaml --num_processes 8 "
        "-m finetune.cli train --config run.yaml"
    )
    with_set = accelerate_command("run.yaml", 2, "fsdp", overrides={"max_steps": 5})
    assert with_set.endswith("--config run.yaml --set max_steps=5")


def test_shipped_configs_match_their_strategy():
    expected = {"ddp": "MULTI_GPU", "deepspeed_zero2": "DEEPSPEED", "deepspeed_zero3": "DEEPSPEED", "fsdp": "FSDP"}
    for strategy, kind in expected.items():
        data = yaml.safe_load(accelerate_config_path(strategy).read_text())
        assert data["distributed_type"] == kind
        assert data["use_cpu"] is False
    assert yaml.safe_load(accelerate_config_path("deepspeed_zero3").read_text())["deepspeed_config"]["zero_stage"] == 3
    # transformers refuses FSDP activation checkpointing together with the trainer's own
    assert (
        yaml.safe_load(accelerate_config_path("fsdp").read_text())["fsdp_config"]["fsdp_activation_checkpointing"]
        is False
    )


@pytest.mark.parametrize(
    "kwargs", [{"strategy": "zero4"}, {"num_processes": 0}, {"num_processes": "8"}, {"num_processes": True}]
)
def test_accelerate_command_refuses_bad_input(kwargs):
    with pytest.raises(ValueError):
        accelerate_command("run.yaml", **kwargs)


def test_command_line_reproduces_the_config():
    from finetune.cli.main import build_parser, build_train_config
    from finetune.config import RunConfig
    from finetune.launch_commands import config_overrides as overrides
    from finetune.presets import apply_preset

    cfg = apply_preset(RunConfig(), "cpu").replace(max_steps=12, lora_r=4, column_mapping={"output": "answer"})
    argv = ["train", "--preset", "cpu"] + [
        x for o in overrides(cfg, apply_preset(RunConfig(), "cpu")) for x in ("--set", o)
    ]
    assert build_train_config(build_parser().parse_args(argv)) == cfg


def test_equivalent_command_names_the_model_and_the_data_and_reproduces_the_config():
    import shlex

    from finetune.cli.main import build_parser, build_train_config
    from finetune.config import RunConfig
    from finetune.demo import SAMPLE_DATASET
    from finetune.launch_commands import train_command_lines as command_text
    from finetune.presets import apply_preset

    for cfg in (apply_preset(RunConfig(), "cpu"), apply_preset(RunConfig(), "cpu").replace(lora_r=4)):
        text = command_text(cfg, "cpu")
        assert "button above" in text
        flags = text.split("\n", 4)[4].replace("\\\n", " ")
        assert f"--model demo --data {SAMPLE_DATASET}" in flags
        argv = shlex.split(flags)[2:]  # after "finetune train"
        assert build_train_config(build_parser().parse_args(["train", *argv])) == cfg.replace(
            dataset_path=str(SAMPLE_DATASET)
        )

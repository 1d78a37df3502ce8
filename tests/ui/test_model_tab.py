"""Model & memory tab, for a run planned on several GPUs: the estimate is per GPU with its strategy,
and the command box ends with the `accelerate launch` command (through the Studio service)."""

from __future__ import annotations

import shlex

from finetune.config import RunConfig
from finetune.plan.hardware import GpuInfo, HardwareInfo, Machine
from finetune.studio import Studio
from ui.model_tab import estimate
from ui.state import Ctx


def gpu_studio(workspace) -> Studio:
    """The app on a machine with one 24 GB GPU (described, not detected)."""
    gpu = GpuInfo(index=0, name="GPU", total_gb=24.0, free_gb=24.0, bf16=True)
    hardware = HardwareInfo(device="cuda", gpus=[gpu], cpu_count=8, ram_gb=64.0)
    return Studio(workspace, machine=Machine.virtual("cuda", 24.0), hardware=hardware)


def test_several_gpus_are_shown_per_gpu_with_the_strategy_and_the_launch_command(workspace):
    ctx = Ctx(studio=gpu_studio(workspace))
    one = RunConfig(model_name_or_path="llama-3.1-8b", quantization="none", method="full")
    md_one, _ = estimate(ctx, one)
    assert "per GPU" not in md_one and "WILL NOT FIT" in md_one
    four = one.replace(num_gpus=4, strategy="zero3")
    md, figure = estimate(ctx, four)
    assert "of 24 GB per GPU (zero3 over 4 GPUs)" in md and "zero3 over 4 processes" in md  # headline, plan
    assert ctx.studio.estimate(four).per_gpu_gb < ctx.studio.estimate(one).per_gpu_gb
    assert any("gathered" in str(trace.name).lower() for trace in figure.data)

    command = ctx.studio.train_command(four.replace(num_machines=2))
    last = command.strip().splitlines()[-1]
    words = shlex.split(last.replace('"$MACHINE_RANK"', "0").replace('"$MAIN_PROCESS_IP"', "10.0.0.1"))
    assert words[:4] == ["accelerate", "launch", "--config_file", "accelerate_configs/deepspeed_zero3.yaml"]
    assert words[words.index("--num_processes") + 1] == "4" and words[words.index("--num_machines") + 1] == "2"
    assert "export MACHINE_RANK=0" in command and "--machine_rank" in words
    assert "accelerate launch" not in ctx.studio.train_command(one)
    # strategy auto: the command uses the strategy the plan picked (a full 8B copy does not fit 24 GB)
    auto = ctx.studio.train_command(one.replace(num_gpus=2))
    assert "accelerate_configs/fsdp.yaml" in auto.strip().splitlines()[-1]


def test_on_a_machine_without_gpu_the_estimate_is_per_process(workspace):
    ctx = Ctx(studio=Studio(workspace, machine=Machine.virtual("cpu"), hardware=HardwareInfo(device="cpu")))
    md, _ = estimate(ctx, RunConfig(num_gpus=2, strategy="fsdp", quantization="none"))
    assert "per process (fsdp over 2 CPU processes" in md


def test_the_start_summary_names_the_objective_the_data_and_a_mismatch(workspace):
    from ui.model_tab import config_summary

    sft = RunConfig(dataset_path=str(workspace / "uploads" / "0123456789-support.jsonl"))
    line = config_summary(sft, "cpu", "conversational")
    assert "objective SFT" in line and "support.jsonl" in line and "0123456789" not in line
    assert "preference" not in line
    assert "pick **DPO**, **ORPO** or **KTO**" in config_summary(sft, "cpu", "preference")
    assert "needs preference data" in config_summary(sft.replace(objective="dpo"), "cpu", "conversational")


def test_refresh_clears_a_stale_start_message_and_follows_the_form(workspace):
    from ui import config_form
    from ui.model_tab import refresh

    ctx = Ctx(studio=Studio(workspace, machine=Machine.virtual("cpu"), hardware=HardwareInfo(device="cpu")))
    values = config_form.values_from_config(RunConfig(method="dora", max_length=300))
    out = refresh(ctx, "cpu", {"shape": "conversational"}, *values)
    assert out["train_msg"] == "" and out["method"] == "DoRA" and out["data_max_length"] == 300
    assert "Start will train" in out["train_config_md"] and "finetune train" in out["command"]
    broken = list(values)
    broken[config_form.field_names().index("lora_r")] = "lots"
    assert "cannot be used" in refresh(ctx, "cpu", {}, *broken)["estimate_md"]

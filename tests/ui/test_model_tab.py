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

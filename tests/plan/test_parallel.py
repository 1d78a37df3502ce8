"""Several GPUs: the strategy accelerate launch sets up (from the environment accelerate itself
derives from our shipped configs), the refusals before anything loads, and the FSDP+QLoRA
configuration objects as the Answer.AI / Hugging Face recipe requires them."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune.config import RunConfig
from finetune.models import check_runnable, model_load_kwargs
from finetune.plan.hardware import Machine, detect_machine
from finetune.plan.parallel import check_launch, check_strategy, launched_strategy
from finetune.plan.planner import make_plan

ROOT = Path(__file__).resolve().parents[2]


def launcher_env(config_file: str, processes: int = 2) -> dict[str, str]:
    """The environment `accelerate launch --config_file accelerate_configs/<file>` gives each process."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    argv = ["--config_file", str(ROOT / "accelerate_configs" / config_file), "--num_processes", str(processes)]
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args([*argv, "x.py"]))
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config) if defaults else ""
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return {**env, "WORLD_SIZE": str(processes)}


@pytest.fixture
def launched(monkeypatch):
    """Put this process in the environment of rank 0 of `accelerate launch --config_file FILE`."""

    def launch(config_file: str) -> None:
        for key, value in launcher_env(config_file).items():
            if key.startswith(("ACCELERATE_", "FSDP_", "WORLD_SIZE")):
                monkeypatch.setenv(key, value)

    return launch


@pytest.mark.parametrize(
    ("config_file", "strategy", "sharded_loading"),
    [
        ("ddp.yaml", "ddp", False),
        ("fsdp.yaml", "fsdp", True),
        ("deepspeed_zero2.yaml", "zero2", False),
        ("deepspeed_zero3.yaml", "zero3", True),
        ("cpu_2proc_fsdp.yaml", "fsdp", True),
        ("cpu_2proc_zero3.yaml", "zero3", True),
    ],
)
def test_the_launchers_strategy_is_detected(launched, config_file, strategy, sharded_loading):
    launched(config_file)
    assert launched_strategy() == strategy
    machine = detect_machine()
    assert (machine.world_size, machine.strategy, machine.sharded_loading) == (2, strategy, sharded_loading)
    plan = make_plan(RunConfig(quantization="none"), machine)
    assert plan.strategy == strategy and "launched with" in plan.reason("parallelism")
    assert f"{strategy} over 2 processes" in "\n".join(plan.lines())
    assert plan.to_dict()["strategy"] == strategy  # plan.json records it


def test_one_process_has_no_strategy(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert launched_strategy() == ""
    assert make_plan(RunConfig(quantization="none"), detect_machine()).strategy == "none"


@pytest.mark.parametrize(
    ("settings", "strategy", "field"),
    [
        ({"quantization": "8bit"}, "fsdp", "quantization"),
        ({"quantization": "8bit"}, "zero3", "quantization"),
        ({"method": "dora"}, "zero3", "method"),
        ({"optim": "paged_adamw_8bit"}, "fsdp", "optim"),
    ],
)
def test_combinations_that_cannot_work_are_refused(settings, strategy, field):
    config = RunConfig(**settings)
    problems = check_strategy(config, strategy)
    assert len(problems) == 1 and problems[0].startswith(f"{field}:"), problems
    # before anything loads: start_training checks check_runnable first
    launched = Machine.virtual("cuda", 24, world_size=2, strategy=strategy)
    assert any(p.startswith(f"{field}:") for p in check_runnable(config, launched))


@pytest.mark.parametrize(
    ("settings", "strategy"),
    [
        ({"quantization": "4bit"}, "fsdp"),
        ({"quantization": "4bit"}, "zero3"),
        ({"quantization": "8bit"}, "ddp"),
        ({"method": "dora", "quantization": "4bit"}, "fsdp"),
        ({"method": "full", "quantization": "none"}, "zero3"),
        ({"method": "full", "quantization": "none"}, "fsdp"),
    ],
)
def test_combinations_that_work_are_accepted(settings, strategy):
    assert [p for p in check_strategy(RunConfig(**settings), strategy) if "pip install" not in p] == []


def test_quantized_fsdp_on_cpu_is_refused_before_loading():
    """On CPU transformers shards at load (accelerate has no CPU FSDP), which cannot shard bnb weights
    (measured: 'DTensor' object has no attribute 'compress_statistics' mid-load)."""
    cpu = Machine.virtual("cpu", world_size=2, strategy="fsdp")
    problems = check_runnable(RunConfig(quantization="4bit"), cpu)
    assert any(p.startswith("quantization: FSDP on CPU") for p in problems), problems
    assert not [p for p in check_runnable(RunConfig(quantization="none"), cpu) if "FSDP" in p]


def test_a_config_that_names_a_strategy_must_get_it_from_the_launcher():
    fsdp = RunConfig(strategy="fsdp")
    assert check_launch(fsdp, "fsdp") == [] and check_launch(RunConfig(), "ddp") == []
    (problem,) = check_launch(fsdp, "ddp")
    assert "accelerate_configs/fsdp.yaml" in problem
    launched_ddp = Machine.virtual("cuda", 24, world_size=2, strategy="ddp")
    assert any(p.startswith("strategy:") for p in check_runnable(fsdp, launched_ddp))


# --- FSDP + QLoRA: the configuration objects of the recipe ------------------------------------


def fsdp_plan(config: RunConfig):
    return make_plan(config, Machine.virtual("cuda", 24, world_size=2, strategy="fsdp", sharded_loading=True))


def test_qlora_under_fsdp_stores_4bit_weights_in_the_compute_dtype():
    import torch

    from finetune.models import build_bnb_config

    config = RunConfig(quantization="4bit")
    plan = fsdp_plan(config)
    bnb = build_bnb_config(config, plan)
    assert plan.dtype_name == "bfloat16"
    assert bnb.load_in_4bit and bnb.bnb_4bit_quant_storage == torch.bfloat16 == bnb.bnb_4bit_compute_dtype
    # the model loads in that dtype and with no device_map: rank 0 loads, FSDP shards as it loads
    kwargs = model_load_kwargs(config, plan)
    assert kwargs["dtype"] == torch.bfloat16 and "device_map" not in kwargs
    assert kwargs["quantization_config"] is not None
    # under DDP nothing changes: uint8 storage, one whole copy on this rank's GPU
    ddp = make_plan(config, Machine.virtual("cuda", 24, world_size=2, strategy="ddp"))
    assert build_bnb_config(config, ddp).bnb_4bit_quant_storage == torch.uint8


def test_the_fsdp_plugin_of_the_shipped_config_is_the_recipes(launched):
    from accelerate.utils import FullyShardedDataParallelPlugin

    launched("fsdp.yaml")
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.cpu_ram_efficient_loading is True  # weights loaded once (rank 0), sharded as they load
    assert plugin.auto_wrap_policy is not None and "transformer" in str(plugin.auto_wrap_policy).lower()
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)  # the adapter is saved unsharded
    assert plugin.activation_checkpointing is False  # the trainer's gradient checkpointing does it


def test_the_sharded_loading_flag_reaches_transformers(launched):
    """With the process group up, transformers sees FSDP's low-memory loading and loads on rank 0 only."""
    import torch.distributed as dist
    from transformers.distributed.fsdp import is_fsdp_enabled

    launched("fsdp.yaml")
    store = dist.HashStore()
    dist.init_process_group("gloo", rank=0, world_size=1, store=store)
    try:
        assert is_fsdp_enabled()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_every_fsdp_unit_of_a_qlora_model_has_one_dtype(workspace, launched):
    """FSDP flattens (FSDP1) or all-gathers (FSDP2) each wrapped unit: its tensors must share one
    float dtype. Load the demo model in 4-bit as the plan says, add LoRA as the trainer does, and
    check every unit the shipped config's wrap policy picks."""
    import torch
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from finetune.demo import demo_model_path
    from finetune.train.sft import build_lora_config

    config = RunConfig(quantization="4bit")
    plan = fsdp_plan(config)
    kwargs = model_load_kwargs(config, plan)
    model = AutoModelForCausalLM.from_pretrained(str(demo_model_path(workspace)), **kwargs)
    quantized = [p for p in model.parameters() if type(p).__name__ == "Params4bit"]
    assert quantized and {p.dtype for p in quantized} == {torch.bfloat16}  # not uint8: FSDP can shard them
    model = get_peft_model(model, build_lora_config(config))
    for param in model.parameters():
        if param.requires_grad:  # TRL casts the adapters of a quantized model to bf16
            param.data = param.data.to(torch.bfloat16)

    launched("fsdp.yaml")
    plugin = FullyShardedDataParallelPlugin()
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
    units = [m for m in model.modules() if policy(m)]
    assert len(units) == model.config.num_hidden_layers  # one unit per decoder layer
    lora_in_units = {id(p) for unit in units for n, p in unit.named_parameters() if "lora_" in n}
    assert lora_in_units == {id(p) for n, p in model.named_parameters() if "lora_" in n}
    for unit in units:
        assert {p.dtype for p in unit.parameters()} == {torch.bfloat16}

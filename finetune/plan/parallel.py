"""How a run is spread over several GPUs: the strategies, which one `accelerate launch` started,
what each shards, and the combinations that cannot work (refused before anything loads).

- ddp: every GPU holds the whole model, each trains on its slice of every batch.
- fsdp: PyTorch FSDP2; weights, gradients and optimizer states sharded, one decoder layer
  gathered at a time. With 4-bit QLoRA the NF4 weights are stored in the compute dtype
  (`bnb_4bit_quant_storage`) so FSDP can shard them (the Answer.AI / Hugging Face recipe).
- zero2: DeepSpeed ZeRO stage 2; gradients and optimizer states sharded, weights not.
- zero3: DeepSpeed ZeRO stage 3; also the weights, partitioned as the model loads.

The strategy of a launched run is the launcher's (the accelerate config's `distributed_type`,
read from the environment accelerate launch sets); `RunConfig.strategy` plans one (estimate,
launch command) and must agree with the launcher when it is set.
"""

from __future__ import annotations

import os

STRATEGIES = ("ddp", "fsdp", "zero2", "zero3")
SHARD_WEIGHTS = ("fsdp", "zero3")  # weights are sharded: 4-bit weights need a float storage dtype
SHARD_STATES = ("fsdp", "zero2", "zero3")  # gradients and optimizer states are sharded
DEEPSPEED = ("zero2", "zero3")
# the extra that brings DeepSpeed (pinned in pyproject.toml; installs without compiling its ops)
DEEPSPEED_INSTALL = 'pip install "finetune-studio[deepspeed]" (in a checkout: pip install -e ".[deepspeed]")'
# shipped accelerate config per strategy (accelerate_configs/)
ACCELERATE_CONFIGS = {
    "ddp": "ddp.yaml",
    "fsdp": "fsdp.yaml",
    "zero2": "deepspeed_zero2.yaml",
    "zero3": "deepspeed_zero3.yaml",
}
WHAT_IS_SHARDED = {
    "ddp": "nothing: every GPU holds the whole model",
    "fsdp": "weights, gradients and optimizer states",
    "zero2": "gradients and optimizer states",
    "zero3": "weights, gradients and optimizer states",
}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def launched_strategy() -> str:
    """The strategy `accelerate launch` set up for this process ("" when it was not launched by it
    with several processes): FSDP and DeepSpeed announce themselves in the environment."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return ""
    if _flag("ACCELERATE_USE_FSDP"):
        return "fsdp"
    if _flag("ACCELERATE_USE_DEEPSPEED"):
        stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2").strip()
        return "zero3" if stage == "3" else "zero2"
    return "ddp"


def sharded_loading() -> bool:
    """Whether the launcher asked for weights to be loaded once and sharded as they load
    (FSDP's cpu_ram_efficient_loading, DeepSpeed's zero3_init_flag)."""
    return _flag("FSDP_CPU_RAM_EFFICIENT_LOADING") or _flag("ACCELERATE_DEEPSPEED_ZERO3_INIT")


def check_strategy(config, strategy: str, *, launched: bool = True, device: str = "cuda") -> list[str]:
    """Problems with training `config` under `strategy` (empty when the combination can work);
    `launched=False` (a config planned for a cluster, trained here in one process) skips what only
    the cluster needs installed; `device` is where the launched processes train.

    Reasons, from the libraries as installed: LLM.int8 weights are int8 tensors, and FSDP and ZeRO-3
    shard only floating-point tensors (bitsandbytes' float storage exists for 4-bit only); PEFT's
    DoRA reads the whole base weight in its forward without gathering it, which ZeRO-3 keeps
    partitioned outside the module that owns it (peft/tuners/lora/dora.py); PEFT's FSDP guide lists
    paged_adamw_8bit as failing to save a checkpoint with FSDP+QLoRA."""
    if strategy not in STRATEGIES:
        return []
    problems = []
    quantized = config.method != "full" and config.quantization in ("4bit", "8bit")
    if strategy in SHARD_WEIGHTS and quantized and config.quantization == "8bit":
        problems.append(
            f"quantization: 8bit cannot be sharded by {strategy} (its int8 weights are not a float type FSDP/ZeRO-3 "
            "can split); use 4bit (QLoRA) or none, or the ddp strategy"
        )
    if strategy == "fsdp" and quantized and launched and device == "cpu":
        problems.append(
            f"quantization: FSDP on CPU (transformers shards the model as it loads) cannot shard {config.quantization} "
            "weights; set quantization to none here (FSDP+QLoRA runs on GPUs)"
        )
    if strategy == "zero3" and config.method == "dora":
        problems.append(
            "method: DoRA does not work with DeepSpeed ZeRO-3 (it reads the whole base weight, which ZeRO-3 keeps "
            "partitioned); use lora, or the fsdp or ddp strategy"
        )
    if strategy == "fsdp" and quantized and config.optim == "paged_adamw_8bit":
        problems.append(
            "optim: paged_adamw_8bit fails when saving a checkpoint with FSDP and a quantized model (PEFT's FSDP "
            "guide); use adamw_torch or adamw_8bit"
        )
    if strategy in DEEPSPEED and launched:
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            problems.append(f"strategy: {strategy} needs DeepSpeed: {DEEPSPEED_INSTALL}")
    return problems


def check_launch(config, strategy: str) -> list[str]:
    """A config that names a strategy must run under that strategy when it is launched with several processes."""
    wanted = getattr(config, "strategy", "auto")
    if not strategy or wanted in ("auto", strategy):
        return []
    return [
        f"strategy: the config asks for {wanted} but accelerate launch started {strategy}; launch with "
        f"--config_file accelerate_configs/{ACCELERATE_CONFIGS[wanted]}, or set strategy to auto"
    ]

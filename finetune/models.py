"""Finding, checking and loading base models and tokenizers.

Model ids are a Hub id, a local folder, or `demo`. Anything that cannot run on the
hardware present is refused before a run starts (`check_runnable`), with the reason.
"""

from __future__ import annotations

import importlib.util
import re
import warnings
from pathlib import Path
from typing import Any

from finetune.config import RunConfig
from finetune.demo import demo_model_path, is_demo
from finetune.errors import ModelError, shown
from finetune.names import is_hub_id, is_local_path
from finetune.offline import hub_offline
from finetune.plan.hardware import Machine
from finetune.plan.parallel import SHARD_WEIGHTS, check_launch, check_strategy
from finetune.plan.planner import Plan


def resolve_model_path(name: str, workspace: str | Path | None = None) -> str:
    """A loadable path or Hub id for `name`; local paths must exist and hold a config.json."""
    name = (name or "").strip()
    if not name:
        raise ModelError("No base model given: pick one from the list, type a Hub id, or use `demo`.")
    if is_demo(name):
        return str(demo_model_path(workspace))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"The folder {path} is not a model: it has no config.json.")
        return str(path.resolve())
    if path.is_file():
        raise ModelError(f"{path} is a file: give the model's folder (the one that holds config.json).")
    if is_local_path(name):
        raise ModelError(f"The local model folder {path} does not exist.")
    if not is_hub_id(name):
        raise ModelError(
            f"{shown(name)} is neither a local folder nor a valid Hub model id (like Qwen/Qwen2.5-0.5B-Instruct)."
        )
    return name


def release_memory() -> None:
    """Drop unreachable models and hand cached CUDA blocks back, so the next model fits."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_runnable(config: RunConfig, machine: Machine) -> list[str]:
    """Problems that make this config impossible on `machine` (empty when it can run)."""
    problems = []
    cuda = machine.device == "cuda"
    if config.attn_implementation == "flash_attention_2":
        if not cuda:
            problems.append("attn_implementation: flash_attention_2 needs a CUDA GPU; use auto or sdpa on this machine")
        elif not machine.flash_attn:
            problems.append(
                "attn_implementation: flash_attention_2 needs the flash-attn package and a GPU of compute "
                "capability 8.0+ (Ampere or newer); use auto or sdpa"
            )
    if config.fp16 is True and not cuda:
        problems.append("fp16: float16 mixed precision needs a CUDA GPU; set fp16 to auto or false")
    if config.bf16 is True and cuda and not machine.bf16:
        problems.append("bf16: this GPU does not support bfloat16; set bf16 to auto or false (fp16 is used instead)")
    if config.optim == "adamw_torch_fused" and not cuda:
        problems.append("optim: adamw_torch_fused needs a CUDA GPU; use adamw_torch on this machine")
    if config.use_liger_kernel is True and not machine.liger:
        problems.append("use_liger_kernel: needs a CUDA GPU and the liger-kernel package; set it to auto or false")
    if config.quantization != "none" and importlib.util.find_spec("bitsandbytes") is None:
        problems.append(
            f"quantization: {config.quantization} needs the bitsandbytes package (pip install bitsandbytes)"
        )
    if machine.world_size > 1:
        problems += check_launch(config, machine.strategy)
        problems += check_strategy(config, machine.strategy or "ddp", device=machine.device)
    elif config.strategy != "auto":
        problems += check_strategy(config, config.strategy, launched=False)
    if config.trust_remote_code:
        warnings.warn("trust_remote_code is on: the model repository's Python code will run", stacklevel=2)
    return problems


def _hub_error(name: str, exc: Exception) -> ModelError:
    text = str(exc)
    offline = hub_offline() or "offline" in text.lower() or "connect" in text.lower()
    if "gated" in text.lower() or "401" in text or "403" in text:
        return ModelError(
            f"The model '{name}' is gated or private: accept its licence on huggingface.co and provide a token "
            "(HF_TOKEN), or choose another model."
        )
    if offline:
        return ModelError(
            f"Could not download {shown(name)} from the Hugging Face Hub (no network access or offline mode). "
            "Use a local model folder, a model already in your Hugging Face cache, or `demo`."
        )
    return ModelError(
        f"Could not load the model {shown(name)}: it was not found on the Hub or locally ({text.splitlines()[0][:200]})."
    )


def load_tokenizer(config: RunConfig, workspace: str | Path | None = None, path: str | None = None):
    """The base model's tokenizer, with a pad token (eos when the model has none)."""
    from transformers import AutoTokenizer

    source = path or resolve_model_path(config.model_name_or_path, workspace)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _hub_error(config.model_name_or_path, exc) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    _add_generation_markers(tokenizer)
    return tokenizer


_GENERATION_TAG_RE = re.compile(r"\{%-?\s*(end)?generation\s*-?%\}")


def save_tokenizer_for_serving(tokenizer, folder: str | Path) -> None:
    """Save a tokenizer with its chat template free of {% generation %} markers: they exist only
    for loss masking, and plain Jinja (llama.cpp, Ollama converters) cannot parse them."""
    template = tokenizer.chat_template
    if isinstance(template, str) and _GENERATION_TAG_RE.search(template):
        tokenizer.chat_template = _GENERATION_TAG_RE.sub("", template)
        try:
            tokenizer.save_pretrained(str(folder))
        finally:
            tokenizer.chat_template = template
    else:
        tokenizer.save_pretrained(str(folder))


def _add_generation_markers(tokenizer) -> None:
    """Swap in TRL's training version of a known chat template (same text, plus {% generation %}
    markers) so the loss can be masked to assistant turns, in training and in the preview alike."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = tokenizer.chat_template
    if not template or not isinstance(template, str) or has_generation_markers(template):
        return
    try:
        patched = get_training_chat_template(tokenizer)
    except (ValueError, TypeError):
        return  # unknown template: the last assistant turn is trained as a completion instead
    if patched:
        tokenizer.chat_template = patched


def build_bnb_config(config: RunConfig, plan: Plan, quantization: str | None = None):
    """NF4 with double quantization (QLoRA paper) for 4bit, computing in the plan's dtype; LLM.int8
    for 8bit; None for none. When the plan shards the weights (fsdp, zero3) the 4-bit codes are
    stored in the compute dtype too (`bnb_4bit_quant_storage`), as FSDP+QLoRA needs: FSDP and ZeRO-3
    shard floating-point tensors only, and every tensor of a unit must share one dtype."""
    from transformers import BitsAndBytesConfig

    quantization = config.quantization if quantization is None else quantization
    if quantization == "4bit":
        storage = {"bnb_4bit_quant_storage": plan.torch_dtype()} if plan.strategy in SHARD_WEIGHTS else {}
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=plan.torch_dtype(),
            **storage,
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def model_load_kwargs(config: RunConfig, plan: Plan, quantization: str | None = None) -> dict[str, Any]:
    """from_pretrained kwargs for the plan's dtype, attention and device, and the quantization."""
    quantization = config.quantization if quantization is None else quantization
    kwargs: dict[str, Any] = {
        "dtype": plan.torch_dtype(),
        "attn_implementation": plan.attn_implementation,
        "trust_remote_code": config.trust_remote_code,
    }
    if quantization != "none":
        kwargs["quantization_config"] = build_bnb_config(config, plan, quantization)
    if plan.shard_at_load:
        from transformers.distributed import DistributedConfig

        # FSDP2 (fully_shard per decoder layer) applied by transformers as the weights load
        kwargs["distributed_config"] = DistributedConfig(fsdp_size=plan.world_size)
    elif plan.strategy in SHARD_WEIGHTS:
        # no device_map: under FSDP (cpu_ram_efficient_loading) rank 0 loads the weights and the
        # others get empty ones that FSDP fills as it shards; under ZeRO-3 DeepSpeed partitions
        # them as they load. The dtype is the 4-bit storage dtype (build_bnb_config).
        pass
    elif plan.device == "cuda":
        from accelerate import PartialState

        # one full copy per process: the device of this rank under accelerate/DDP
        kwargs["device_map"] = {"": PartialState().local_process_index}
    return kwargs


def keep_4bit_layers_differentiable(model) -> int:
    """Turn off bitsandbytes' CPU repacking of 4-bit weights for a model that trains; returns how many
    layers it touched.

    On a CPU with AVX512-BF16, a Linear4bit that runs once in eval mode without gradients (the
    trainer's evaluation) repacks its weights for an inference kernel, gemv_4bit, and keeps them so:
    every later training step then backpropagates through an op without an autograd kernel, and the
    gradient through the frozen base weights is silently dropped (PyTorch warns "silently incorrect
    behavior" once per step). tests/test_models.py shows the gradients differ without this."""
    count = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def load_model(
    config: RunConfig,
    workspace: str | Path | None = None,
    *,
    plan: Plan,
    quantization: str | None = None,
    path: str | None = None,
    training: bool = True,
):
    """The base causal LM, loaded as the config and its plan say (4-bit/8-bit/16-bit, attention, dtype).
    `training=False` (comparison, evaluation) lets bitsandbytes use its inference-only CPU kernels."""
    from transformers import AutoModelForCausalLM

    source = path or resolve_model_path(config.model_name_or_path, workspace)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **model_load_kwargs(config, plan, quantization))
        if training:
            keep_4bit_layers_differentiable(model)
        return model
    except (OSError, ValueError) as exc:
        if "flash" in str(exc).lower():
            raise ModelError(
                f"FlashAttention could not be used with this model: {exc}. Set attn_implementation to sdpa."
            ) from None
        raise _hub_error(config.model_name_or_path, exc) from None

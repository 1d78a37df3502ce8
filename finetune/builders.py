"""Builders: our RunConfig -> the library objects (BitsAndBytesConfig, LoraConfig, SFTConfig, SFTTrainer).

Every translation from our knobs to a library's lives here, in one place, including the fast
path: the `auto` knobs (packing, length grouping, gradient checkpointing, Liger kernels) are
resolved for the hardware and attention kernel at hand by `resolve_fast_path`, and
`build_trainer` reuses a tokenized dataset from the cache (`finetune.datacache`) when the same
data was prepared before with the same tokenizer and settings.

What each fast-path piece does and why (TRL 1.16, transformers 5.23):
- packing (bfd, padding-free): TRL flattens each batch into one sequence with `position_ids`
  restarting per example. flash_attention_2 reads them as varlen boundaries (no padding, no
  quadratic mask). sdpa/eager also keep examples apart (transformers builds a block-diagonal
  mask from the position_ids) but over the whole flattened batch, which costs more than
  padding short batches; so `auto` packs only with flash attention.
- length grouping, unpacked batches: batches are padded to their longest example (never to
  max_length); `auto` uses transformers' `batch_rebalance` sampler, which keeps the examples of
  each optimizer step exactly as random order picks them and only splits them into
  micro-batches of similar length; `true` uses `group_by_length` (least padding).
- the loss: TRL 1.16 always computes it through a fused, chunked LM head (`loss_type="nll"`;
  "chunked_nll" is a deprecated alias), over the label positions only, so completion-only /
  assistant-only loss also skips the LM head on prompt tokens. Nothing to switch on here.
- gradient checkpointing `auto`: off on CPU/MPS; on CUDA off when `estimate_memory` without it
  fits in GC_HEADROOM of the GPU's memory.
- Liger kernels (RMSNorm/RoPE/SwiGLU; TRL keeps its own fused loss) on CUDA when `liger_kernel`
  is installed, unless $FINETUNE_LIGER=0.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from finetune.config import RunConfig

ATTENTION_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]
GC_HEADROOM = 0.85  # gradient checkpointing `auto`: off when the estimate without it fits in this share of the GPU
SAMPLERS = {"random": "random", "rebalance": "batch_rebalance", "group": "group_by_length"}


def build_bnb_config(config: RunConfig, quantization: str | None = None):
    """NF4 with double quantization (QLoRA paper) for 4bit; LLM.int8 for 8bit; None for none."""
    from transformers import BitsAndBytesConfig

    from finetune.models import compute_dtype

    quantization = config.quantization if quantization is None else quantization
    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype(config),
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def lora_target_modules(config: RunConfig) -> str | list[str]:
    """`all-linear`, `attention` (q/k/v/o projections) or an explicit comma-separated list."""
    value = config.lora_target_modules.strip()
    if value == "all-linear":
        return "all-linear"
    if value == "attention":
        return list(ATTENTION_MODULES)
    return [m.strip() for m in value.split(",") if m.strip()]


def build_lora_config(config: RunConfig):
    """LoraConfig for lora/dora; None for full fine-tuning."""
    if config.method == "full":
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=lora_target_modules(config),
        use_dora=config.method == "dora",
        bias="none",
        task_type="CAUSAL_LM",
    )


# --- the fast path ---------------------------------------------------------------------------


@dataclass
class FastPath:
    """The `auto` knobs of a RunConfig, decided for one machine and attention kernel, with the reasons."""

    device: str
    attn_implementation: str
    packing: bool
    padding_free: bool
    sampler: str  # random | rebalance | group (see SAMPLERS)
    gradient_checkpointing: bool
    use_liger_kernel: bool
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def train_sampling_strategy(self) -> str:
        return SAMPLERS[self.sampler]

    def summary(self) -> str:
        """One line for train.log, e.g. `fast path: packing off (sdpa) · batches: rebalance · ...`."""
        parts = [
            f"attention {self.attn_implementation}",
            f"packing {'on (padding-free)' if self.packing else 'off'}",
            f"batches {self.sampler}" + ("" if self.packing else ", padded to the longest example"),
            f"gradient checkpointing {'on' if self.gradient_checkpointing else 'off'}",
            "fused chunked loss",
        ]
        if self.use_liger_kernel:
            parts.append("liger kernels")
        why = "; ".join(f"{k}: {v}" for k, v in self.reasons.items())
        return "fast path: " + " · ".join(parts) + (f" ({why})" if why else "")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "train_sampling_strategy": self.train_sampling_strategy}


def device_kind() -> str:
    """cuda | mps | cpu: where training runs."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _gpu_total_gb() -> float:
    """Memory of the GPU this process trains on (its local rank's), 0 when unknown."""
    from finetune.hardware import detect_hardware

    gpus = detect_hardware().gpus
    if not gpus:
        return 0.0
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    return gpus[rank if rank < len(gpus) else 0].total_gb


def _resolve_checkpointing(config: RunConfig, device: str, packing: bool, model: Any) -> tuple[bool, str]:
    if config.gradient_checkpointing is not None and config.gradient_checkpointing != "auto":
        return bool(config.gradient_checkpointing), "set in the config"
    if device != "cuda":
        return False, f"{device}: memory is not the limit"
    gpu_gb = _gpu_total_gb()
    try:
        from finetune.estimate import estimate_memory

        plain = config.replace(gradient_checkpointing=False, packing=packing)
        estimate = estimate_memory(model or config.model_name_or_path, plain, device="cuda")
    except Exception as exc:  # no shape (offline hub id, unknown architecture): keep the memory-safe choice
        return True, f"no memory estimate ({type(exc).__name__}), kept on"
    budget = GC_HEADROOM * gpu_gb
    if gpu_gb and estimate.total_gb <= budget:
        return False, f"estimate without it {estimate.total_gb:.1f} GB fits in {budget:.1f} GB"
    return True, f"estimate without it {estimate.total_gb:.1f} GB exceeds {budget:.1f} GB"


def resolve_fast_path(
    config: RunConfig,
    *,
    attn_implementation: str | None = None,
    device: str | None = None,
    model: Any = None,
) -> FastPath:
    """Decide the `auto` knobs of `config` for this machine.

    `attn_implementation`: the kernel the loaded model really uses (default: what
    `models.pick_attn_implementation` picks); `model`: a name, folder or ModelShape for the
    memory estimate (default: config.model_name_or_path)."""
    from finetune.models import pick_attn_implementation

    device = device or device_kind()
    attn = attn_implementation or pick_attn_implementation(config)
    flash = "flash" in attn
    reasons: dict[str, str] = {}

    if config.packing == "auto":
        packing = flash
        reasons["packing"] = f"{attn} {'has' if flash else 'lacks'} varlen (padding-free) kernels"
    else:
        packing = bool(config.packing)

    if config.group_by_length == "auto":
        several = config.gradient_accumulation_steps * _world_size() > 1
        sampler = "random" if packing or not several else "rebalance"
        if not packing and not several:
            reasons["batches"] = "one micro-batch per step: nothing to rebalance"
    else:
        sampler = "group" if config.group_by_length else "random"

    checkpointing, why = _resolve_checkpointing(config, device, packing, model)
    reasons["gradient checkpointing"] = why
    liger = (
        device == "cuda"
        and importlib.util.find_spec("liger_kernel") is not None
        and os.environ.get("FINETUNE_LIGER", "1") != "0"
    )
    return FastPath(
        device=device,
        attn_implementation=attn,
        packing=packing,
        padding_free=packing,
        sampler=sampler,
        gradient_checkpointing=checkpointing,
        use_liger_kernel=liger,
        reasons=reasons,
    )


def build_sft_config(
    config: RunConfig,
    output_dir: str,
    *,
    has_eval: bool,
    loss_mode: str,
    disable_tqdm: bool = True,
    extra: dict[str, Any] | None = None,
    fast: FastPath | None = None,
):
    """SFTConfig for a run. `loss_mode` is how the data was shaped (see training.choose_loss_mode):
    `assistant_only` | `completion_only` | `full_sequence`. `fast`: the resolved `auto` knobs
    (default: `resolve_fast_path(config)`)."""
    from trl import SFTConfig

    from finetune.models import cuda_available, resolve_precision

    fast = fast or resolve_fast_path(config)
    bf16, fp16 = resolve_precision(config)
    evaluate = has_eval and config.eval_steps > 0
    wants_best = evaluate and (config.load_best_model_at_end or config.early_stopping_patience > 0)
    save_steps = config.eval_steps if wants_best else config.save_steps
    kwargs: dict[str, Any] = dict(
        output_dir=output_dir,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        warmup_steps=config.warmup_steps if config.warmup_steps > 0 else config.warmup_ratio,
        lr_scheduler_type=config.lr_scheduler_type,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        optim=config.optim,
        bf16=bf16,
        fp16=fp16,
        use_cpu=not cuda_available(),
        # transformers 5.23 renamed gradient_checkpointing (a deprecated alias now, mirrored onto the new name)
        activation_checkpointing=fast.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if fast.gradient_checkpointing else None,
        max_length=config.max_length,
        packing=fast.packing,
        packing_strategy="bfd",
        padding_free=fast.padding_free,
        train_sampling_strategy=fast.train_sampling_strategy,
        use_liger_kernel=fast.use_liger_kernel,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=config.eval_steps if evaluate else None,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=config.save_total_limit or None,
        load_best_model_at_end=wants_best,
        metric_for_best_model="eval_loss" if wants_best else None,
        greater_is_better=False if wants_best else None,
        seed=config.seed,
        data_seed=config.seed,
        report_to=[] if config.report_to == "none" else [config.report_to],
        assistant_only_loss=loss_mode == "assistant_only",
        completion_only_loss=loss_mode == "completion_only",
        disable_tqdm=disable_tqdm,
        dataset_num_proc=None,
        model_init_kwargs=None,
    )
    kwargs.update(extra or {})
    if kwargs.get("use_liger_kernel"):
        import warnings

        with warnings.catch_warnings():  # TRL 1.16 deprecates the flag in favour of Hub kernels; it still works
            warnings.simplefilter("ignore", FutureWarning)
            return SFTConfig(**kwargs)
    return SFTConfig(**kwargs)


def build_trainer(
    config: RunConfig,
    *,
    model,
    tokenizer,
    train_rows: list[dict],
    eval_rows: list[dict],
    loss_mode: str,
    output_dir: str,
    callbacks: list | None = None,
    workspace=None,
    model_path: str | None = None,
    fast: FastPath | None = None,
    use_cache: bool | None = None,
    log=None,
):
    """The SFTTrainer of a run: fast path resolved for the loaded model, tokenized data from the cache
    when it was prepared before (else prepared by TRL and stored for the next run).

    `use_cache` None means on unless $FINETUNE_NO_DATA_CACHE is set; `log` gets one-line notes."""
    import warnings

    from datasets import Dataset
    from trl import SFTTrainer

    from finetune import datacache

    note = log or (lambda _line: None)
    attn = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if fast is None:
        fast = resolve_fast_path(config, attn_implementation=attn, model=model_path)
    note(fast.summary())
    args = build_sft_config(config, output_dir, has_eval=bool(eval_rows), loss_mode=loss_mode, fast=fast)
    if use_cache is None:
        use_cache = not os.environ.get("FINETUNE_NO_DATA_CACHE")
    key = datacache.cache_key(train_rows, eval_rows, tokenizer, args) if use_cache else None
    cached = datacache.load(key, workspace) if key else None
    if cached is not None:
        train_dataset, eval_dataset = cached
        datacache.mark_prepared(args)
        note(f"data: tokenized dataset from the cache ({key[:12]})")
    else:
        train_dataset = Dataset.from_list(train_rows)
        eval_dataset = Dataset.from_list(eval_rows) if eval_rows else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*use_liger_kernel.*", category=FutureWarning)
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            peft_config=build_lora_config(config),
            callbacks=callbacks,
        )
    if key and cached is None:
        stored = datacache.save(key, trainer.train_dataset, trainer.eval_dataset, workspace)
        if stored is not None:
            note(f"data: tokenized dataset cached ({key[:12]})")
    return trainer

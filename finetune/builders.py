"""Builders: our RunConfig -> the library objects (BitsAndBytesConfig, LoraConfig, SFTConfig).

Every translation from our knobs to a library's lives here, in one place.
"""

from __future__ import annotations

from typing import Any

from finetune.config import RunConfig

ATTENTION_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]


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


def build_sft_config(
    config: RunConfig,
    output_dir: str,
    *,
    has_eval: bool,
    loss_mode: str,
    disable_tqdm: bool = True,
    extra: dict[str, Any] | None = None,
):
    """SFTConfig for a run. `loss_mode` is how the data was shaped (see training.choose_loss_mode):
    `assistant_only` | `completion_only` | `full_sequence`."""
    from trl import SFTConfig

    from finetune.models import cuda_available, resolve_precision

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
        gradient_checkpointing=config.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        max_length=config.max_length,
        packing=config.packing,
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
    return SFTConfig(**kwargs)

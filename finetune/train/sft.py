"""Builders: a RunConfig and its Plan -> the library objects (BitsAndBytesConfig, LoraConfig,
SFTConfig, the data collator, SFTTrainer).

Every translation from our knobs to a library's lives here; no decision does (the `auto` knobs
are settled by `finetune.plan.planner`). What each planned piece becomes (TRL 1.16, transformers 5.2x):
- padding-free batches (plan.padding_free without packing): TRL's DataCollatorForLanguageModeling
  with `padding_free=True` flattens the micro-batch's examples into one row, `position_ids`
  restarting per example and no attention mask; flash kernels read the boundaries from
  `cu_seq_lens`, sdpa gets a block-diagonal mask that transformers builds from the position ids.
  The examples, their truncation and the loss normalization are those of padded batches (TRL
  truncates to max_length when it tokenizes), so the same thing is learned; SFTConfig keeps
  `padding_free=False` because TRL refuses it without packing while max_length is set.
- packing (bfd): TRL's own padding-free packing into max_length blocks.
- unpacked, padded batches: padded to their longest example, never to max_length, with
  transformers' `batch_rebalance` sampler (or `group_by_length`) as the plan says.
- the loss: TRL 1.16 always computes it through a fused, chunked LM head over the label
  positions only. Nothing to switch on here.
"""

from __future__ import annotations

import os
from typing import Any

from finetune.config import RunConfig, lora_targets
from finetune.data import has_generation_markers, to_prompt_completion
from finetune.plan.planner import Plan
from finetune.train import datacache


def lora_target_modules(config: RunConfig) -> str | list[str]:
    """PEFT's target_modules for the config: `config.lora_targets` is the one reading of the knob."""
    targets = lora_targets(config.lora_target_modules)
    return targets if targets == "all-linear" else list(targets)


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


def training_kwargs(config: RunConfig, plan: Plan, output_dir: str, *, has_eval: bool, disable_tqdm: bool = True):
    """The TrainingArguments every objective shares (schedule, precision, logging, checkpoints)."""
    evaluate = has_eval and config.eval_steps > 0
    wants_best = evaluate and (config.load_best_model_at_end or config.early_stopping_patience > 0)
    save_steps = config.eval_steps if wants_best else config.save_steps
    return dict(
        output_dir=output_dir,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=plan.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=plan.gradient_accumulation_steps,
        warmup_steps=config.warmup_steps if config.warmup_steps > 0 else config.warmup_ratio,
        lr_scheduler_type=config.lr_scheduler_type,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        optim=config.optim,
        bf16=plan.bf16,
        fp16=plan.fp16,
        use_cpu=plan.device != "cuda",
        # transformers 5.23 renamed gradient_checkpointing (a deprecated alias now, mirrored onto the new name)
        activation_checkpointing=plan.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if plan.gradient_checkpointing else None,
        max_length=config.max_length,
        train_sampling_strategy=plan.train_sampling_strategy,
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
        disable_tqdm=disable_tqdm,
        dataset_num_proc=None,
        model_init_kwargs=None,
        # a model sharded by transformers as it loads has no optimizer checkpoint (transformers refuses it)
        save_only_model=plan.shard_at_load,
    )


def build_sft_config(
    config: RunConfig,
    plan: Plan,
    output_dir: str,
    *,
    has_eval: bool,
    loss_mode: str,
    disable_tqdm: bool = True,
    extra: dict[str, Any] | None = None,
):
    """SFTConfig for a run as `plan` settles it. `loss_mode` is how the data was shaped (see
    choose_loss_mode): `assistant_only` | `completion_only` | `full_sequence`."""
    from trl import SFTConfig

    kwargs: dict[str, Any] = training_kwargs(config, plan, output_dir, has_eval=has_eval, disable_tqdm=disable_tqdm)
    kwargs.update(
        packing=plan.packing,
        packing_strategy="bfd",
        padding_free=plan.packing,  # padding-free without packing is our collator's (build_collator)
        use_liger_kernel=plan.use_liger_kernel,
        assistant_only_loss=loss_mode == "assistant_only",
        completion_only_loss=loss_mode == "completion_only",
    )
    kwargs.update(extra or {})
    if kwargs.get("use_liger_kernel"):
        import warnings

        with warnings.catch_warnings():  # TRL 1.16 deprecates the flag in favour of Hub kernels; it still works
            warnings.simplefilter("ignore", FutureWarning)
            return SFTConfig(**kwargs)
    return SFTConfig(**kwargs)


def build_collator(plan: Plan, tokenizer):
    """The padding-free collator when the plan flattens unpacked micro-batches; None leaves TRL's default."""
    if not plan.padding_free or plan.packing:
        return None
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)


def build_trainer(
    config: RunConfig,
    plan: Plan,
    *,
    model,
    tokenizer,
    train_rows: list[dict],
    eval_rows: list[dict],
    loss_mode: str,
    output_dir: str,
    callbacks: list | None = None,
    workspace=None,
    use_cache: bool | None = None,
    log=None,
    args=None,
):
    """The SFTTrainer of a run as `plan` settles it, tokenized data from the cache when it was
    prepared before (else prepared by TRL and stored for the next run).

    `args`: the run's SFTConfig when it was built before the model (it must exist before a ZeRO-3
    model loads, so that DeepSpeed partitions the weights as they load); else built here.
    `use_cache` None means on unless $FINETUNE_NO_DATA_CACHE is set; `log` gets one-line notes."""
    import warnings

    from datasets import Dataset
    from peft import PeftModel
    from trl import SFTTrainer

    note = log or (lambda _line: None)
    if args is None:
        args = build_sft_config(config, plan, output_dir, has_eval=bool(eval_rows), loss_mode=loss_mode)
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
            data_collator=build_collator(plan, tokenizer),
            # a model with a run's adapter attached (start_from_run) continues that adapter
            peft_config=None if isinstance(model, PeftModel) else build_lora_config(config),
            callbacks=callbacks,
        )
    if key and cached is None:
        stored = datacache.save(key, trainer.train_dataset, trainer.eval_dataset, workspace)
        if stored is not None:
            note(f"data: tokenized dataset cached ({key[:12]})")
    return trainer


def choose_loss_mode(rows: list[dict], tokenizer, train_on_prompt: bool) -> tuple[str, list[dict]]:
    """How the loss is masked, and the rows shaped for it.

    Conversations train on every assistant turn via the chat template's {% generation %}
    markers (models.load_tokenizer adds them to templates TRL knows); without markers, the
    last assistant turn becomes a completion so the prompt still carries no loss."""

    first = rows[0]
    if "text" in first or train_on_prompt:
        return "full_sequence", rows
    if "prompt" in first:
        return "completion_only", rows
    if has_generation_markers(tokenizer):
        return "assistant_only", rows
    return "completion_only", to_prompt_completion(rows)

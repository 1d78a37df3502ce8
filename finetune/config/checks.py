"""Every problem of a RunConfig, named by the field as the user writes it (RunConfig.validate gathers them in
one round): choices, ranges and consistency, the LoRA target parser (the one reading of lora_target_modules),
preference and GRPO settings, and what TrainingArguments, numpy and the LR scheduler would refuse later."""

from __future__ import annotations

import math
import re
from dataclasses import fields

from finetune.config.choices import (
    ATTENTION_MODULES,
    DEFAULT_NUMBER_LIMIT,
    MAX_SEED,
    MODULE_NAME_RE,
    NUMBER_LIMITS,
)
from finetune.errors import shown
from finetune.names import MAX_NAME_CHARS, name_problem
from finetune.reward_spec import reward_problems


def config_problems(config) -> list[str]:
    """Every choice, range and consistency problem of a config whose numbers are usable (RunConfig.validate)."""
    p: list[str] = []
    for f in fields(config):
        choices = f.metadata.get("choices")
        value = getattr(config, f.name)
        if choices and value not in choices:
            p.append(f"{f.name}: {shown(value)} is not one of {', '.join(map(str, choices))}")
    if not config.model_name_or_path.strip():
        p.append("model_name_or_path: must not be empty")
    if not (config.learning_rate > 0 and math.isfinite(config.learning_rate)):
        p.append(f"learning_rate: must be a positive number, got {config.learning_rate}")
    elif config.learning_rate > 0.1:
        p.append(f"learning_rate: {config.learning_rate} is far too high (typical: 1e-5 to 3e-4)")
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(config, name) < 1:
            p.append(f"{name}: must be at least 1, got {getattr(config, name)}")
    if config.max_length < 16:
        p.append(f"max_length: must be at least 16 tokens, got {config.max_length}")
    if config.max_steps == 0 or config.max_steps < -1:
        p.append(f"max_steps: must be -1 (use epochs) or a positive number, got {config.max_steps}")
    if config.max_steps == -1 and not config.num_train_epochs > 0:
        p.append(f"num_train_epochs: must be positive when max_steps is -1, got {config.num_train_epochs}")
    if config.method in ("lora", "dora"):
        if config.lora_r < 1:
            p.append(f"lora_r: must be at least 1, got {config.lora_r}")
        if config.lora_alpha <= 0:
            p.append(f"lora_alpha: must be positive, got {config.lora_alpha}")
        if not 0 <= config.lora_dropout < 1:
            p.append(f"lora_dropout: must be in [0, 1), got {config.lora_dropout}")
        p += lora_target_problems(config.lora_target_modules)
    if config.method == "full" and config.quantization != "none":
        p.append("quantization: full fine-tuning cannot train quantized weights; set quantization to none")
    if not 0 <= config.val_split < 1:
        p.append(f"val_split: must be in [0, 1), got {config.val_split}")
    if not 0 <= config.warmup_ratio < 1:
        p.append(f"warmup_ratio: must be in [0, 1), got {config.warmup_ratio}")
    for name in ("warmup_steps", "save_total_limit", "early_stopping_patience"):
        if getattr(config, name) < 0:
            p.append(f"{name}: must not be negative, got {getattr(config, name)}")
    for name in ("weight_decay", "max_grad_norm", "early_stopping_threshold"):
        if getattr(config, name) < 0:
            p.append(f"{name}: must not be negative, got {getattr(config, name)}")
    if config.logging_steps <= 0:
        p.append(f"logging_steps: must be positive, got {config.logging_steps}")
    if config.save_steps <= 0:
        p.append(f"save_steps: must be positive, got {config.save_steps}")
    if config.eval_steps < 0:
        p.append(f"eval_steps: must not be negative, got {config.eval_steps}")
    if config.price_per_hour < 0:
        p.append(f"price_per_hour: must not be negative, got {config.price_per_hour}")
    if config.bf16 is True and config.fp16 is True:
        p.append("bf16/fp16: choose one of them, not both")
    if (config.early_stopping_patience or config.load_best_model_at_end) and config.eval_steps == 0:
        p.append("early_stopping_patience/load_best_model_at_end need evaluation: set eval_steps > 0")
    if config.run_name and name_problem(config.run_name, max_chars=MAX_NAME_CHARS):
        p.append(name_problem(config.run_name, "run_name:", MAX_NAME_CHARS))
    for name in ("num_gpus", "num_machines"):
        if getattr(config, name) < 1:
            p.append(f"{name}: must be at least 1, got {getattr(config, name)}")
    if config.num_gpus >= 1 and config.num_machines >= 1 and config.num_gpus % config.num_machines:
        p.append(
            f"num_gpus: {config.num_gpus} GPUs cannot be spread evenly over {config.num_machines} machines "
            "(accelerate starts the same number of processes on each)"
        )
    p += preference_problems(config)
    p += grpo_problems(config)
    p += trainer_problems(config)
    return p


def preference_problems(config) -> list[str]:
    p = []
    if not (config.beta > 0):
        p.append(f"beta: must be positive, got {config.beta}")
    if config.start_from_run.strip():
        if config.method == "full":
            p.append("start_from_run: continues an adapter, so method must be lora or dora, not full")
        if len(config.start_from_run) > 4096:
            p.append("start_from_run: the run name or folder is too long")
    return p


def grpo_problems(config) -> list[str]:
    """GRPO's generation and reward settings (only checked for objective grpo)."""
    if config.objective != "grpo":
        return []
    p = reward_problems(config)
    if config.num_generations < 2:
        p.append(
            f"num_generations: GRPO compares each completion with its group: at least 2, got {config.num_generations}"
        )
    else:
        completions = config.per_device_train_batch_size * config.gradient_accumulation_steps * max(config.num_gpus, 1)
        if completions % config.num_generations:
            p.append(
                f"num_generations: per_device_train_batch_size x gradient_accumulation_steps"
                f"{' x num_gpus' if config.num_gpus > 1 else ''} = {completions} completions per step, which is not "
                f"a multiple of num_generations ({config.num_generations}); e.g. set per_device_train_batch_size to "
                f"{config.num_generations}"
            )
    if config.max_completion_length < 1:
        p.append(f"max_completion_length: must be at least 1 token, got {config.max_completion_length}")
    elif config.max_completion_length >= config.max_length:
        p.append(
            f"max_completion_length: {config.max_completion_length} leaves no room for the prompt within "
            f"max_length {config.max_length}: raise max_length or lower it"
        )
    if not 0 < config.temperature <= 10:
        p.append(f"temperature: GRPO samples its completions: must be above 0 (at most 10), got {config.temperature}")
    if config.kl_coef < 0:
        p.append(f"kl_coef: must not be negative, got {config.kl_coef}")
    elif config.kl_coef > 0 and config.method == "full":
        p.append("kl_coef: with method full the reference would be a second copy of the weights: use lora/dora, or 0")
    if config.sample_completions_steps < 0:
        p.append(f"sample_completions_steps: must not be negative, got {config.sample_completions_steps}")
    return p


def lora_targets(spec: str) -> str | tuple[str, ...]:
    """The one reading of `lora_target_modules`, for the estimate, the planner and PEFT alike:
    `all-linear` (any case, `-` or `_`) stays "all-linear" (PEFT's keyword); `attention` becomes the
    q/k/v/o projections; anything else is module names, split at commas or spaces, kept as typed
    (PEFT matches them case-sensitively)."""
    text = (spec or "").strip()
    keyword = text.lower().replace("_", "-")
    if keyword == "all-linear":
        return "all-linear"
    if keyword == "attention":
        return ATTENTION_MODULES
    parts = (part.strip("'\"") for part in re.split(r"[\s,]+", text.strip("[]")))
    return tuple(part for part in parts if part)


def lora_target_problems(spec: str) -> list[str]:
    """What is wrong with a `lora_target_modules` value before any model is read."""
    targets = lora_targets(spec)
    if not targets:
        return ["lora_target_modules: must not be empty (try all-linear)"]
    if targets == "all-linear":
        return []
    bad = [name for name in targets if not MODULE_NAME_RE.fullmatch(name)]
    if bad:
        return [f"lora_target_modules: {shown(bad[0])} is not a module name (e.g. q_proj), `attention` or `all-linear`"]
    return []


STEP_INTERVALS = ("logging_steps", "eval_steps", "save_steps")


def trainer_problems(config) -> list[str]:
    """What numpy, TrainingArguments and the LR scheduler refuse, in the config's own field names."""
    p = []
    if not 0 <= config.seed <= MAX_SEED:
        p.append(f"seed: must be a whole number from 0 to {MAX_SEED:,} (numpy's range), got {shown(config.seed)}")
    for name in STEP_INTERVALS:
        value = getattr(config, name)
        if isinstance(value, float) and value > 1 and not value.is_integer():
            p.append(
                f"{name}: {shown(value)} is neither a fraction of the run (below 1, e.g. 0.1 = every tenth of it) "
                "nor a whole number of steps"
            )
    evaluates = config.eval_steps > 0 and (config.val_split > 0 or bool(str(config.eval_dataset_path).strip()))
    if config.lr_scheduler_type == "reduce_lr_on_plateau" and not evaluates:
        p.append(
            "lr_scheduler_type: reduce_lr_on_plateau lowers the rate when eval_loss stops improving, so it needs "
            "evaluation: set eval_steps > 0 and val_split > 0 (or eval_dataset_path)"
        )
    return p


def out_of_range(config) -> list[str]:
    """Numbers that are not finite or beyond their field's bound (NUMBER_LIMITS)."""
    problems = []
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        limit = NUMBER_LIMITS.get(f.name, DEFAULT_NUMBER_LIMIT)
        if isinstance(value, float) and not math.isfinite(value):
            if f.name not in ("learning_rate",):  # learning_rate has its own message
                problems.append(f"{f.name}: must be a finite number, got {value}")
        elif abs(value) > limit:
            problems.append(f"{f.name}: {shown(value)} is out of range: at most {limit:,.0f}")
    return problems

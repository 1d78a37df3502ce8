"""The choice lists and number bounds of RunConfig's fields (no logic: the fields, the checks and the UI read them)."""

from __future__ import annotations

import re

# Upper bounds of the numeric fields: far above any real run, far below what breaks a 64-bit
# integer (JSON readers, torch, the page's status stream) or makes a run that never ends.
MAX_STEPS = 100_000_000
MAX_SEED = 2**32 - 1
NUMBER_LIMITS = {
    "max_steps": MAX_STEPS,
    "warmup_steps": MAX_STEPS,
    "logging_steps": MAX_STEPS,
    "eval_steps": MAX_STEPS,
    "save_steps": MAX_STEPS,
    "num_train_epochs": 1_000_000,
    "seed": MAX_SEED,
    "max_length": 2**24,
    "per_device_train_batch_size": 65_536,
    "per_device_eval_batch_size": 65_536,
    "gradient_accumulation_steps": 65_536,
    "lora_r": 65_536,
    "lora_alpha": 1_000_000,
    "save_total_limit": 1_000_000,
    "early_stopping_patience": 1_000_000,
    "num_gpus": 65_536,
    "num_machines": 65_536,
}
DEFAULT_NUMBER_LIMIT = 1e9

METHODS = ("lora", "dora", "full")
QUANTIZATIONS = ("4bit", "8bit", "none")
DATASET_FORMATS = (
    "auto",
    "messages",
    "sharegpt",
    "alpaca",
    "prompt_completion",
    "text",
    "preference",
    "unpaired_preference",
    "prompts",
)
OBJECTIVES = ("sft", "dpo", "orpo", "kto", "grpo")
PREFERENCE_OBJECTIVES = ("dpo", "orpo", "kto")
# TRL 1.16 DPOConfig.loss_type values that need no extra knob (the others want loss_weights etc.)
DPO_LOSS_TYPES = (
    "sigmoid",
    "sigmoid+sft",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sigmoid_norm",
)
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "warmup_stable_decay",
)
OPTIMIZERS = (
    "adamw_torch",
    "adamw_torch_fused",
    "adamw_8bit",
    "paged_adamw_8bit",
    "paged_adamw_32bit",
    "adafactor",
    "sgd",
)
STRATEGY_CHOICES = ("auto", "ddp", "fsdp", "zero2", "zero3")  # finetune.plan.parallel.STRATEGIES + auto
REPORT_TO = ("none", "tensorboard", "wandb", "trackio", "mlflow")  # the trackers TrainingArguments.report_to takes
ATTN_IMPLEMENTATIONS = ("auto", "flash_attention_2", "sdpa", "eager")
# what `lora_target_modules: attention` means (the Llama-style names every curated model uses)
ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MODULE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
AUTO_BOOL = ("auto", True, False)
PRECISION_CHOICES = AUTO_BOOL

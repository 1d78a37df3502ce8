"""RunConfig, every knob of a run (run_config.py), its choice lists (choices.py), its checks (checks.py) and
how settings are read (reading.py)."""

from finetune.config.checks import lora_target_problems, lora_targets
from finetune.config.choices import (
    ATTENTION_MODULES,
    DATASET_FORMATS,
    METHODS,
    NUMBER_LIMITS,
    OBJECTIVES,
    PREFERENCE_OBJECTIVES,
    QUANTIZATIONS,
    REPORT_TO,
    STRATEGY_CHOICES,
)
from finetune.config.reading import DuplicateKeyError, load_yaml_strict
from finetune.config.run_config import RunConfig, field_help

__all__ = [
    "ATTENTION_MODULES",
    "DATASET_FORMATS",
    "METHODS",
    "NUMBER_LIMITS",
    "OBJECTIVES",
    "PREFERENCE_OBJECTIVES",
    "QUANTIZATIONS",
    "REPORT_TO",
    "STRATEGY_CHOICES",
    "DuplicateKeyError",
    "RunConfig",
    "field_help",
    "load_yaml_strict",
    "lora_target_problems",
    "lora_targets",
]

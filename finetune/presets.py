"""Presets: partial RunConfigs in `presets/*.yaml`, one per hardware tier plus a few intents.

A preset file holds `description:` (one line), `settings:` (RunConfig field names and values,
only those it changes) and optionally `min_gpu_gb:` / `model_hint:`. Loading validates every
setting through `RunConfig.from_dict`, so a typo in a preset fails loudly with a suggestion.

Hardware tiers, smallest first: cpu, gpu-8gb, gpu-12gb, gpu-16gb, gpu-24gb, gpu-40-48gb,
gpu-80gb (`min_gpu_gb` is the GiB a tier is sized for; a card sold as "8 GB" reports ~7.8, so
`suggest_preset` allows 10% less). Intent presets: lora-r16-4bit-memory-efficient,
lora-r64-4bit-high-capacity, full-finetune. Check one against a model with
`finetune estimate --model Qwen/Qwen2.5-7B-Instruct --preset gpu-12gb`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from finetune.config import RunConfig, load_yaml_strict
from finetune.errors import ConfigError, shown
from finetune.files import shipped_dir
from finetune.names import MAX_PRESET_CHARS, name_problem

PRESETS_DIR = shipped_dir("presets")
TIER_ORDER = ("cpu", "gpu-8gb", "gpu-12gb", "gpu-16gb", "gpu-24gb", "gpu-40-48gb", "gpu-80gb")
# a card sold as "8 GB" reports ~7.6-7.9 GiB, a T4 14.7 GiB, an 80 GB H100 79.1 GiB
MEMORY_TOLERANCE = 0.9
MPS_MAX_TIER = "gpu-24gb"
_KEYS = {"description", "settings", "min_gpu_gb", "model_hint"}


@dataclass
class Preset:
    """One preset file, parsed and validated."""

    name: str
    description: str
    settings: dict[str, Any] = field(default_factory=dict)
    min_gpu_gb: float | None = None
    model_hint: str = ""

    @property
    def is_tier(self) -> bool:
        return self.name in TIER_ORDER


def _check_name(name: str) -> str:
    """Refuse names that could leave the presets folder (`../x`, slashes, absolute paths)."""
    problem = name_problem(name, "preset name", MAX_PRESET_CHARS)
    if problem:
        raise ConfigError([problem])
    return name


def _available(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


def _parse(name: str, path: Path) -> Preset:
    """Read and validate one preset file; every problem is reported with the file name."""
    try:
        data = load_yaml_strict(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError([f"preset '{name}' ({path}) cannot be read: {exc}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"preset '{name}' ({path}) must be a mapping with description and settings"])
    problems = [f"preset '{name}': unknown key '{key}'" for key in data if key not in _KEYS]
    description = data.get("description")
    if not isinstance(description, str) or not description.strip():
        problems.append(f"preset '{name}': needs a one-line description")
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        problems.append(f"preset '{name}': settings must be a mapping of RunConfig fields")
        settings = {}
    try:
        RunConfig.from_dict(settings)
    except ConfigError as exc:
        problems += [f"preset '{name}': {p}" for p in exc.problems]
    min_gb = data.get("min_gpu_gb")
    if min_gb is not None and (isinstance(min_gb, bool) or not isinstance(min_gb, (int, float))):
        problems.append(f"preset '{name}': min_gpu_gb must be a number")
    if problems:
        raise ConfigError(problems)
    return Preset(
        name=name,
        description=" ".join(description.split()),
        settings=dict(settings),
        min_gpu_gb=None if min_gb is None else float(min_gb),
        model_hint=str(data.get("model_hint") or ""),
    )


def get_preset(name: str, *, directory: Path | None = None) -> Preset:
    """The parsed preset `name`; unknown names raise ConfigError listing the available ones."""
    directory = directory or PRESETS_DIR
    _check_name(name)
    path = directory / f"{name}.yaml"
    if not path.is_file():
        available = ", ".join(_available(directory)) or "none"
        raise ConfigError([f"unknown preset {shown(name)}; available presets: {available}"])
    return _parse(name, path)


def list_presets(*, directory: Path | None = None) -> list[Preset]:
    """Every preset: hardware tiers smallest first, then the others by name."""
    directory = directory or PRESETS_DIR
    presets = [get_preset(name, directory=directory) for name in _available(directory)]
    order = {name: i for i, name in enumerate(TIER_ORDER)}
    return sorted(presets, key=lambda p: (order.get(p.name, len(order)), p.name))


def load_preset(name: str, *, directory: Path | None = None) -> dict[str, Any]:
    """The settings of preset `name` (a partial RunConfig as a dict)."""
    return dict(get_preset(name, directory=directory).settings)


def apply_preset(config: RunConfig, name: str) -> RunConfig:
    """`config` with the preset's settings on top (everything else unchanged)."""
    return config.replace(**load_preset(name))


def tier_memory(name: str) -> float:
    """The GPU memory (GiB) a tier preset is sized for; 0 for cpu."""
    preset = get_preset(name)
    return preset.min_gpu_gb or 0.0


def tier_for_memory(memory_gb: float, *, max_tier: str | None = None) -> str:
    """Largest GPU tier whose memory (less 10% tolerance) fits `memory_gb`; the smallest GPU tier below that."""
    tiers = TIER_ORDER[1 : TIER_ORDER.index(max_tier) + 1] if max_tier else TIER_ORDER[1:]
    best = tiers[0]
    for name in tiers:
        if tier_memory(name) * MEMORY_TOLERANCE <= memory_gb:
            best = name
    return best


def suggest_preset(hw) -> str:
    """Preset name for detected hardware (a `finetune.plan.hardware.HardwareInfo`).

    CUDA: the largest tier that fits GPU 0 (a GPU smaller than every tier still gets the
    8 GB tier: a small GPU beats the CPU). MPS: by usable unified memory, at most the 24 GB
    tier, `cpu` below 8 GB. Otherwise `cpu`.
    """
    memory = hw.gpus[0].total_gb if getattr(hw, "gpus", None) else 0.0
    if hw.device == "cuda" and memory > 0:
        return tier_for_memory(memory)
    if hw.device == "mps" and memory >= tier_memory("gpu-8gb") * MEMORY_TOLERANCE:
        return tier_for_memory(memory, max_tier=MPS_MAX_TIER)
    return "cpu"


def smaller_tiers(name: str) -> list[str]:
    """Tier presets below `name`, nearest first (for out-of-memory advice)."""
    if name not in TIER_ORDER:
        return []
    return list(reversed(TIER_ORDER[: TIER_ORDER.index(name)]))

"""Presets: every shipped file loads and validates; names cannot escape; tier suggestion."""

from __future__ import annotations

from dataclasses import fields

import pytest

from finetune.config import RunConfig
from finetune.errors import ConfigError
from finetune.plan.hardware import GpuInfo, HardwareInfo
from finetune.presets import (
    PRESETS_DIR,
    TIER_ORDER,
    apply_preset,
    list_presets,
    load_preset,
    smaller_tiers,
    suggest_preset,
)

EXPECTED = set(TIER_ORDER) | {"lora-r16-4bit-memory-efficient", "lora-r64-4bit-high-capacity", "full-finetune"}
KNOWN_FIELDS = {f.name for f in fields(RunConfig)}


def test_every_expected_preset_is_shipped():
    names = {p.name for p in list_presets()}
    assert EXPECTED <= names
    assert PRESETS_DIR.is_dir()


@pytest.mark.parametrize("preset", list_presets(), ids=lambda p: p.name)
def test_preset_loads_and_validates(preset):
    assert preset.description and "\n" not in preset.description
    assert preset.settings, "a preset must set something"
    assert set(preset.settings) <= KNOWN_FIELDS
    config = RunConfig().replace(**preset.settings).check()
    for key, value in preset.settings.items():
        assert getattr(config, key) == value


def test_tiers_come_first_in_order_with_growing_memory():
    presets = list_presets()
    assert [p.name for p in presets[: len(TIER_ORDER)]] == list(TIER_ORDER)
    memory = [p.min_gpu_gb or 0 for p in presets[: len(TIER_ORDER)]]
    assert memory == sorted(memory)


def test_load_and_apply_preset():
    settings = load_preset("gpu-12gb")
    config = apply_preset(RunConfig(model_name_or_path="demo", run_name="keep-me"), "gpu-12gb")
    assert config.run_name == "keep-me"
    assert config.per_device_train_batch_size == settings["per_device_train_batch_size"]
    assert config.quantization == "4bit"


def test_cpu_preset_is_a_quick_demo_run():
    s = load_preset("cpu")
    assert s["quantization"] == "4bit" and s["gradient_checkpointing"] is False
    assert s["max_length"] <= 256 and s["per_device_train_batch_size"] >= 4
    train_rows = int(110 * (1 - RunConfig().val_split))
    steps = (
        -(-train_rows // s["per_device_train_batch_size"]) * s["num_train_epochs"] // s["gradient_accumulation_steps"]
    )
    assert 60 <= steps <= 160  # 156: about 6 s on an idle 2-core CPU (tests/test_demo.py checks what it learns)
    assert s["learning_rate"] >= 1e-3


def test_unknown_preset_lists_available():
    with pytest.raises(ConfigError) as info:
        load_preset("gpu-9000gb")
    assert "gpu-12gb" in str(info.value) and "cpu" in str(info.value)


@pytest.mark.parametrize("name", ["../config", "..", "/etc/passwd", "a/b", "", "x..y", ".hidden"])
def test_preset_names_cannot_escape(name):
    with pytest.raises(ConfigError):
        load_preset(name)


def test_bad_preset_file_is_reported(tmp_path):
    (tmp_path / "typo.yaml").write_text("description: x\nsettings:\n  lora_rank: 8\n")
    (tmp_path / "nodesc.yaml").write_text("settings:\n  lora_r: 8\n")
    with pytest.raises(ConfigError, match="did you mean 'lora_r'"):
        load_preset("typo", directory=tmp_path)
    with pytest.raises(ConfigError, match="description"):
        load_preset("nodesc", directory=tmp_path)


def _cuda(total_gb: float) -> HardwareInfo:
    gpu = GpuInfo(index=0, name="Fake GPU", total_gb=total_gb, free_gb=total_gb, bf16=True, compute_capability=(8, 0))
    return HardwareInfo(device="cuda", gpus=[gpu], cpu_count=8, ram_gb=64)


@pytest.mark.parametrize(
    "total_gb, expected",
    [
        (7.6, "gpu-8gb"),  # an "8 GB" card as torch reports it
        (8.0, "gpu-8gb"),
        (11.7, "gpu-12gb"),
        (12.0, "gpu-12gb"),
        (14.7, "gpu-16gb"),  # T4
        (16.0, "gpu-16gb"),
        (23.6, "gpu-24gb"),
        (24.0, "gpu-24gb"),
        (39.4, "gpu-40-48gb"),  # A100 40GB
        (48.0, "gpu-40-48gb"),
        (79.1, "gpu-80gb"),  # H100 80GB
        (80.0, "gpu-80gb"),
        (139.8, "gpu-80gb"),  # H200
        (4.0, "gpu-8gb"),  # smaller than every tier: still the smallest GPU tier
    ],
)
def test_suggest_preset_for_cuda(total_gb, expected):
    assert suggest_preset(_cuda(total_gb)) == expected


def test_suggest_preset_cpu_and_mps():
    assert suggest_preset(HardwareInfo(device="cpu", cpu_count=2, ram_gb=16)) == "cpu"
    mps = GpuInfo(index=0, name="Apple MPS", total_gb=5.0, free_gb=5.0, bf16=True)
    assert suggest_preset(HardwareInfo(device="mps", gpus=[mps], cpu_count=8, ram_gb=8)) == "cpu"
    big = GpuInfo(index=0, name="Apple MPS", total_gb=96.0, free_gb=96.0, bf16=True)
    assert suggest_preset(HardwareInfo(device="mps", gpus=[big], cpu_count=12, ram_gb=128)) == "gpu-24gb"


def test_smaller_tiers():
    assert smaller_tiers("gpu-24gb") == ["gpu-16gb", "gpu-12gb", "gpu-8gb", "cpu"]
    assert smaller_tiers("cpu") == []
    assert smaller_tiers("full-finetune") == []


REFERENCE_MODEL = {
    "gpu-8gb": "qwen3-4b",
    "gpu-12gb": "llama-3.1-8b",
    "gpu-16gb": "llama-3.1-8b",
    "gpu-24gb": "llama-3.1-8b",
    "gpu-40-48gb": "llama-3.1-8b",
    "gpu-80gb": "llama-3.1-8b",
    "lora-r16-4bit-memory-efficient": "qwen3-4b",
    "lora-r64-4bit-high-capacity": "qwen3-4b",
    "full-finetune": "llama-3.2-1b",
}


@pytest.mark.parametrize("name, model", sorted(REFERENCE_MODEL.items()))
def test_gpu_presets_fit_their_memory(name, model):
    """Each GPU preset, with a model its hint names, fits the memory it is sized for (as cards report it)."""
    from finetune.plan.hardware import Machine
    from finetune.plan.planner import estimate as plan_estimate
    from finetune.presets import get_preset

    preset = get_preset(name)
    gpu_gb = preset.min_gpu_gb * 0.95
    _, estimate = plan_estimate(apply_preset(RunConfig(), name), Machine.virtual("cuda", gpu_gb), model=model)
    assert estimate.verdict(gpu_gb) == "fits", (estimate.total_gb, gpu_gb)

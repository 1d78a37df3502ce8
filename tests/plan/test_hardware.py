"""Hardware detection: works (and never raises) on this CPU-only machine; GPU paths via fakes."""

from __future__ import annotations

import types

import pytest

from finetune.plan import hardware
from finetune.plan.hardware import GpuInfo, HardwareInfo, detect_hardware


def test_detect_on_this_machine_is_sane():
    hw = detect_hardware()
    assert hw.device in ("cuda", "mps", "cpu")
    assert hw.cpu_count >= 1
    assert 0.1 < hw.ram_gb < 100_000
    assert hw.torch_version
    if hw.device == "cpu":
        assert hw.gpus == [] and hw.accelerator_gb == 0
    summary = hw.summary()
    assert "\n" not in summary and "CPU" in summary


def test_cpu_summary_mentions_cores_and_ram():
    hw = HardwareInfo(device="cpu", cpu_count=2, ram_gb=23.4)
    assert hw.summary() == "CPU only (no CUDA or MPS GPU found): 2 CPU cores, 23.4 GB RAM"


def test_gpu_summary():
    gpu = GpuInfo(0, "NVIDIA H100 80GB HBM3", 79.2, 78.6, True, (9, 0), True)
    hw = HardwareInfo(device="cuda", gpus=[gpu], cpu_count=16, ram_gb=128)
    text = hw.summary()
    assert text.startswith("CUDA: NVIDIA H100 80GB HBM3 (79.2 GB, 78.6 GB free, bf16, sm90, flash-attn)")
    assert hw.accelerator_gb == 79.2


def _fake_torch(capability=(8, 6), total=24 * 1024**3, free=20 * 1024**3, count=1):
    """Just the torch.cuda surface detect_hardware reads."""
    props = types.SimpleNamespace(name="Fake RTX", total_memory=total)
    cuda = types.SimpleNamespace(
        is_available=lambda: True,
        device_count=lambda: count,
        get_device_properties=lambda i: props,
        get_device_capability=lambda i: capability,
        mem_get_info=lambda i: (free, total),
        current_device=lambda: 0,
        is_bf16_supported=lambda: capability >= (8, 0),
    )
    return types.SimpleNamespace(__version__="fake", cuda=cuda, backends=types.SimpleNamespace())


@pytest.mark.parametrize(
    "capability, flash_installed, bf16, eligible",
    [
        ((8, 6), True, True, True),
        ((8, 6), False, True, False),
        ((7, 5), True, False, False),
    ],
)
def test_cuda_path_with_fake_torch(monkeypatch, capability, flash_installed, bf16, eligible):
    import sys

    monkeypatch.setitem(sys.modules, "torch", _fake_torch(capability=capability, count=2))
    monkeypatch.setattr(hardware, "flash_attn_installed", lambda: flash_installed)
    hw = detect_hardware()
    assert hw.device == "cuda" and len(hw.gpus) == 2
    gpu = hw.gpus[0]
    assert gpu.total_gb == pytest.approx(24) and gpu.free_gb == pytest.approx(20)
    assert gpu.bf16 is bf16 and gpu.flash_attention_eligible is eligible
    assert gpu.compute_capability == capability
    assert "2 x" in hw.summary()


def test_broken_cuda_reads_as_cpu(monkeypatch):
    import sys

    fake = _fake_torch()

    def boom(i):
        raise RuntimeError("driver too old")

    fake.cuda.get_device_properties = boom
    monkeypatch.setitem(sys.modules, "torch", fake)
    hw = detect_hardware()
    assert hw.device == "cpu" and hw.gpus == []

"""What a GPU can do at best: dense tensor-core peaks from the vendors' own figures, each with its source,
the efficiency a fine-tuning run reaches on it (measured in bench/results/ where such a file exists,
else a stated default marked "not yet measured on this GPU"), and Hugging Face Spaces' hardware prices.

Peaks are dense (no 2:4 sparsity), in the precision the plan trains with on that GPU: bf16 with FP32
accumulation where the GPU has bf16, fp16 on a T4 (no bf16), fp32 on Apple silicon (Apple publishes
only FP32 figures). No figure here was measured by this project.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

# The default share of the peak a LoRA/QLoRA run reaches when bench/results/ holds no measurement for
# the GPU. A stated default, NOT a measurement: it is the project's own MFU goal for an 8B QLoRA run
# (bench/README.md); `bash bench/gpu_check.sh` measures the real figure (engine_mfu) on a GPU.
DEFAULT_GPU_EFFICIENCY = 0.25
NOT_MEASURED = "not yet measured on this GPU"
RESULTS_DIR = Path(__file__).resolve().parents[2] / "bench" / "results"  # a checkout's measured results


@dataclass(frozen=True)
class GpuPeak:
    """One GPU model: the substring that names it, its dense peak and where that figure comes from."""

    key: str  # matched case-insensitively against the device name (the first match in PEAKS wins)
    tflops: float
    precision: str
    source: str


NVIDIA_H100 = "NVIDIA H100 Tensor Core GPU datasheet (BF16 Tensor Core, the dense half of the sparsity figure)"
PEAKS: tuple[GpuPeak, ...] = (
    GpuPeak("B200", 2250.0, "bf16", "NVIDIA HGX B200 datasheet (FP16/BF16 Tensor Core per GPU, dense)"),
    GpuPeak("GH200", 989.0, "bf16", "NVIDIA GH200 Grace Hopper datasheet (BF16 Tensor Core, dense)"),
    GpuPeak("H200 NVL", 835.0, "bf16", "NVIDIA H200 Tensor Core GPU datasheet (H200 NVL, BF16, dense)"),
    GpuPeak("H200", 989.0, "bf16", "NVIDIA H200 Tensor Core GPU datasheet (H200 SXM, BF16 1,979 sparse / 2)"),
    GpuPeak("H100 NVL", 835.0, "bf16", NVIDIA_H100 + ", H100 NVL"),
    GpuPeak("H100 PCIe", 756.0, "bf16", NVIDIA_H100 + ", H100 PCIe"),
    GpuPeak("H100", 989.0, "bf16", NVIDIA_H100 + ", H100 SXM: 1,979 sparse / 2"),
    GpuPeak("H800", 989.0, "bf16", "NVIDIA H800 (export H100 SXM): the H100 SXM's BF16 figure"),
    GpuPeak("A800", 312.0, "bf16", "NVIDIA A800 (export A100): the A100's BF16 figure"),
    GpuPeak("A100", 312.0, "bf16", "NVIDIA A100 Tensor Core GPU datasheet (BF16 Tensor Core 312, 624 sparse)"),
    GpuPeak("L40S", 362.0, "bf16", "NVIDIA L40S datasheet (BF16 Tensor Core 362.05, 733 sparse)"),
    GpuPeak("L40", 181.0, "bf16", "NVIDIA L40 datasheet (BF16 Tensor Core 181.05, 362.1 sparse)"),
    GpuPeak("L4", 121.0, "bf16", "NVIDIA L4 Tensor Core GPU datasheet (BF16 Tensor Core 242 sparse / 2)"),
    GpuPeak(
        "A10G",
        70.0,
        "bf16",
        "no NVIDIA or AWS datasheet: Baseten, 'NVIDIA A10 vs A10G for ML model inference' (tensor compute)",
    ),
    GpuPeak("A10", 125.0, "bf16", "NVIDIA A10 Tensor Core GPU datasheet (BF16 Tensor Core 125, 250 sparse)"),
    GpuPeak("A6000", 154.8, "bf16", "NVIDIA RTX A6000 datasheet (BF16 Tensor 309.7 sparse / 2)"),
    GpuPeak("V100", 125.0, "fp16", "NVIDIA V100 datasheet (SXM2 Tensor Performance 125 TFLOPS, fp16; no bf16)"),
    GpuPeak("T4", 65.0, "fp16", "NVIDIA T4 Tensor Core GPU datasheet (mixed-precision FP16/FP32; no bf16)"),
    GpuPeak(
        "RTX 4090",
        165.2,
        "bf16",
        "NVIDIA Ada Lovelace architecture whitepaper (RTX 4090, FP16/BF16 Tensor with FP32 accumulate, dense)",
    ),
    GpuPeak(
        "RTX 3090",
        71.0,
        "bf16",
        "NVIDIA Ampere GA102 GPU architecture whitepaper (RTX 3090, FP16/BF16 Tensor with FP32 accumulate, dense)",
    ),
    # Apple publishes FP32 GPU throughput only, for the M1 and M2 families (newsroom releases of each chip)
    GpuPeak("M1 Ultra", 21.0, "fp32", "Apple newsroom, M1 Ultra (2022-03-08): 21 TFLOPS FP32"),
    GpuPeak("M1 Max", 10.4, "fp32", "Apple newsroom, M1 Pro and M1 Max (2021-10-18): 10.4 TFLOPS FP32"),
    GpuPeak("M1 Pro", 5.2, "fp32", "Apple newsroom, M1 Pro and M1 Max (2021-10-18): 5.2 TFLOPS FP32"),
    GpuPeak("M1", 2.6, "fp32", "Apple newsroom, M1 (2020-11-10): 2.6 TFLOPS FP32"),
    GpuPeak("M2 Ultra", 27.2, "fp32", "Apple newsroom, M2 Ultra (2023-06-05): 27.2 TFLOPS FP32"),
    GpuPeak("M2 Max", 13.6, "fp32", "Apple newsroom, M2 Pro and M2 Max (2023-01-17): 13.6 TFLOPS FP32"),
    GpuPeak("M2 Pro", 6.8, "fp32", "Apple newsroom, M2 Pro and M2 Max (2023-01-17): 6.8 TFLOPS FP32"),
    GpuPeak("M2", 3.6, "fp32", "Apple newsroom, M2 (2022-06-06): 3.6 TFLOPS FP32"),
)


def peak_for(name: str) -> GpuPeak | None:
    """The table's entry for a device name (e.g. `NVIDIA H100 80GB HBM3`, `Apple M2 Pro`), else None."""
    text = (name or "").lower()
    for peak in PEAKS:
        if peak.key.lower() in text:
            return peak
    return None


def apple_chip() -> str:
    """The Apple silicon chip's name (e.g. `Apple M2 Pro`) on macOS, else ''. torch names it only `MPS`."""
    import platform
    import subprocess

    if platform.system() != "Darwin":
        return ""
    try:
        out = subprocess.run(
            ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def device_name(machine) -> str:
    """The name the peak table is searched with: the CUDA device's, or the Apple chip's for MPS."""
    if machine.device == "mps":
        return apple_chip() or machine.gpu_name or "Apple MPS"
    return machine.gpu_name or ""


@dataclass(frozen=True)
class Efficiency:
    """The share of the peak a run reaches, and where that number comes from."""

    value: float
    measured: bool
    source: str


def measured_efficiency(gpu_name: str, results_dir: Path | None = None) -> Efficiency | None:
    """The median `engine_mfu` of the `finetune bench --json` results in bench/results/ (a checkout) whose
    machine names this GPU, or None: the planner never guesses a measured value."""
    peak = peak_for(gpu_name)
    folder = results_dir or RESULTS_DIR
    if peak is None or not folder.is_dir():
        return None
    found: list[tuple[float, str]] = []
    for path in sorted(folder.rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or not isinstance(data.get("engine_mfu"), (int, float)):
            continue
        machine = data.get("machine") if isinstance(data.get("machine"), dict) else {}
        if peak_for(str(machine.get("summary") or machine.get("gpu") or "")) == peak and data["engine_mfu"] > 0:
            found.append((float(data["engine_mfu"]), path.name))
    if not found:
        return None
    value = statistics.median(v for v, _ in found)
    files = ", ".join(sorted({name for _, name in found}))
    return Efficiency(value, True, f"measured MFU {value:.1%} ({len(found)} result(s): bench/results/{files})")


def efficiency_for(gpu_name: str) -> Efficiency:
    """Measured where bench/results/ has it; else DEFAULT_GPU_EFFICIENCY, said to be unmeasured."""
    measured = measured_efficiency(gpu_name)
    if measured is not None:
        return measured
    return Efficiency(
        DEFAULT_GPU_EFFICIENCY,
        False,
        f"a stated default of {DEFAULT_GPU_EFFICIENCY:.0%} MFU, {NOT_MEASURED} (bench/gpu_check.sh measures it)",
    )


# --- Hugging Face Spaces hardware, for the price presets ------------------------------------------------
SPACES_PRICES_SOURCE = "https://huggingface.co/docs/hub/spaces-gpus (hourly prices as read in 2026-12; they change)"


@dataclass(frozen=True)
class SpaceHardware:
    flavor: str  # the Space hardware id (huggingface_hub's SpaceHardware)
    label: str
    price_per_hour: float
    gpu_key: str = ""  # the PEAKS key of its GPU ('' for CPU flavors)
    gpus: int = 0
    vcpus: int = 0


SPACE_HARDWARE: tuple[SpaceHardware, ...] = (
    SpaceHardware("cpu-basic", "CPU basic (2 vCPU)", 0.0, vcpus=2),
    SpaceHardware("cpu-upgrade", "CPU upgrade (8 vCPU)", 0.03, vcpus=8),
    SpaceHardware("t4-small", "Nvidia T4 small", 0.40, "T4", 1, 4),
    SpaceHardware("t4-medium", "Nvidia T4 medium", 0.60, "T4", 1, 8),
    SpaceHardware("l4x1", "1x Nvidia L4", 0.80, "L4", 1, 8),
    SpaceHardware("l4x4", "4x Nvidia L4", 3.80, "L4", 4, 48),
    SpaceHardware("l40sx1", "1x Nvidia L40S", 1.80, "L40S", 1, 8),
    SpaceHardware("l40sx4", "4x Nvidia L40S", 8.30, "L40S", 4, 48),
    SpaceHardware("l40sx8", "8x Nvidia L40S", 23.50, "L40S", 8, 192),
    SpaceHardware("a10g-small", "Nvidia A10G small", 1.00, "A10G", 1, 4),
    SpaceHardware("a10g-large", "Nvidia A10G large", 1.50, "A10G", 1, 12),
    SpaceHardware("a10g-largex2", "2x Nvidia A10G large", 3.00, "A10G", 2, 24),
    SpaceHardware("a10g-largex4", "4x Nvidia A10G large", 5.00, "A10G", 4, 48),
    SpaceHardware("a100-large", "Nvidia A100 large", 4.00, "A100", 1, 12),
)


def on_space() -> bool:
    """True inside a Hugging Face Space (the Spaces runtime sets SPACE_ID)."""
    return bool(os.environ.get("SPACE_ID"))


def guess_space_hardware(gpu_name: str, gpu_count: int, cpu_count: int) -> SpaceHardware | None:
    """The Space flavor that matches this machine (the runtime does not name its flavor): the same GPU model
    and count, the vCPU count closest; CPU flavors for a machine without a GPU. None when none matches."""
    peak = peak_for(gpu_name) if gpu_count else None
    key = peak.key if peak else ""
    if gpu_count and not key:
        return None
    candidates = [hw for hw in SPACE_HARDWARE if hw.gpu_key == key and hw.gpus == gpu_count]
    if not candidates:
        return None
    return min(candidates, key=lambda hw: abs(hw.vcpus - cpu_count))

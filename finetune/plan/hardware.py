"""What this machine can train on: CUDA GPUs (memory, bf16, compute capability,
FlashAttention eligibility), Apple MPS, or CPU only, plus CPU cores and RAM.

Detection never raises: a broken driver or a missing library reads as "no GPU", because the
app must still start and offer the CPU path. "GB" here is GiB (2**30 bytes), as torch and
nvidia-smi report memory.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field

from finetune.plan.parallel import launched_strategy, sharded_loading

GiB = 1024**3


@dataclass
class GpuInfo:
    """One accelerator as the trainer sees it."""

    index: int
    name: str
    total_gb: float
    free_gb: float
    bf16: bool
    compute_capability: tuple[int, int] | None = None
    flash_attention_eligible: bool = False

    def summary(self) -> str:
        """e.g. `NVIDIA H100 80GB HBM3 (79.2 GB, 78.6 GB free, bf16, sm90, flash-attn)`."""
        parts = [f"{self.total_gb:.1f} GB", f"{self.free_gb:.1f} GB free"]
        parts.append("bf16" if self.bf16 else "no bf16")
        if self.compute_capability:
            parts.append(f"sm{self.compute_capability[0]}{self.compute_capability[1]}")
        if self.flash_attention_eligible:
            parts.append("flash-attn")
        return f"{self.name} ({', '.join(parts)})"


@dataclass
class HardwareInfo:
    """The whole machine: device kind, accelerators, CPU cores and RAM."""

    device: str  # "cuda" | "mps" | "cpu"
    gpus: list[GpuInfo] = field(default_factory=list)
    cpu_count: int = 1
    ram_gb: float = 0.0
    torch_version: str = ""

    @property
    def accelerator_gb(self) -> float:
        """Memory of the device training runs on (GPU 0; MPS: its working-set limit); 0 on CPU."""
        return self.gpus[0].total_gb if self.gpus else 0.0

    def summary(self) -> str:
        """One line for the UI header and `finetune doctor`-style output."""
        host = f"{self.cpu_count} CPU cores, {self.ram_gb:.1f} GB RAM"
        if self.device == "cuda" and self.gpus:
            names = "; ".join(gpu.summary() for gpu in self.gpus)
            count = f"{len(self.gpus)} x " if len(self.gpus) > 1 else ""
            return f"CUDA: {count}{names} · {host}"
        if self.device == "mps" and self.gpus:
            return f"Apple MPS: {self.gpus[0].total_gb:.1f} GB usable unified memory · {host}"
        return f"CPU only (no CUDA or MPS GPU found): {host}"


def _ram_gb() -> float:
    """Total physical memory, via psutil when present, else sysconf."""
    try:
        import psutil

        return psutil.virtual_memory().total / GiB
    except Exception:
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB
        except (ValueError, OSError, AttributeError):
            return 0.0


def _cpu_count() -> int:
    """Cores this process may use (affinity-aware on Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def flash_attn_installed() -> bool:
    """Whether the flash_attn package can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("flash_attn") is not None
    except (ImportError, ValueError):
        return False


def _cuda_gpu(torch, index: int, flash: bool) -> GpuInfo:
    """Read one CUDA device; free memory from mem_get_info (creates a context on that device)."""
    props = torch.cuda.get_device_properties(index)
    capability = tuple(torch.cuda.get_device_capability(index))
    total = props.total_memory
    try:
        free, total = torch.cuda.mem_get_info(index)
    except Exception:
        free = total
    bf16 = capability >= (8, 0)
    if index == torch.cuda.current_device():
        try:
            bf16 = bool(torch.cuda.is_bf16_supported())
        except Exception:
            pass
    return GpuInfo(
        index=index,
        name=props.name,
        total_gb=total / GiB,
        free_gb=free / GiB,
        bf16=bf16,
        compute_capability=(int(capability[0]), int(capability[1])),
        flash_attention_eligible=flash and capability >= (8, 0),
    )


def _mps_gpu(torch, ram_gb: float) -> GpuInfo:
    """Apple unified memory: the MPS working-set limit when torch tells it, else 3/4 of RAM."""
    total = ram_gb * 0.75
    try:
        total = torch.mps.recommended_max_memory() / GiB
    except Exception:
        pass
    used = 0.0
    try:
        used = torch.mps.driver_allocated_memory() / GiB
    except Exception:
        pass
    return GpuInfo(index=0, name="Apple MPS", total_gb=total, free_gb=max(0.0, total - used), bf16=True)


def detect_hardware() -> HardwareInfo:
    """Detect CUDA GPUs, else MPS, else CPU; never raises."""
    info = HardwareInfo(device="cpu", cpu_count=_cpu_count(), ram_gb=_ram_gb())
    try:
        import torch
    except Exception:
        return info
    info.torch_version = str(torch.__version__)
    try:
        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            flash = flash_attn_installed()
            info.gpus = [_cuda_gpu(torch, i, flash) for i in range(torch.cuda.device_count())]
            info.device = "cuda"
            return info
    except Exception:
        info.gpus = []
    try:
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            info.gpus = [_mps_gpu(torch, info.ram_gb)]
            info.device = "mps"
    except Exception:
        info.gpus = []
    return info


# --- the machine a plan is made for ---------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    """What the planner needs to know about the machine, detected once (`detect_machine`) or
    described (`Machine.virtual`, for estimates of other hardware and for tests)."""

    device: str = "cpu"  # cuda | mps | cpu
    gpu_name: str = ""
    gpu_gb: float = 0.0  # memory of the GPU this process trains on
    bf16: bool = False
    compute_capability: tuple[int, int] | None = None
    flash_attn: bool = False  # flash-attn installed and the GPU is sm80+
    liger: bool = False  # liger-kernel installed
    world_size: int = 1
    strategy: str = ""  # what accelerate launch set up (finetune.plan.parallel.STRATEGIES); "" for one process
    sharded_loading: bool = False  # the launcher loads weights once and shards them as they load
    cpu_count: int = 1
    load_average: float = 0.0  # 1-minute load average when detected: other work on the cores

    @classmethod
    def virtual(cls, device: str = "cuda", gpu_gb: float | None = None, **changes) -> Machine:
        """A machine described rather than detected: a CUDA GPU of `gpu_gb` with bf16, nothing extra installed."""
        gpu = device == "cuda"
        base = dict(device=device, gpu_gb=float(gpu_gb or 0.0), bf16=gpu, gpu_name="GPU" if gpu else "")
        return cls(**{**base, **changes})

    def summary(self) -> str:
        if self.device == "cpu":
            return f"CPU ({self.cpu_count} cores)"
        name = self.gpu_name or self.device.upper()
        size = f", {self.gpu_gb:.0f} GB" if self.gpu_gb else ""
        extra = [x for x, on in (("flash-attn", self.flash_attn), ("liger", self.liger)) if on]
        count = f"{self.world_size} x " if self.world_size > 1 else ""
        return f"{count}{name}{size}" + (f" ({', '.join(extra)})" if extra else "")

    def with_world_size(self, world_size: int, strategy: str = "") -> Machine:
        """This machine's GPU `world_size` times (for an estimate of a run on several of them)."""
        from dataclasses import replace

        return replace(self, world_size=max(1, int(world_size)), strategy=strategy if world_size > 1 else "")


def detect_machine(hardware: HardwareInfo | None = None) -> Machine:
    """The Machine this process trains on (its local rank's GPU under `accelerate launch`)."""

    hw = hardware or detect_hardware()
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    gpu = None
    if hw.gpus:
        rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
        gpu = hw.gpus[rank if rank < len(hw.gpus) else 0]
    try:
        liger = importlib.util.find_spec("liger_kernel") is not None
    except (ImportError, ValueError):
        liger = False
    return Machine(
        device=hw.device,
        gpu_name=gpu.name if gpu else "",
        gpu_gb=gpu.total_gb if gpu else 0.0,
        bf16=bool(gpu.bf16) if gpu and hw.device == "cuda" else False,
        compute_capability=gpu.compute_capability if gpu else None,
        flash_attn=bool(gpu.flash_attention_eligible) if gpu else False,
        liger=liger and hw.device == "cuda",
        world_size=world,
        strategy=launched_strategy(),
        sharded_loading=sharded_loading() and world > 1,
        cpu_count=hw.cpu_count,
        load_average=_load_average(),
    )


def _load_average() -> float:
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return 0.0

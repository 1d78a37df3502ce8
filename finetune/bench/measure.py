"""What the benchmark measures: tokens per step, step times, peak memory, model FLOPs utilization.

- real tokens: tokens of the examples themselves (no padding), counted from what each batch's
  examples hold before collation; computed tokens: the positions the model runs (the padded
  `input_ids`); loss tokens: labels that are not -100.
- time: wall clock (and process CPU time) between optimizer-step ends, after the warm-up steps.
- memory: on CUDA `torch.cuda.max_memory_allocated()` (peak stats reset before each arm loads its
  model); on CPU the growth of the process's peak resident set (VmHWM, reset before each arm)
  over its resident set at the start of the arm.
- MFU: (4 N for LoRA, 6 N for full fine-tuning) FLOPs per real token x tokens/s over the GPU's
  dense bf16 peak (finetune/plan/gpus.py); N = the decoder's parameters without the input embeddings, counting the LM
  head's matmul even when its weight is tied to the embeddings.
"""

from __future__ import annotations

import ctypes
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainerCallback

from finetune.models import release_memory
from finetune.plan import load_shape
from finetune.plan.gpus import peak_for

GiB = 1024**3


def gpu_peak_tflops(name: str) -> float | None:
    """The dense tensor-core peak of a GPU (TFLOP/s), from the planner's table (finetune/plan/gpus.py)."""

    peak = peak_for(name)
    return peak.tflops if peak else None


def flops_params(model_path: str) -> int | None:
    """N for the 6N/4N rule: parameters without the input embeddings (LM head matmul counted)."""
    try:
        shape = load_shape(model_path)
    except Exception:
        return None
    counts = shape.param_counts()
    return counts["linear"] + counts["bias"] + counts["norm"] + shape.vocab_size * shape.hidden_size


class TokenCounter:
    """Wraps a data collator and counts real, computed and loss tokens of every batch it makes."""

    def __init__(self, collator):
        self.collator = collator
        self.real = 0
        self.computed = 0
        self.loss = 0

    def __call__(self, examples):
        batch = self.collator(examples)
        self.real += sum(_real_tokens(e) for e in examples)
        self.computed += int(batch["input_ids"].numel())
        if "labels" in batch:
            self.loss += int((batch["labels"] != -100).sum())
        elif "completion_mask" in batch:  # preference batches: the answers' tokens carry the loss
            self.loss += int(batch["completion_mask"].sum())
        return batch


def _real_tokens(example: dict) -> int:
    """Tokens of one example; a DPO pair is two sequences, prompt + chosen and prompt + rejected."""
    if "input_ids" in example:
        return len(example["input_ids"])
    return 2 * len(example["prompt_ids"]) + len(example["chosen_ids"]) + len(example["rejected_ids"])


@dataclass
class StepMark:
    wall: float
    cpu: float
    real: int
    computed: int
    loss: int


class StepMeter(TrainerCallback):
    """Marks the end of every optimizer step with the clocks and the token counters."""

    def __init__(self, counter: TokenCounter, sync=None):
        self.counter = counter
        self.sync = sync or (lambda: None)
        self.marks: list[StepMark] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.sync()
        c = self.counter
        self.marks.append(StepMark(time.perf_counter(), time.process_time(), c.real, c.computed, c.loss))

    def window(self, warmup: int) -> dict[str, Any]:
        """Throughput over the steps after `warmup` (the first measured step starts at the warm-up's end)."""
        marks = self.marks[max(warmup, 1) - 1 :]
        if len(marks) < 2:
            return {}
        first, last = marks[0], marks[-1]
        wall, cpu = last.wall - first.wall, last.cpu - first.cpu
        real, computed = last.real - first.real, last.computed - first.computed
        steps = [b.wall - a.wall for a, b in zip(marks, marks[1:])]
        return {
            "steps": len(steps),
            "tokens_per_s": real / wall if wall > 0 else None,
            "cpu_tokens_per_s": real / cpu if cpu > 0 else None,
            "step_time_s": statistics.median(steps),
            "real_tokens_per_step": real / len(steps),
            "computed_tokens_per_step": computed / len(steps),
            "loss_tokens_per_step": (last.loss - first.loss) / len(steps),
            "padding_fraction": 1 - real / computed if computed else None,
        }


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def tune_malloc() -> None:
    """Let glibc return large freed blocks to the OS, so RSS follows live tensors (best effort)."""
    libc = _libc()
    if libc is not None:
        try:
            libc.mallopt(-3, 65536)  # M_MMAP_THRESHOLD
        except Exception:
            pass


def _status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class MemoryProbe:
    """Peak memory of one arm: CUDA max_memory_allocated, or peak RSS growth on CPU."""

    device: str
    rss_start: int | None = None
    notes: list[str] = field(default_factory=list)

    def start(self) -> None:
        import torch

        release()
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            return
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # resets VmHWM to the current RSS
        except OSError:
            self.notes.append("could not reset the peak RSS (/proc/self/clear_refs)")
            return
        self.rss_start = _status_kb("VmRSS")

    def peak_gb(self) -> float | None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / GiB
        peak = _status_kb("VmHWM")
        if self.rss_start is None or peak is None:
            return None
        return (peak - self.rss_start) * 1024 / GiB


def release() -> None:
    """Free what the last arm left (models.release_memory), and on CPU give freed heap back to the OS
    so the next arm's peak RSS starts from a clean baseline."""

    release_memory()
    libc = _libc()
    if libc is not None:
        try:
            libc.malloc_trim(0)
        except Exception:
            pass

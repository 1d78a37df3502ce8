"""Turning an exception from a run into one paragraph that says what to change
(the seeds' troubleshooting tables: out of memory, NaN loss, data or model not found)."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from finetune.config import RunConfig
from finetune.errors import FinetuneError
from finetune.plan import oom_advice

NATIVE_WRITE_ERRORS = ("pytorchstreamwriter", "inline_container", "unexpected pos")  # torch.save's zip writer
LOW_DISK_BYTES = 2**20


def explain_failure(exc: BaseException, config: RunConfig, run_path: str | Path | None = None) -> str:
    """One paragraph that says what went wrong and what to change (the seeds' troubleshooting tables).
    `run_path`: the run folder, whose disk is checked when a native writer failed without saying why."""
    if isinstance(exc, FinetuneError):
        return str(exc)
    text = str(exc)
    lowered = text.lower()
    if "out of memory" in lowered or type(exc).__name__ == "OutOfMemoryError":
        advice = _oom_advice(config)
        return f"Out of memory. {advice}"
    # safetensors and other native writers report a full disk in their own exception type, not OSError
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if not full and run_path is not None and any(marker in lowered for marker in NATIVE_WRITE_ERRORS):
        full = _free_bytes(run_path) < LOW_DISK_BYTES  # torch.save only says "unexpected pos 64 vs 0"
    if full or "no space left on device" in lowered or "disk quota exceeded" in lowered:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "No space left on device"
        return (
            f"The disk is full ({reason}): the run could not write its files. Free some space (or "
            "lower save_total_limit); Resume then continues from the last checkpoint, and every metric logged "
            "so far is kept."
        )
    lost = _lost_run_folder(exc, run_path)
    if lost:
        return lost
    if isinstance(exc, FileNotFoundError):
        return f"A file was not found: {text}. Check dataset_path / eval_dataset_path."
    if "target modules" in lowered or "target_modules" in lowered:
        return (
            f"lora_target_modules '{config.lora_target_modules}' matches no layer of this model ({text}). "
            "Use all-linear, or the module names of this architecture."
        )
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"Training failed: {type(exc).__name__}: {first[:400]}. The full traceback is in train.log."


def _lost_run_folder(exc: BaseException, run_path: str | Path | None) -> str:
    """The run folder went away or became unwritable under a running job: say which, not the errno."""
    if not isinstance(exc, OSError) or run_path is None:
        return ""
    folder = Path(run_path)
    name = folder.name
    if not (folder / "config.yaml").is_file():
        return (
            f"The run folder '{name}' was deleted (or moved) while the run trained, so nothing more could be "
            "saved there; the run stopped. Start a new run."
        )
    if exc.errno == errno.EROFS:
        return (
            f"The disk holding the run folder '{name}' became read-only while the run trained, so its metrics and "
            "checkpoints could no longer be written; the run stopped. Make the disk writable again, then Resume "
            "continues from the last checkpoint."
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"Permission to write into the run folder '{name}' was lost while the run trained ({exc.strerror}); "
            "the run stopped. Give the app write access again, then Resume continues from the last checkpoint."
        )
    return ""


def _free_bytes(path: str | Path) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 2**62


def _oom_advice(config: RunConfig) -> str:
    try:
        return oom_advice(config)
    except Exception:
        return (
            "Lower per_device_train_batch_size (raise gradient_accumulation_steps to keep the effective batch), "
            "lower max_length, turn on gradient_checkpointing, use quantization 4bit, or a smaller lora_r."
        )

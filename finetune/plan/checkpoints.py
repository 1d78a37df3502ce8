"""How many checkpoints a run saves and keeps, at which steps, and what they cost on disk.

The Test tab's checkpoint curve scores the checkpoints a run KEEPS (`save_total_limit` deletes the oldest),
so the Model tab says before Start how many there will be, at which steps, and their size (paths.
artifact_bytes, the rule the disk-space check uses), and warns when fewer than CURVE_POINTS are kept.
Steps follow transformers: `ceil(epochs x ceil(batches / accumulation))` update steps, a fractional
`save_steps` is `ceil(fraction x total)`, a checkpoint at every multiple and one at the end; with
`load_best_model_at_end` or early stopping the run saves at its evaluation steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from finetune.paths import artifact_bytes, size_text

CURVE_POINTS = 4  # a checkpoint curve with fewer kept points says little about which step is best


@dataclass(frozen=True)
class CheckpointPlan:
    total_steps: int | None  # None when the data size is unknown (epochs without a row count)
    save_every: int | None
    saved_steps: tuple[int, ...] = ()
    kept_steps: tuple[int, ...] = ()
    each_bytes: float | None = None
    what: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def kept(self) -> int:
        return len(self.kept_steps)

    @property
    def total_bytes(self) -> float | None:
        return self.each_bytes * self.kept if self.each_bytes is not None else None

    def line(self) -> str:
        """One sentence for the Model tab."""

        if self.total_steps is None:
            every = f"every {self.save_every} steps" if self.save_every else "at a fraction of the steps"
            return f"Checkpoints: saved {every}; how many depends on the data size (load the data to see)."
        steps = ", ".join(str(s) for s in self.kept_steps[:8]) + (" …" if self.kept > 8 else "")
        cost = (
            f", about {size_text(self.each_bytes)} each ({size_text(self.total_bytes)} in all)"
            if self.each_bytes is not None
            else " (size unknown until the model is downloaded)"
        )
        text = (
            f"Checkpoints: {len(self.saved_steps)} saved over {self.total_steps} steps, {self.kept} kept "
            f"(steps {steps}){cost}."
        )
        return " ".join([text, *self.notes])


def total_steps(config: Any, train_rows: int | None) -> int | None:
    """Optimizer steps of a run, as transformers counts them (None: epochs over an unknown row count)."""
    if config.max_steps > 0:
        return int(config.max_steps)
    if not train_rows:
        return None
    per_pass = max(1, int(config.per_device_train_batch_size)) * max(1, int(getattr(config, "num_gpus", 1) or 1))
    batches = math.ceil(train_rows / per_pass)
    per_epoch = max(math.ceil(batches / max(1, int(config.gradient_accumulation_steps))), 1)
    return math.ceil(float(config.num_train_epochs) * per_epoch)


def _interval(value: float, total: int) -> int:
    return max(1, math.ceil(total * value)) if value < 1 else int(value)


def save_interval(config: Any, total: int, has_eval: bool = True) -> int:
    evaluate = has_eval and config.eval_steps > 0
    wants_best = evaluate and (config.load_best_model_at_end or config.early_stopping_patience > 0)
    return _interval(config.eval_steps if wants_best else config.save_steps, total)


def checkpoint_plan(
    config: Any, *, train_rows: int | None = None, model_bytes: int | None = None, tokenizer_bytes: int = 0,
    has_eval: bool = True,
) -> CheckpointPlan:  # fmt: skip
    """Where a run of `config` saves checkpoints, which it keeps, and their size on disk."""

    total = total_steps(config, train_rows)
    if total is None:
        every = int(config.save_steps) if config.save_steps >= 1 else None
        return CheckpointPlan(None, every)
    every = save_interval(config, total, has_eval)
    saved = list(range(every, total + 1, every))
    if not saved or saved[-1] != total:
        saved.append(total)  # transformers saves at the last step too
    limit = int(config.save_total_limit or 0)
    kept = saved[-limit:] if limit > 0 else saved
    each, what = None, ""
    if model_bytes:
        _, each, what = artifact_bytes(config, model_bytes, tokenizer_bytes)
    notes = []
    if len(kept) < CURVE_POINTS and len(saved) >= CURVE_POINTS:
        notes.append(
            f"For a checkpoint curve keep at least {CURVE_POINTS}: set save_total_limit to {len(saved)} (or 0: all)."
        )
    elif len(saved) < CURVE_POINTS:
        notes.append(f"For a checkpoint curve save at least {CURVE_POINTS}: lower save_steps.")
    return CheckpointPlan(total, every, tuple(saved), tuple(kept), each, what, tuple(notes))

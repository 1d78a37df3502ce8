"""Exporting one checkpoint of a run instead of its final adapter (the best one on the checkpoint curve).

`checkpoint_run(run, step)` is the run seen through that checkpoint: a `Run` whose `adapter_dir` is
`checkpoints/checkpoint-<step>`, so every export (the adapter zip, the merge, what comes after them)
works on it unchanged. Its files go beside the final adapter's under a name that says the step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune.errors import RunError
from finetune.runs import Run, open_run


class CheckpointRun(Run):
    """A run whose adapter is one of its checkpoints."""

    def __init__(self, run: Run, step: int):
        super().__init__(run.path)
        self.step = int(step)

    @property
    def adapter_dir(self) -> Path:
        return self.checkpoints_dir / f"checkpoint-{self.step}"

    @property
    def label(self) -> str:
        return f"checkpoint-{self.step}"


def checkpoint_run(run: Any, step: int | str) -> CheckpointRun:
    """The run seen through its checkpoint at `step` (an int, "20" or "checkpoint-20"); refused when there is
    no such checkpoint with an adapter (or a full model) in it."""
    run = open_run(run)
    text = str(step).strip().removeprefix("checkpoint-")
    if not text.isdigit():
        raise RunError(f"{step!r} is not a checkpoint step: use a number such as 20, or checkpoint-20")
    view = CheckpointRun(run, int(text))
    if not view.has_adapter():
        kept = ", ".join(p.name for p in run.checkpoints()) or "none"
        raise RunError(f"the run {run.name} has no saved adapter in {view.label} (its checkpoints: {kept})")
    return view


def export_names(view: CheckpointRun, exports: Path) -> tuple[Path, Path]:
    """(adapter zip, merged folder) of a checkpoint, beside the final adapter's exports."""
    suffix = "model" if view.config().method == "full" else "adapter"
    return exports / f"{view.name}-{view.label}-{suffix}.zip", exports / f"merged-{view.label}"

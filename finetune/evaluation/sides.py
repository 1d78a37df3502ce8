"""Which model answers on a side of a comparison: the one naming rule for sides.

A side is `base` (the adapter disabled), `finetuned` (the run's final adapter), `checkpoint-N` (a saved
checkpoint of the run) or `gguf:<file>` (a GGUF file the run exported, evaluation.gguf_side). The chat,
the grid, the side by side and batch evaluation take sides by these names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune.evaluation.common import EvaluationError, as_run
from finetune.evaluation.gguf_side import gguf_label, gguf_sides, is_gguf_side

BASE, FINETUNED = "base", "finetuned"
DEFAULT_SIDES = (BASE, FINETUNED)
LABELS = {BASE: "Base model", FINETUNED: "Fine-tuned"}


def side_label(side: str | None) -> str:
    """How a side is named above its answers ("Base model" when none is named)."""
    if is_gguf_side(side):
        return gguf_label(side)
    return LABELS.get(side or BASE, side)


def opposite_choices(run: Any) -> list[tuple[str, str]]:
    """(label, side) of what can stand opposite the fine-tuned model: the base, then the run's GGUF files."""
    sides = [BASE] + (gguf_sides(as_run(run)) if run is not None else [])
    return [(side_label(side), side) for side in sides]


def side_choices(run: Any) -> list[str]:
    """Every side a run offers: base, finetuned (when it has a final adapter), each saved checkpoint."""
    run = as_run(run)
    sides = [BASE] + ([FINETUNED] if run.has_adapter() else [])
    return sides + [p.name for p in run.checkpoints() if (p / "adapter_config.json").is_file()]


def resolve_side(run: Any, side: str) -> tuple[bool, Path | None]:
    """(use_adapter, adapter folder or None for the final one) of a side; unknown sides are refused."""
    run = as_run(run)
    if side == BASE:
        return False, None
    if side == FINETUNED:
        return True, None
    folder = run.checkpoints_dir / str(side)
    if str(side).startswith("checkpoint-") and (folder / "adapter_config.json").is_file():
        return True, folder
    raise EvaluationError(f"{side!r} is not a side of run {run.name}: use one of {', '.join(side_choices(run))}")


def adapter_for(comparer: Any, run: Any, side: str) -> tuple[bool, str | None]:
    """(use_adapter, the comparer's adapter name) for a side, attaching a checkpoint when it is one."""
    use_adapter, folder = resolve_side(run, side)
    if not use_adapter:
        return False, None
    return True, comparer.load_adapter(folder if folder is not None else as_run(run).adapter_dir)

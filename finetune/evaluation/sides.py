"""Which model answers on a side of a comparison: the one naming rule for sides.

A side is `base` (the adapter disabled), `finetuned` (the run's final adapter) or `checkpoint-N` (a saved
checkpoint of the run). The chat and the desk take sides by these names, so another kind of side (an
exported file run by its own runtime) is one more entry here, not a change to every caller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune.evaluation.common import EvaluationError, as_run

BASE, FINETUNED = "base", "finetuned"
DEFAULT_SIDES = (BASE, FINETUNED)
LABELS = {BASE: "Base model", FINETUNED: "Fine-tuned"}


def side_label(side: str) -> str:
    return LABELS.get(side, side)


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

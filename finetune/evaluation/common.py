"""Small shared pieces: run/comparer resolution, stop checks, time stamps, JSON files."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from finetune.errors import FinetuneError
from finetune.evaluation.compare import get_comparer
from finetune.files import write_text_atomic
from finetune.runs import Run, open_run

Progress = Callable[[int, int], Any]  # (done, total), called after every generated answer
StopCheck = Any  # a threading.Event, a zero-argument callable returning True to stop, or None


def as_run(run: Any) -> Run:
    """A Run from a Run, a folder/name, or anything with a `.run` (a Comparer)."""
    if isinstance(run, Run):
        return run
    if hasattr(run, "run") and isinstance(run.run, Run):
        return run.run
    return open_run(run)


def comparer_for(comparer_or_run: Any, adapter_path: str | Path | None = None):
    """The given Comparer, or the process-wide cached one for a run (one model in memory).
    A Comparer passed in is switched to `adapter_path` when one is given. Anything with
    `generate`, `load_adapter` and `run` counts as a Comparer (tests pass scripted ones)."""

    if not isinstance(comparer_or_run, (Run, str, Path)) and hasattr(comparer_or_run, "load_adapter"):
        if adapter_path is not None:
            comparer_or_run.load_adapter(adapter_path)
        return comparer_or_run
    return get_comparer(as_run(comparer_or_run), adapter_path)


def should_stop(stop: StopCheck) -> bool:
    """True when the caller asked to stop (Event set, or callable returned truthy)."""
    if stop is None:
        return False
    if hasattr(stop, "is_set"):
        return bool(stop.is_set())
    return bool(stop())


def report_progress(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def unique_path(folder: Path, name: str, suffix: str = "") -> Path:
    """folder/name+suffix, or name-2, name-3... when taken (two saves in one second)."""
    path = folder / f"{name}{suffix}"
    n = 2
    while path.exists():
        path = folder / f"{name}-{n}{suffix}"
        n += 1
    return path


def evaluations_dir(run: Run) -> Path:
    path = run.path / "evaluations"
    path.mkdir(parents=True, exist_ok=True)
    return path


def saved_files(run: Any, kind: str) -> list[Path]:
    """A run's saved evaluations of one kind (`grid`, `curve`: evaluations/<kind>-*.json), oldest first."""
    folder = as_run(run).path / "evaluations"
    return sorted(folder.glob(f"{kind}-*.json")) if folder.is_dir() else []


def load_saved(path: str | Path, cls: Any, what: str) -> Any:
    """A saved evaluation file read back as `cls` (its `from_dict`), with its `path`; EvaluationError naming
    `what` and the file when it cannot be read."""
    try:
        value = cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise EvaluationError(f"cannot read the {what} {path}: {exc}") from None
    value.path = Path(path)
    return value


def write_json(path: Path, data: Any) -> None:
    """Write atomically (tmp + rename): a reader never sees half a file."""
    write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False, default=str))


def settings_dict(settings: Any) -> dict[str, Any]:
    """GenerationSettings as a plain dict (for votes and saved evaluations)."""
    from dataclasses import asdict, is_dataclass

    if settings is None:
        return {}
    return asdict(settings) if is_dataclass(settings) else dict(settings)


class EvaluationError(FinetuneError):
    """A bad evaluation request (unknown vote choice, unusable data, bad output format...)."""


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(row: dict[str, Any]) -> dict[str, Any]:
    """A CSV row whose text cells cannot run as spreadsheet formulas (OWASP CSV injection): model
    answers and prompts are untrusted text, and a cell starting with = + - @ is a formula."""
    return {k: "'" + v if isinstance(v, str) and v.startswith(_FORMULA_START) else v for k, v in row.items()}

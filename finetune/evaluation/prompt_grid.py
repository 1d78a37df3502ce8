"""A saved prompt set, answered by the base, every checkpoint and the final adapter.

Reading across a row shows WHEN the model learned (or broke) something, which a single
final comparison hides. Prompt sets live in `<workspace>/prompt_sets/<name>.json` so they
can be reused across runs; each grid is saved as `<run>/evaluations/grid-<timestamp>.json`.

One base model stays in memory: checkpoints are attached as named adapters through the
Comparer (`load_adapter`), one column at a time, so its LRU of loaded adapters never evicts
the one being used. Afterwards the final adapter is made active again for the Compare tab.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finetune.errors import shown
from finetune.evaluation.common import (
    EvaluationError,
    Progress,
    StopCheck,
    as_run,
    comparer_for,
    evaluations_dir,
    load_saved,
    report_progress,
    saved_files,
    settings_dict,
    should_stop,
    stamp,
    unique_path,
    write_json,
)
from finetune.evaluation.compare import GenerationSettings
from finetune.runs import Run, check_name, workspace_dir

MAX_PROMPTS = 200
PROMPT_SEPARATOR = "---"


# prompt sets ------------------------------------------------------------------------------
def prompt_sets_dir(workspace: str | Path | None = None) -> Path:
    path = workspace_dir(workspace) / "prompt_sets"
    path.mkdir(parents=True, exist_ok=True)
    return path


def clean_prompts(prompts: Any) -> list[str]:
    """Non-empty prompts, stripped; a single string is split with `prompts_from_text`."""
    if isinstance(prompts, str):
        prompts = prompts_from_text(prompts)
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        raise EvaluationError("prompts must be a list of texts")
    cleaned = [p.strip() for p in prompts if p.strip()]
    if not cleaned:
        raise EvaluationError("the prompt set is empty: add at least one prompt")
    if len(cleaned) > MAX_PROMPTS:
        raise EvaluationError(f"a prompt set holds at most {MAX_PROMPTS} prompts, got {len(cleaned)}")
    return cleaned


def prompts_from_text(text: str) -> list[str]:
    """A textbox's content as prompts: blocks separated by lines of `---` when there are any
    (so prompts may span lines), else one prompt per non-empty line."""
    lines = (text or "").splitlines()
    if any(line.strip() == PROMPT_SEPARATOR for line in lines):
        blocks, current = [], []
        for line in lines:
            if line.strip() == PROMPT_SEPARATOR:
                blocks.append("\n".join(current))
                current = []
            else:
                current.append(line)
        blocks.append("\n".join(current))
        return [b.strip() for b in blocks if b.strip()]
    return [line.strip() for line in lines if line.strip()]


def save_prompt_set(name: str, prompts: Any, workspace: str | Path | None = None) -> Path:
    """Create or replace the prompt set `name`; returns its file."""
    check_name(name, "prompt set name")
    path = prompt_sets_dir(workspace) / f"{name}.json"
    write_json(path, {"name": name, "prompts": clean_prompts(prompts), "updated": time.time()})
    return path


def load_prompt_set(name: str, workspace: str | Path | None = None) -> list[str]:
    check_name(name, "prompt set name")
    path = prompt_sets_dir(workspace) / f"{name}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = ", ".join(list_prompt_sets(workspace)) or "none yet"
        raise EvaluationError(f"no prompt set named {shown(name)} (saved sets: {known})") from None
    except json.JSONDecodeError as exc:
        raise EvaluationError(f"prompt set '{name}' is not valid JSON ({exc}); fix or delete {path}") from None
    return clean_prompts(data.get("prompts") if isinstance(data, dict) else data)


def list_prompt_sets(workspace: str | Path | None = None) -> list[str]:
    return sorted(p.stem for p in prompt_sets_dir(workspace).glob("*.json"))


# the grid ---------------------------------------------------------------------------------
@dataclass
class GridCell:
    text: str
    tokens: int = 0
    seconds: float = 0.0


@dataclass
class PromptGrid:
    """prompts x columns; `cells[i][j]` is prompt i answered by column j (None: not run, after a stop)."""

    run: str
    prompts: list[str]
    columns: list[str]  # "base", "checkpoint-N"..., "final"
    cells: list[list[GridCell | None]]
    settings: dict[str, Any] = field(default_factory=dict)
    stopped: bool = False
    skipped: list[str] = field(default_factory=list)  # checkpoints without a loadable adapter
    created: float = field(default_factory=time.time)
    path: Path | None = None

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One dict per prompt: {"prompt": ..., "<column>": answer text or None}."""
        return [
            {"prompt": p, **{c: (cell.text if cell else None) for c, cell in zip(self.columns, row)}}
            for p, row in zip(self.prompts, self.cells)
        ]

    def records(self) -> list[dict[str, Any]]:
        return self.rows

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=["prompt", *self.columns])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path) if self.path else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromptGrid:
        cells = [[GridCell(**c) if c else None for c in row] for row in data["cells"]]
        path = Path(data["path"]) if data.get("path") else None
        return cls(**{**data, "cells": cells, "path": path})


def grid_columns(run: Run, checkpoints: list[str] | None = None) -> tuple[list[tuple[str, Path | None]], list[str]]:
    """[("base", None), ("checkpoint-N", path)..., ("final", adapter/)] and the checkpoints
    skipped for holding no adapter. `checkpoints` limits the checkpoint columns by name."""
    columns: list[tuple[str, Path | None]] = [("base", None)]
    skipped = []
    for path in run.checkpoints():
        if checkpoints is not None and path.name not in checkpoints:
            continue
        if (path / "adapter_config.json").is_file() or (path / "config.json").is_file():
            columns.append((path.name, path))
        else:
            skipped.append(f"{path.name}: no saved adapter in it")
    if run.has_adapter():
        columns.append(("final", run.adapter_dir))
    if len(columns) == 1:
        raise EvaluationError(f"run {run.name} has no saved checkpoint or final adapter to compare with the base yet")
    return columns, skipped


def run_prompt_grid(
    run: Any,
    prompts: Any,
    settings: Any = None,
    progress: Progress | None = None,
    stop: StopCheck = None,
    *,
    checkpoints: list[str] | None = None,
    save: bool = True,
) -> PromptGrid:
    """Answer every prompt with the base, each checkpoint and the final adapter.
    `run` may be a Run, a run folder/name, or a Comparer already holding the run."""

    settings = (settings or GenerationSettings()).check()
    prompts = clean_prompts(prompts)
    the_run = as_run(run)
    columns, skipped = grid_columns(the_run, checkpoints)
    comparer = comparer_for(run, columns[-1][1])  # final's tokenizer when there is one, as in Compare
    cells: list[list[GridCell | None]] = [[None] * len(columns) for _ in prompts]
    total, done, stopped = len(prompts) * len(columns), 0, False
    report_progress(progress, 0, total)
    try:
        for j, (_, path) in enumerate(columns):
            name = None if path is None else comparer.load_adapter(path)
            for i, prompt in enumerate(prompts):
                if should_stop(stop):
                    stopped = True
                    break
                gen = comparer.generate(prompt, path is not None, settings, adapter=name)
                cells[i][j] = GridCell(gen.text, gen.tokens, gen.seconds)
                done += 1
                report_progress(progress, done, total)
            if stopped:
                break
    finally:
        if the_run.has_adapter():
            comparer.load_adapter(the_run.adapter_dir)  # leave the Compare tab on the final adapter
    grid = PromptGrid(
        run=the_run.name,
        prompts=prompts,
        columns=[c for c, _ in columns],
        cells=cells,
        settings=settings_dict(settings),
        stopped=stopped,
        skipped=skipped,
    )
    if save:
        grid.path = unique_path(evaluations_dir(the_run), f"grid-{stamp()}", ".json")
        write_json(grid.path, grid.to_dict())
    return grid


def list_grids(run: Any) -> list[Path]:
    return saved_files(run, "grid")


def load_grid(path: str | Path) -> PromptGrid:
    return load_saved(path, PromptGrid, "prompt grid")

"""Shared pieces of the Test tab's judging views (blind A/B, batch evaluation, checkpoint grid).

Nothing here generates: it checks that generation may start, builds GenerationSettings from the
shared decoding controls, and holds the per-page stop flag the Stop buttons set.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from finetune.compare import GenerationSettings
from finetune.errors import FinetuneError
from finetune.runs import Run, open_run
from finetune.training import current_job
from ui.state import Ctx

NO_RUN = "No run with a saved adapter yet: train one in the Train tab first."


class StopFlag(threading.Event):
    """A threading.Event that gr.State can hold: every page gets a fresh one (gr.State deep-copies
    its initial value per session; a plain Event holds a lock and cannot be copied).
    `running` says whether the job it can stop is under way (for the Stop button's message)."""

    running = False

    def __deepcopy__(self, memo: dict) -> StopFlag:
        return StopFlag()


def request_stop(stop: StopFlag, what: str) -> str:
    """The Stop button of a long job on this page: set its flag, say what happens next."""
    if not stop.running:
        return f"Nothing to stop: no {what} is running on this page."
    stop.set()
    return "■ Stopping after the answer in progress…"


def check_idle(action: str = "comparing") -> None:
    """Refuse to load a model (to compare, evaluate...: `action`) while a training job runs in this process."""
    job = current_job()
    if job is not None:
        raise FinetuneError(
            f"The run '{job.run.name}' is training: {action} would load a second model into memory. "
            "Wait for it to finish or stop it, then try again."
        )


def selected_run(ctx: Ctx, run_name: str | None) -> Run:
    """The chosen run; only runs of this workspace (the dropdown accepts typed text, and the files
    these views write into the run folder are offered for download)."""
    if not run_name:
        raise FinetuneError(NO_RUN)
    run = open_run(run_name, ctx.workspace)
    if not run.path.resolve().is_relative_to(Path(ctx.workspace).resolve()):
        raise FinetuneError(f"'{run_name}' is not a run of this workspace: pick one from the list.")
    return run


def settings_from(system: Any, temperature: Any, top_p: Any, max_new: Any, seed: Any) -> GenerationSettings:
    """GenerationSettings from the Test tab's shared decoding controls (validated)."""
    return GenerationSettings(
        system_prompt=system or "",
        temperature=float(temperature if temperature is not None else 0.0),
        top_p=float(top_p if top_p is not None else 1.0),
        max_new_tokens=int(max_new or 64),
        seed=int(seed or 0),
    ).check()


def fmt_score(value: Any) -> Any:
    """Scores rounded for a table (bools and None kept as they are)."""
    if isinstance(value, float):
        return round(value, 3)
    return value


def progress_callback(progress: Any, what: str, unit: str):
    """An engine `(done, total)` callback feeding a gr.Progress bar."""

    def report(done: int, total: int) -> None:
        progress((done, max(total, 1)), desc=f"{what}: {done} of {total} {unit}", unit=unit)

    return report

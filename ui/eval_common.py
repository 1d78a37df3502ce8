"""Shared pieces of the Test tab's judging views (blind A/B, batch evaluation, checkpoint grid).

Nothing here generates (the Studio's judging desk does, under its GPU lease): it builds
GenerationSettings from the shared decoding controls and holds the per-page stop flag the Stop
buttons set.
"""

from __future__ import annotations

import threading
from typing import Any

from finetune.studio import GenerationSettings


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


def offer_stop_while(start_trigger, work, stop_button) -> None:
    """A Stop button that is on only while its work runs: turned on by the click that starts the work
    (unqueued, so at once), off when the work's event has ended, however it ended."""
    import gradio as gr

    quiet = {"api_visibility": "private", "show_progress": "hidden"}
    start_trigger(lambda: gr.Button(interactive=True), None, stop_button, queue=False, **quiet)
    work.then(lambda: gr.Button(interactive=False), None, stop_button, **quiet)

"""Shared UI plumbing: the component registry every tab adds to, and small helpers.

Nothing here trains, loads or evaluates anything: it only turns engine results and
engine errors into what the page shows.
"""

from __future__ import annotations

import html
import logging
import re
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from finetune.config import RunConfig
from finetune.errors import FinetuneError
from finetune.studio import Studio, describe_unexpected

log = logging.getLogger("finetune.ui")

GPU = "gpu"  # shared concurrency_id: start, compare and merge never run at the same time


class ShownRuns:
    """Per browser session: the run its Test views show, and the run its chat last talked to since then.

    Kept on the server: a change of the Run list can be answered seconds after the user has already sent a
    chat message to the new run, and a redraw then must not clear that chat (ui.run_views)."""

    MAX_SESSIONS = 1000

    def __init__(self):
        self._shown: OrderedDict[str, str | None] = OrderedDict()
        self._chatted: dict[str, str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def session_of(request: Any) -> str:
        """The key of a browser session: Gradio's session hash of the event's request ("" without one)."""
        return getattr(request, "session_hash", None) or ""

    def switch(self, session: str, name: str | None) -> bool:
        """Record `name` as shown for `session`; False when it already was (nothing to redraw)."""
        with self._lock:
            if session in self._shown and self._shown[session] == name:
                return False
            self._shown[session] = name
            self._shown.move_to_end(session)
            while len(self._shown) > self.MAX_SESSIONS:
                gone, _ = self._shown.popitem(last=False)
                self._chatted.pop(gone, None)
            return True

    def chatted(self, session: str, name: str) -> None:
        """The session's chat sent a message to run `name`."""
        with self._lock:
            self._chatted.pop(session, None)
            self._chatted[session] = name
            while len(self._chatted) > self.MAX_SESSIONS:
                self._chatted.pop(next(iter(self._chatted)))

    def chatted_since_switch(self, session: str) -> str | None:
        """The run the session's chat talked to since the previous switch (forgotten once asked)."""
        with self._lock:
            return self._chatted.pop(session, None)


@dataclass
class Ctx:
    """What the tab modules share while the page is built and wired."""

    studio: Studio  # the engine, the only one this page talks to
    base_config: RunConfig = field(default_factory=RunConfig)  # RunConfig <- suggested preset: the form starts here
    fields: dict[str, gr.components.Component] = field(default_factory=dict)  # RunConfig field -> component
    c: dict[str, Any] = field(default_factory=dict)  # named components of every tab
    blocks: Any = None
    hooks: dict[str, Any] = field(default_factory=dict)  # cross-tab chains, e.g. "refresh"(dependency)
    shown_runs: ShownRuns = field(default_factory=ShownRuns)  # per browser session: what the Test tab shows

    @property
    def workspace(self) -> Path:
        return self.studio.workspace

    @property
    def field_list(self) -> list[gr.components.Component]:
        return list(self.fields.values())

    def comp(self, name: str) -> Any:
        """A component by name: `f.<field>` is the Advanced form's field, `form` every field in form order
        (a list), anything else a named component of a tab."""
        if name == FORM:
            return self.field_list
        if name.startswith("f."):
            return self.fields[name[2:]]
        return self.c[name]

    def comps(self, names: list[str]) -> list[Any]:
        out: list[Any] = []
        for name in names:
            found = self.comp(name)
            out += found if isinstance(found, list) else [found]
        return out


FORM = "form"  # in a handler's inputs: every field of the Advanced form, in form order


@dataclass(frozen=True)
class Selection:
    """The run the page shows: one for the whole page. Train's charts follow it, and the Test and
    Export tabs show it whenever it has a saved adapter (otherwise they keep the last run that has one).
    Pickers, Start, Resume, rename and delete write it; `ui.selection.show` is the one place that turns
    it into what the three run lists show."""

    run: str | None = None


def connect(ctx: Ctx, trigger, handler, inputs: list[str], outputs: list[str], **listener: Any):
    """Wire `handler(ctx, *values) -> {output name: update}` to `trigger` (e.g. `button.click`, or
    `gr.on` with its triggers bound). Inputs and outputs are component names (see `Ctx.comp`); an output
    the handler leaves out of its dict is not touched. Handlers are plain module-level functions, so a
    test calls them with a Ctx and reads their dict."""
    out_names = [name for name in outputs]

    def run(*values):
        result = handler(ctx, *values)
        out: list[Any] = []
        for name in out_names:
            if name == FORM:
                form = result.get(FORM)
                out += list(form) if form is not None else [gr.skip()] * len(ctx.fields)
            else:
                out.append(result.get(name, gr.skip()))
        if not out:
            return None
        return out[0] if len(out) == 1 else out  # Gradio takes a single output's value as it is

    run.__name__ = getattr(handler, "__name__", "handler")
    run.__doc__ = getattr(handler, "__doc__", None)
    return trigger(run, ctx.comps(inputs), ctx.comps(outputs), **listener)


def error_text(exc: BaseException) -> str:
    """A user-facing message: FinetuneError text as it is, anything else one line naming the error and
    where its traceback was written (the workspace's logs/errors.log)."""
    if isinstance(exc, FinetuneError):
        return str(exc)
    return describe_unexpected(exc, "a page action")


def json_safe(value: Any) -> Any:
    """A value every JSON reader takes: integers beyond 64 bits (a status.json written before the
    range checks) become text, so one bad number can never break the page's stream for everyone."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else f"{value:.3e}" if value.bit_length() < 1000 else "huge"
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def frame_json(frame: Any) -> dict:
    """A pandas table for API clients, in the shape gradio_client gives a Dataframe output: headers and data
    rows (NaN cells become None)."""
    if frame is None:
        return {"headers": [], "data": []}
    rows = frame.astype(object).where(frame.notna(), None).values.tolist()
    return {"headers": [str(c) for c in frame.columns], "data": rows}


def md_error(exc_or_text: BaseException | str, title: str = "Problem") -> str:
    """Markdown for an error: a bold title then the message as a list or paragraph."""
    text = exc_or_text if isinstance(exc_or_text, str) else error_text(exc_or_text)
    lines = [ln.rstrip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return f"**{title}**"
    body = []
    in_list = False
    for ln in lines:
        stripped = ln.strip()
        if stripped.startswith("- "):
            if not in_list and body:
                body.append("")  # a list must start after a blank line to be a list
            body.append(f"- {md_escape(stripped[2:])}")
            in_list = True
        else:
            if in_list:
                body.append("")  # else Markdown continues the last item with this line
            body.append(md_escape(stripped) + "  ")
            in_list = False
    return f"⚠ **{title}:**\n\n" + "\n".join(body)


def md_escape(text: str) -> str:
    """Escape text for Markdown (and HTML inside it) so file names or data never format or inject."""
    return re.sub(r"([\\`*_{}\[\]#|~])", r"\\\1", html.escape(str(text), quote=False))


def warn(exc: BaseException | str) -> str:
    """Show a toast and return the message (for a status line)."""
    text = exc if isinstance(exc, str) else error_text(exc)
    gr.Warning(text.replace("\n", "<br>") if "\n" in text else text)
    return text


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_time(stamp: float | None) -> str:
    if not stamp:
        return ""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def run_choices(studio: Studio, with_adapter: bool = False) -> list[str]:
    """Run names in the workspace, newest first (optionally only those with a saved adapter)."""
    try:
        return studio.run_names(with_adapter=with_adapter)
    except Exception:  # a listing problem must not break a tab
        traceback.print_exc()
        return []


def adapter_run_picker(ctx: Ctx, prefix: str) -> None:
    """The "Run" dropdown + Refresh button of the Test and Export tabs (runs with a saved adapter),
    stored as ctx.c[f"{prefix}_run"] and ctx.c[f"{prefix}_refresh"]."""
    import gradio as gr

    choices = run_choices(ctx.studio, with_adapter=True)
    with gr.Row(equal_height=True):
        ctx.c[f"{prefix}_run"] = gr.Dropdown(
            choices=choices,
            value=choices[0] if choices else None,
            label="Run",
            allow_custom_value=True,
            info="Runs with a saved adapter.",
            elem_id=f"{prefix}-run",
            scale=4,
        )
        ctx.c[f"{prefix}_refresh"] = gr.Button("Refresh", size="sm", elem_id=f"{prefix}-refresh", scale=0, min_width=90)


def run_dropdown_update(studio: Studio, current: str | None, prefer: str | None = None, with_adapter: bool = True):
    """A Dropdown update with fresh choices; keeps `current` when still valid, else `prefer`/newest."""
    choices = run_choices(studio, with_adapter=with_adapter)
    if prefer in choices:
        value = prefer
    elif current in choices:
        value = current
    else:
        value = choices[0] if choices else None
    return gr.Dropdown(choices=choices, value=value)

"""The Test tab's newer views follow the chosen run through ONE listener.

Choosing a run (here, or in Train / Export) starts a new chat and shows the run's latest benchmark, forgetting
check and checkpoint curve, its checkpoints in the prompt grid and its votes for DPO. Gradio 6.31 re-dispatches
the Run list's `change` after the events it triggers complete, and every listener adds to those echoes
(seen here in a browser: with one listener per view, five more, it fired every few seconds for as long as
the page was open and reset a chat mid-turn; with this one shared listener the echoes stop after two or
three rounds), so these views share one listener that does nothing when the run is the one already shown.
"""

from __future__ import annotations

import gradio as gr

from ui import benchmark_view, chat_view, curve_view, grid_view, votes_view
from ui.state import Ctx

VIEWS = (
    (chat_view.RUN_OUTPUTS, chat_view.clear),
    (benchmark_view.RUN_OUTPUTS, benchmark_view.latest),
    (curve_view.RUN_OUTPUTS, curve_view.latest),
    (("grid_checkpoints",), lambda ctx, name: (grid_view.checkpoint_choices(ctx, name),)),
    (("votes_runs",), lambda ctx, name: (votes_view.runs_for(ctx, name),)),
)


def show_run(ctx: Ctx, name, shown):
    """Outputs: the run now shown, then every view's outputs (all skipped when the run did not change)."""
    keys = [k for outputs, _ in VIEWS for k in outputs]
    if name == shown:
        return [gr.skip()] * (1 + len(keys))
    out: list = [name]
    for _, refresh in VIEWS:
        out += list(refresh(ctx, name))
    return out


def wire(ctx: Ctx) -> None:
    c = ctx.c
    c["test_run_shown"] = gr.State(None)  # the run the views below show
    outputs = [c["test_run_shown"], *[c[k] for keys, _ in VIEWS for k in keys]]

    def show(name, shown):
        return show_run(ctx, name, shown)

    c["test_run"].change(show, [c["test_run"], c["test_run_shown"]], outputs, api_visibility="private")
    ctx.blocks.load(show, [c["test_run"], c["test_run_shown"]], outputs, api_visibility="private")

"""The Test tab's newer views follow the chosen run through ONE listener.

Choosing a run (here, or in Train / Export) starts a new chat, drops an A/B pair drawn for another run and
shows the run's latest batch evaluation (all rows), benchmark, forgetting check, checkpoint curve and prompt
grid, its A/B tally, its checkpoints in the prompt grid and its votes for DPO. Gradio 6.31 re-dispatches
the Run list's `change` after the events it triggers complete, and every listener adds to those echoes
(seen here in a browser: with one listener per view, five more, it fired every few seconds for as long as
the page was open and reset a chat mid-turn; with this one shared listener the echoes stop after two or
three rounds), so these views share one listener that does nothing when the run is the one already shown.
Which run a page shows is kept per browser session on the server (ui.state.ShownRuns), not in a page State:
an echo sent before the first change was answered carries the old State, and it cleared a chat that had
just answered. The batch evaluation, prompt grid and A/B views had listeners of their own: in CI the summary
read "No evaluation of this run yet" with a redraw pending after the evaluation's Done (an echo that read the
run before the result was saved, most likely), and an echo reset an A/B pair drawn since. So they are here too,
and API clients read the same things through gr.api endpoints. The "Opposite the fine-tuned model" choice
(ui.gguf_side_view) keeps its own listener: it keeps the current choice, so an echo changes nothing.
"""

from __future__ import annotations

import gradio as gr

from ui import ab_view, benchmark_view, chat_view, curve_view, eval_tab, grid_view, votes_view
from ui.state import Ctx, ShownRuns

VIEWS = (
    (chat_view.RUN_OUTPUTS, chat_view.clear),
    (benchmark_view.RUN_OUTPUTS, benchmark_view.latest),
    (curve_view.RUN_OUTPUTS, curve_view.latest),
    (eval_tab.RUN_OUTPUTS, eval_tab.for_run),
    (grid_view.RUN_OUTPUTS, grid_view.for_run),
    (ab_view.RUN_OUTPUTS, ab_view.for_run),
    (("votes_runs",), lambda ctx, name: (votes_view.runs_for(ctx, name),)),
)


def show_run(ctx: Ctx, shown: ShownRuns, session: str, name) -> list:
    """Every view's outputs for the run `name`, all skipped when this session shows it already. The chat is
    kept when a message was sent to `name` before this change was answered (the change is queued behind
    other events; seen in a browser answered 6 s after the pick, 2 s after the first chat turn had started)."""
    keys = [k for outputs, _ in VIEWS for k in outputs]
    if not shown.switch(session, name):
        return [gr.skip()] * len(keys)
    keep_chat = shown.chatted_since_switch(session) == name
    out: list = []
    for outputs, refresh in VIEWS:
        if keep_chat and outputs is chat_view.RUN_OUTPUTS:
            out += [gr.skip()] * len(outputs)
        else:
            out += list(refresh(ctx, name))
    return out


def wire(ctx: Ctx) -> None:
    c = ctx.c
    shown = ctx.shown_runs
    outputs = [c[k] for keys, _ in VIEWS for k in keys]

    def show(name, request: gr.Request):
        return show_run(ctx, shown, shown.session_of(request), name)

    c["test_run"].change(show, c["test_run"], outputs, api_visibility="private")
    ctx.blocks.load(show, c["test_run"], outputs, api_visibility="private")

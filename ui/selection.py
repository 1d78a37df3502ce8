"""The page's one run selection (`ui.state.Selection`, held in `ctx.c["selected"]`).

Picking a run anywhere (Train's "Run shown" list or a history row, the Test or Export run list),
starting, resuming, renaming or deleting one writes the selection; `show` is the one place that turns
it into the three run lists. Test and Export list only runs with a saved adapter: for a run without
one they keep what they show.
"""

from __future__ import annotations

import gradio as gr

from ui.state import Ctx, Selection, connect

PICKERS = ("watch", "test_run", "export_run")


def pick(ctx: Ctx, name: str | None) -> dict:
    """A run picked by the user: the new selection (the Train charts redraw from their first point)."""
    if not name:
        return {}
    return {"selected": Selection(name), "drawn": 0, "sig": ""}


def listing(ctx: Ctx) -> tuple[list[str], list[str]]:
    """(every run, the runs with a saved adapter), newest first, from one listing of the workspace."""
    try:
        runs = ctx.studio.runs()
    except Exception:  # a listing problem must not break the page
        return [], []
    return [r.name for r in runs], [r.name for r in runs if r.has_adapter]


def adapter_dropdown(choices: list[str], current: str | None, prefer: str | None):
    value = prefer if prefer in choices else current if current in choices else (choices[0] if choices else None)
    return gr.Dropdown(choices=choices, value=value)


def show(ctx: Ctx, selection: Selection | None, test_current: str | None, export_current: str | None) -> dict:
    """What the three run lists show for the selection, with fresh choices."""
    name = selection.run if isinstance(selection, Selection) else None
    names, adapters = listing(ctx)
    return {
        "watch": gr.Dropdown(choices=names, value=name if name in names else None),
        "overlay_runs": gr.Dropdown(choices=names),
        "test_run": adapter_dropdown(adapters, test_current, name),
        "export_run": adapter_dropdown(adapters, export_current, name),
    }


def wire(ctx: Ctx) -> None:
    c = ctx.c
    for picker in PICKERS:
        connect(
            ctx,
            c[picker].input,
            pick,
            [picker],
            ["selected", "drawn", "sig"],
            api_visibility="private",
            show_progress="hidden",
        )
    connect(
        ctx,
        c["selected"].change,
        show,
        ["selected", "test_run", "export_run"],
        ["watch", "overlay_runs", "test_run", "export_run"],
        api_visibility="private",
        show_progress="hidden",
    )

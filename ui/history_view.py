"""Run history (inside the Train tab): every run of the workspace with its model, data, method and
state; a filter; the loss curves of several runs overlaid; rename and delete (with confirmation)
of the run shown. Engine calls (through the Studio): runs, run (metrics), rename, delete. Rename and delete act on the
page's selected run (`ui.selection`), and leave the selection on the renamed run (or on none).
"""

from __future__ import annotations

import gradio as gr

from ui import charts, selection, time_view
from ui.state import Ctx, Selection, connect, error_text, fmt_time, md_error, md_escape

HISTORY_HEADERS = [
    "run",
    "model",
    "data",
    "method",
    "status",
    "steps",
    "final loss",
    "eval loss",
    "started",
    "predicted",
    "actual",
]
# the run name wraps; the short columns keep their width, so the last one is never cut off
HISTORY_WIDTHS = ["20%", "11%", "9%", "8%", "8%", "7%", "7%", "7%", "9%", "7%", "7%"]
STATE_COLUMN = HISTORY_HEADERS.index("status")


def history_rows(ctx: Ctx, live: dict | None = None, query: str = "") -> list[list]:
    """One row per run, newest first, those matching every word of `query` (any column); `live`
    (a progress dict with "run") overrides that run's state and steps, which status.json only
    records at each log."""
    rows = []
    try:
        runs = ctx.studio.runs()
    except Exception:
        return rows
    words = (query or "").lower().split()
    records = ctx.studio.timing.records()  # each run's predicted and measured time (prediction.json)
    for r in runs:
        state, step, total = r.state, r.step, r.total_steps
        if live and live.get("run") == r.name:
            state, step, total = live.get("state", state), live.get("step") or step, live.get("total_steps") or total
        row = [
            r.name,
            r.model,
            r.data,
            r.method,
            f"{state} · damaged" if r.damaged else state,  # what is damaged: `finetune runs`, the run's status line
            f"{step}/{total}" if total else str(step),
            round(r.final_loss, 4) if r.final_loss is not None else None,
            round(r.final_eval_loss, 4) if r.final_eval_loss is not None else None,
            fmt_time(r.created_at),
            *time_view.history_cells(records.get(r.name, {})),
        ]
        text = " ".join(str(v) for v in row).lower()
        if all(w in text for w in words):
            rows.append(row)
    return rows


def run_names(ctx: Ctx) -> list[str]:
    return ctx.studio.run_names()


def build(ctx: Ctx) -> None:
    c = ctx.c
    with gr.Accordion("Run history", open=True, elem_id="history"):
        c["history_filter"] = gr.Textbox(
            label="Filter",
            placeholder="e.g. qlora, demo, failed: every word must appear in the row",
            elem_id="history-filter",
        )
        c["history"] = gr.Dataframe(
            headers=HISTORY_HEADERS,
            value=history_rows(ctx),
            interactive=False,
            wrap=True,
            column_widths=HISTORY_WIDTHS,
            elem_id="run-history",
            max_height=300,
        )
        with gr.Row(equal_height=True):
            c["rename_to"] = gr.Textbox(
                label="Rename the run shown to",
                placeholder="letters, digits, - _ .",
                elem_id="history-rename-to",
                scale=3,
            )
            c["rename_btn"] = gr.Button("Rename", size="sm", elem_id="history-rename-btn", scale=0, min_width=90)
            c["delete_btn"] = gr.Button(
                "Delete the run shown…", size="sm", variant="stop", elem_id="history-delete-btn", scale=0, min_width=90
            )
        with gr.Row(visible=False, elem_id="history-delete-confirm") as confirm_row:
            c["delete_confirm_md"] = gr.Markdown(elem_id="history-delete-question")
            c["delete_yes"] = gr.Button("Yes, delete it", variant="stop", size="sm", elem_id="history-delete-yes")
            c["delete_no"] = gr.Button("Cancel", size="sm", elem_id="history-delete-no")
        c["delete_confirm_row"] = confirm_row
        c["history_msg"] = gr.Markdown(elem_id="history-msg")
        names = run_names(ctx)
        c["overlay_runs"] = gr.Dropdown(
            choices=names,
            multiselect=True,
            allow_custom_value=True,
            label="Overlay the loss curves of these runs",
            elem_id="run-overlay",
        )
        c["plot_overlay"] = gr.Plot(charts.overlay_figure({}), show_label=False, elem_id="plot-overlay")
    c["history_query"] = gr.State("")


def set_filter(ctx: Ctx, query: str) -> dict:
    return {"history_query": query or "", "history": history_rows(ctx, query=query)}


def after_change(ctx: Ctx, query: str, name: str | None) -> dict:
    """The lists after a run was renamed (`name`: its new name) or deleted (None)."""
    return {
        "history": history_rows(ctx, query=query),
        "selected": Selection(name),
        **selection.show(ctx, Selection(name), None, None),
        "overlay_runs": gr.Dropdown(choices=selection.listing(ctx)[0], value=[]),
    }


def rename(ctx: Ctx, name: str | None, new_name: str, query: str) -> dict:
    """Rename the run shown ("Run shown" displays the page's selection; an API client names the run)."""
    try:
        run = ctx.studio.rename(name, (new_name or "").strip())
    except Exception as exc:
        gr.Warning(error_text(exc))
        return {"history_msg": md_error(exc, "Not renamed")}
    gr.Info(f"Renamed to {run.name}")
    msg = f"✔ **{md_escape(name)}** is now **{md_escape(run.name)}**."
    return {"history_msg": msg, "rename_to": "", **after_change(ctx, query, run.name)}


def ask_delete(ctx: Ctx, name: str | None) -> dict:
    if not name:
        gr.Warning("Pick the run to delete in 'Run shown' first.")
        return {}
    question = (
        f"Delete **{md_escape(name)}** and everything in its folder (adapter, checkpoints, exports, "
        "evaluations)? This cannot be undone."
    )
    return {"delete_confirm_row": gr.Row(visible=True), "delete_confirm_md": question}


def cancel_delete(ctx: Ctx) -> dict:
    return {"delete_confirm_row": gr.Row(visible=False)}


def delete(ctx: Ctx, name: str | None, query: str) -> dict:
    try:
        ctx.studio.delete(name)
    except Exception as exc:
        gr.Warning(error_text(exc))
        return {"delete_confirm_row": gr.Row(visible=False), "history_msg": md_error(exc, "Not deleted")}
    gr.Info(f"Deleted {name}")
    return {
        "delete_confirm_row": gr.Row(visible=False),
        "history_msg": f"✔ Deleted **{md_escape(name)}**.",
        **after_change(ctx, query, None),
    }


def overlay(ctx: Ctx, names: list[str] | None) -> dict:
    data = {}
    for name in names or []:
        try:
            data[name] = ctx.studio.run(name).metrics()
        except Exception:  # a run deleted or renamed meanwhile
            continue
    return {"plot_overlay": charts.overlay_figure(data)}


CHANGED = ["history", "selected", "watch", "overlay_runs", "test_run", "export_run"]


def wire(ctx: Ctx) -> None:
    c = ctx.c
    connect(ctx, c["history_filter"].change, set_filter, ["history_filter"], ["history_query", "history"],
            api_name="filter_runs")  # fmt: skip
    connect(ctx, c["rename_btn"].click, rename, ["watch", "rename_to", "history_query"],
            ["history_msg", "rename_to", *CHANGED], api_name="rename_run")  # fmt: skip
    connect(ctx, c["delete_btn"].click, ask_delete, ["watch"], ["delete_confirm_row", "delete_confirm_md"],
            api_visibility="private")  # fmt: skip
    connect(ctx, c["delete_no"].click, cancel_delete, [], ["delete_confirm_row"], api_visibility="private")
    connect(ctx, c["delete_yes"].click, delete, ["watch", "history_query"],
            ["delete_confirm_row", "history_msg", *CHANGED], api_name="delete_run")  # fmt: skip
    connect(ctx, c["overlay_runs"].change, overlay, ["overlay_runs"], ["plot_overlay"], api_name="overlay_runs")

"""Run history (inside the Train tab): every run of the workspace with its model, data, method and
state; a filter; the loss curves of several runs overlaid; rename and delete (with confirmation)
of the run shown. Engine calls (through the Studio): runs, run (metrics), rename, delete.
"""

from __future__ import annotations

import gradio as gr

from ui import charts
from ui.state import Ctx, error_text, fmt_time, md_error, md_escape, run_dropdown_update

HISTORY_HEADERS = ["run", "model", "data", "method", "status", "steps", "final loss", "eval loss", "started"]
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


def lists_after_change(ctx: Ctx, query: str, shown: str | None) -> list:
    """history, watch, overlay_runs, test_run, export_run after a run was renamed or deleted."""
    names = run_names(ctx)
    return [
        history_rows(ctx, query=query),
        gr.Dropdown(choices=names, value=shown if shown in names else (names[0] if names else None)),
        gr.Dropdown(choices=names, value=[]),
        run_dropdown_update(ctx.studio, None, prefer=shown),
        run_dropdown_update(ctx.studio, None, prefer=shown),
    ]


def wire(ctx: Ctx) -> None:
    c = ctx.c
    lists = [c["history"], c["watch"], c["overlay_runs"], c["test_run"], c["export_run"]]

    def set_filter(query):
        return query or "", history_rows(ctx, query=query)

    c["history_filter"].change(
        set_filter, c["history_filter"], [c["history_query"], c["history"]], api_name="filter_runs"
    )

    def rename(name, new_name, query):
        try:
            run = ctx.studio.rename(name, (new_name or "").strip())
        except Exception as exc:
            gr.Warning(error_text(exc))
            return [md_error(exc, "Not renamed"), gr.skip()] + [gr.skip()] * len(lists)
        gr.Info(f"Renamed to {run.name}")
        msg = f"✔ **{md_escape(name)}** is now **{md_escape(run.name)}**."
        return [msg, ""] + lists_after_change(ctx, query, run.name)

    c["rename_btn"].click(
        rename,
        [c["watch"], c["rename_to"], c["history_query"]],
        [c["history_msg"], c["rename_to"], *lists],
        api_name="rename_run",
    )

    def ask_delete(name):
        if not name:
            gr.Warning("Pick the run to delete in 'Run shown' first.")
            return gr.skip(), gr.skip()
        question = (
            f"Delete **{md_escape(name)}** and everything in its folder (adapter, checkpoints, exports, "
            "evaluations)? This cannot be undone."
        )
        return gr.Row(visible=True), question

    c["delete_btn"].click(
        ask_delete, c["watch"], [c["delete_confirm_row"], c["delete_confirm_md"]], api_visibility="private"
    )
    c["delete_no"].click(lambda: gr.Row(visible=False), None, c["delete_confirm_row"], api_visibility="private")

    def delete(name, query):
        try:
            ctx.studio.delete(name)
        except Exception as exc:
            gr.Warning(error_text(exc))
            return [gr.Row(visible=False), md_error(exc, "Not deleted")] + [gr.skip()] * len(lists)
        gr.Info(f"Deleted {name}")
        return [gr.Row(visible=False), f"✔ Deleted **{md_escape(name)}**."] + lists_after_change(ctx, query, None)

    c["delete_yes"].click(
        delete,
        [c["watch"], c["history_query"]],
        [c["delete_confirm_row"], c["history_msg"], *lists],
        api_name="delete_run",
    )

    def overlay(names):
        data = {}
        for name in names or []:
            try:
                data[name] = ctx.studio.run(name).metrics()
            except Exception:  # a run deleted or renamed meanwhile
                continue
        return charts.overlay_figure(data)

    c["overlay_runs"].change(overlay, c["overlay_runs"], c["plot_overlay"], api_name="overlay_runs")

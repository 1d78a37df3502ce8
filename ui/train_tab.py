"""Train tab: Start / Stop / Resume, live progress and charts, log tail, run history.

Engine calls (all through the Studio): start, resume, stop, training_now, progress (one path for a
run training here or only on disk), runs, run (Run.metrics/log_tail), rename, delete.
Training runs in the engine's thread; this tab only polls (gr.Timer, 1 s), so closing the
browser never stops a run and a reloaded page reattaches to it. The run shown is the page's one
selection (`ui.selection`). Handlers are module-level functions returning updates keyed by
component name (`ui.state.connect`).
"""

from __future__ import annotations

import html
import time
from typing import Any

import gradio as gr

from finetune.errors import FinetuneError
from finetune.studio import ACTIVE_STATES, FINAL_STATES, Run
from ui import charts, config_form, grpo_view, history_view, selection, time_view, trackers_view
from ui.history_view import STATE_COLUMN, history_rows
from ui.state import FORM, GPU, Ctx, Selection, connect, error_text, fmt_duration, json_safe, md_error, md_escape

ICONS = {
    "queued": "●",
    "loading": "●",
    "training": "●",
    "evaluating": "●",
    "saving": "●",
    "done": "✔",
    "stopped": "■",
    "failed": "✖",
    "interrupted": "⚠",
}
PLOT_KEYS = ("plot_loss", "plot_lr", "plot_grad", "plot_acc", "plot_mem", "plot_speed")
PLOT_INTERVAL_S = 3.0
NO_RUN = "No run yet: press **Start training**."
SCROLL_LOG_JS = """() => {
  const bottom = () => document.querySelectorAll('#train-log textarea').forEach(t => { t.scrollTop = t.scrollHeight; });
  requestAnimationFrame(bottom); setTimeout(bottom, 250);
}"""


# --- what the tab shows ----------------------------------------------------------------------
def locate(ctx: Ctx, name: str | None) -> Run | None:
    """The Run of a run name in this workspace, or None (a name that names no run)."""
    if not name:
        return None
    try:
        return ctx.studio.run(name)
    except FinetuneError:
        return None


def status_md(name: str, p: dict, resumable: bool = True) -> str:
    """The status line; `resumable`: the run has a checkpoint that Resume could continue from."""
    state = p.get("state", "unknown")
    icon = ICONS.get(state, "•")
    text = f"{icon} **{md_escape(name)}** — **{state}**"
    if p.get("message"):
        text += f": {md_escape(p['message'])}"
    if state == "done":
        text += "  \nNext: compare answers in **Test**, download or merge in **Export**."
    elif state in ("stopped", "interrupted", "failed") and resumable:
        text += "  \n**Resume** continues from the last checkpoint."
    elif state == "failed":
        text += "  \nNo checkpoint was saved: fix what the message says, then press **Start training** for a new run."
    return text


def progress_html(p: dict) -> str:
    state = p.get("state", "")
    step, total = p.get("step") or 0, p.get("total_steps") or 0
    frac = 1.0 if state == "done" else min(step / total, 1.0) if total else 0.0  # the bar and its text agree
    parts = [f"step {step} / {total}" if total else f"step {step}", f"{frac:.0%}"]
    if p.get("elapsed") is not None:  # the run's training time over all its resumes
        parts.append(f"{'total time' if state in FINAL_STATES else 'elapsed'} {fmt_duration(p['elapsed'])}")
    if state in ACTIVE_STATES:
        parts.append(f"ETA {fmt_duration(p.get('eta'))}")
    tps = p.get("tokens_per_s")
    if isinstance(tps, (int, float)) and tps > 0:
        parts.append(f"{tps:,.0f} tokens/s")
        if isinstance(p.get("mfu"), (int, float)):  # how well the hardware is used: MFU (GPU), GFLOP/s (CPU)
            parts.append(f"MFU {p['mfu']:.1%}")
        elif isinstance(p.get("achieved_gflops"), (int, float)):
            parts.append(f"{p['achieved_gflops']:.2f} GFLOP/s")
    cls = "active" if state in ACTIVE_STATES else state
    return (
        f'<div class="ft-progress {html.escape(cls)}" data-state="{html.escape(state)}" data-fraction="{frac:.4f}">'
        f'<div class="ft-bar"><div class="ft-fill" style="width:{frac * 100:.1f}%"></div></div>'
        f'<div class="ft-progress-text">{html.escape(" · ".join(parts))}</div></div>'
    )


def figures(run: Run, name: str) -> dict[str, Any]:
    figs = charts.training_figures(run.metrics(), name)
    mem = figs["mem"]
    return {
        "plot_loss": figs["loss"],
        "plot_lr": figs["lr"],
        "plot_grad": figs["grad"],
        "plot_acc": figs["acc"],
        "plot_mem": gr.Plot(value=mem, visible=True) if mem is not None else gr.Plot(visible=False),
        "plot_speed": figs["speed"],
    }


def buttons(ctx: Ctx, name: str | None, p: dict | None, data_state: dict | None) -> tuple[str, dict[str, Any]]:
    """(signature, updates) of the buttons that follow the state: Start only with usable data and nothing
    training, Stop only while a run trains here, Resume only for a finished run with a checkpoint, Rename
    and Delete only for a run shown that is not training."""
    training = ctx.studio.training_now() is not None
    data_ok = not (data_state or {}).get("error")
    resumable = not training and bool(p and p.get("resumable"))
    editable = bool(name and p) and p.get("state") not in ACTIVE_STATES
    updates = {
        "start_btn": gr.Button(interactive=data_ok and not training),
        "stop_btn": gr.Button(interactive=training),
        "resume_btn": gr.Button(interactive=resumable),
        "rename_btn": gr.Button(interactive=editable),
        "delete_btn": gr.Button(interactive=editable),
    }
    return f"b{int(training)}{int(data_ok)}{int(resumable)}{int(editable)}", updates


def tick(
    ctx: Ctx,
    selected: Selection | None,
    drawn: int,
    sig: str,
    plotted_at: float = 0.0,
    data_state: dict | None = None,
    query: str = "",
) -> dict[str, Any]:
    """One poll (every second per open page): what changed since the last one, else nothing.

    `drawn` is how many metric points the page already plots and `sig` a signature of the last status
    shown; plots are rebuilt only when new points arrived, and while a run trains at most every
    PLOT_INTERVAL_S (building the figures runs in the training process, so redrawing every second cost a
    few percent of its speed). `data_state` (the Data tab's) and `query` (the history filter) decide the
    Start button and the history rows.
    """
    name = selected.run if isinstance(selected, Selection) else None
    switched = False
    if not name:  # nothing chosen yet: follow a job started elsewhere (another tab, the API)
        name = ctx.studio.training_now()
        switched = name is not None
    run = locate(ctx, name)
    if run is None:  # no run to show: only the buttons may change
        button_sig, updates = buttons(ctx, None, None, data_state)
        if sig == f"||{button_sig}":
            return {}
        return {**updates, "sig": f"||{button_sig}", "train_status": NO_RUN}
    p = ctx.studio.progress(name)
    state = p.get("state", "unknown")
    active = state in ACTIVE_STATES
    # `drawn` counts the points of the run named in `sig` (both come from the same tick): a tick that was
    # in flight when Start switched runs returns the old run's count, which must not hide the new run's points
    drawn = int(drawn or 0) if (sig or "").split("|")[0] == name else 0
    fresh = run.metrics(since=drawn)
    try:  # the log's size too: its last lines ("final state") are written after the last status change
        log_size = run.log_path.stat().st_size
    except OSError:
        log_size = 0
    button_sig, button_updates = buttons(ctx, name, p, data_state)
    new_sig = f"{name}|{state}|{p.get('message')}|{p.get('step')}|{p.get('total_steps')}|{log_size}|{button_sig}"
    if not fresh and new_sig == sig and not active and not switched:
        return {}  # the common case on an idle page: nothing is sent
    out: dict[str, Any] = {}
    if new_sig.rsplit("|", 1)[-1] != (sig or "").rsplit("|", 1)[-1]:
        out.update(button_updates)
    out["train_status"] = status_md(name, p, state not in FINAL_STATES or p.get("resumable"))
    out["train_progress"] = progress_html(p)
    due = not active or not drawn or time.time() - float(plotted_at or 0) >= PLOT_INTERVAL_S
    if (fresh and due) or (not drawn and new_sig != sig):
        out.update(figures(run, name))
        out["drawn"] = run.metrics_count()
        out["plotted_at"] = time.time()
        if active:  # the history's row of this run follows its progress at the charts' pace
            out["history"] = history_rows(ctx, live={**p, "run": name}, query=query)
    old_state = (sig or "").split("|")[1] if sig and sig.split("|")[0] == name else ""
    if active and old_state != state:  # queued -> loading -> training...: the history row says so at once
        out["history"] = history_rows(ctx, live={**p, "run": name}, query=query)
    if fresh or new_sig != sig:
        out["train_log"] = run.log_tail(40)
    out["sig"] = new_sig
    if switched:
        out["selected"] = Selection(name)
    if state in FINAL_STATES and old_state != state:
        # finished since this page last looked (or between its load and first poll): fresh run lists
        if old_state in ACTIVE_STATES:
            (gr.Info if state == "done" else gr.Warning)(f"Run {name}: {state}")
        out["history"] = history_rows(ctx, query=query)
        out.update(selection.show(ctx, Selection(name), None, None))
    return out


TICK_INPUTS = ["selected", "drawn", "sig", "plotted_at", "data_state", "history_query"]
TICK_KEYS = [
    "train_status",
    "train_progress",
    *PLOT_KEYS,
    "train_log",
    "drawn",
    "sig",
    "plotted_at",
    "history",
    "selected",
    "watch",
    "overlay_runs",
    "test_run",
    "export_run",
    "start_btn",
    "stop_btn",
    "resume_btn",
    "rename_btn",
    "delete_btn",
]


# --- handlers --------------------------------------------------------------------------------
def after_start(ctx: Ctx, run: Run, verb: str, query: str) -> dict[str, Any]:
    gr.Info(f"{verb} {run.name}")
    return {
        "train_msg": f"{verb} **{md_escape(run.name)}** — it keeps training if you close this page.",
        "selected": Selection(run.name),
        "drawn": 0,
        "sig": "",
        "history": history_rows(ctx, query=query),
        "start_btn": gr.Button(interactive=False),  # Start, Stop, Resume: the next poll confirms them
        "stop_btn": gr.Button(interactive=True),
        "resume_btn": gr.Button(interactive=False),
    }


def start(ctx: Ctx, *values) -> dict[str, Any]:
    """Start a run with the form's settings (read all at once, so a value typed just before the click
    is never lost to an event still in flight); refused while the Data tab shows the data as unusable."""
    *form, data_state, query = values
    try:
        cfg = config_form.config_from_values(form)
        unusable = (data_state or {}).get("error")
        if unusable and (data_state or {}).get("dataset_path", "") == cfg.dataset_path:
            raise FinetuneError(
                f"The data chosen in 1 · Data cannot be used: {unusable}\n"
                "Fix it there (or press “Use the sample dataset”), then start again."
            )
        run = ctx.studio.start(cfg)
    except Exception as exc:
        gr.Warning(error_text(exc))
        return {"train_msg": md_error(exc, "Training did not start")}
    return after_start(ctx, run, "Started", query)


def resume(ctx: Ctx, name: str | None, query: str) -> dict[str, Any]:
    """Resume the run shown (the selection, as "Run shown" displays it: what an API client names)."""
    try:
        if not name:
            raise FinetuneError("Pick the run to resume in 'Run shown' first.")
        run = ctx.studio.resume(name)
    except Exception as exc:
        gr.Warning(error_text(exc))
        return {"train_msg": md_error(exc, "Not resumed")}
    return after_start(ctx, run, "Resumed", query)


def stop(ctx: Ctx) -> dict[str, Any]:
    name = ctx.studio.stop()
    if name is None:
        gr.Info("Nothing is training.")
        return {"train_msg": "Nothing is training right now."}
    gr.Info(f"Stopping {name}")
    return {
        "train_msg": f"■ Stop requested for **{md_escape(name)}**: it finishes the current step, saves a checkpoint "
        "and the adapter trained so far."
    }


def refresh_lists(ctx: Ctx, name: str | None, query: str = "") -> dict:
    return {"history": history_rows(ctx, query=query), **selection.show(ctx, Selection(name), None, None)}


def pick_row(ctx: Ctx, table, evt: gr.SelectData) -> dict[str, Any]:
    """A row picked in the history: that run becomes the page's selection."""
    try:
        name = table.iloc[evt.index[0], 0]
    except Exception:
        return {}
    return selection.pick(ctx, name)


def on_load(ctx: Ctx) -> dict[str, Any]:
    """Reattach: the job running in this process, else the newest active run, else the newest run; its
    status is shown at once (not "No run yet" until the first poll)."""
    rows = history_rows(ctx)
    names = [r[0] for r in rows]
    name = ctx.studio.training_now()
    if name is None:
        name = next((r[0] for r in rows if r[STATE_COLUMN] in ACTIVE_STATES), names[0] if names else None)
    # the run lists follow from the selection (ui.selection.show, on its change)
    out: dict[str, Any] = {"selected": Selection(name), "drawn": 0, "sig": "", "history": rows}
    if name:
        p = ctx.studio.progress(name)
        out["train_status"] = status_md(name, p, p.get("state") not in FINAL_STATES or p.get("resumable"))
        out["train_progress"] = progress_html(p)
    else:
        out["train_status"] = NO_RUN
    return out


def run_status(ctx: Ctx, run_name: str = "") -> dict:
    """Progress of a run (default: the one training now, else the newest run)."""
    name = run_name or ctx.studio.training_now()
    if not name:
        names = ctx.studio.run_names()
        name = names[0] if names else None
    run = locate(ctx, name)
    if run is None:
        return {"run": name, "state": "none", "message": "no such run"}
    p = ctx.studio.progress(name)
    return json_safe(
        {
            **{k: v for k, v in p.items() if isinstance(v, (str, int, float, bool, type(None)))},
            "run": name,
            "metrics": run.metrics_count(),
            "has_adapter": run.has_adapter(),
        }
    )


# --- layout and wiring -----------------------------------------------------------------------
def build(ctx: Ctx) -> None:
    c = ctx.c
    c["train_config_md"] = gr.Markdown(elem_id="train-config")
    with gr.Row():
        c["start_btn"] = gr.Button("▶ Start training", variant="primary", elem_id="train-start", scale=2)
        c["stop_btn"] = gr.Button("■ Stop", variant="stop", elem_id="train-stop", scale=1, interactive=False)
        c["resume_btn"] = gr.Button("↻ Resume", elem_id="train-resume", scale=1, interactive=False)
    c["train_msg"] = gr.Markdown(elem_id="train-msg")
    with gr.Row(equal_height=True):
        c["watch"] = gr.Dropdown(
            choices=[],
            value=None,
            label="Run shown",
            allow_custom_value=True,
            elem_id="train-watch",
            scale=3,
            info="The charts follow this run; pick an older one to look at it.",
        )
        c["refresh_btn"] = gr.Button("Refresh", size="sm", elem_id="train-refresh", scale=0, min_width=90)
    c["train_status"] = gr.Markdown("Looking for a run in progress…", elem_id="train-status")
    c["train_progress"] = gr.HTML(progress_html({"state": ""}), elem_id="train-progress")
    time_view.build_run(ctx)
    trackers_view.build(ctx)
    with gr.Row():
        c["plot_loss"] = gr.Plot(charts.empty_figure("Loss", "No run yet"), show_label=False, elem_id="plot-loss")
        c["plot_lr"] = gr.Plot(charts.empty_figure("Learning rate", "No run yet"), show_label=False, elem_id="plot-lr")
    with gr.Row():
        c["plot_grad"] = gr.Plot(
            charts.empty_figure("Gradient norm", "No run yet"), show_label=False, elem_id="plot-grad"
        )
        c["plot_acc"] = gr.Plot(
            charts.empty_figure("Token accuracy", "No run yet"), show_label=False, elem_id="plot-acc"
        )
    c["plot_mem"] = gr.Plot(show_label=False, visible=False, elem_id="plot-mem")
    c["plot_speed"] = gr.Plot(
        charts.empty_figure("Speed and hardware use", "No run yet"), show_label=False, elem_id="plot-speed"
    )
    grpo_view.build_train(ctx)  # GRPO: the sampled completions with their rewards
    c["train_log"] = gr.Textbox(
        label="Log (last 40 lines)", lines=10, max_lines=10, interactive=False, autoscroll=True, elem_id="train-log"
    )
    history_view.build(ctx)
    c["drawn"] = gr.State(0)
    c["sig"] = gr.State("")
    c["plotted_at"] = gr.State(0.0)
    c["timer"] = gr.Timer(1.0)


def wire(ctx: Ctx) -> None:
    c = ctx.c
    quiet = {"api_visibility": "private", "show_progress": "hidden"}
    connect(
        ctx, c["timer"].tick, tick, TICK_INPUTS, TICK_KEYS, concurrency_limit=8, trigger_mode="always_last", **quiet
    )
    start_outputs = ["train_msg", "selected", "drawn", "sig", "history", "start_btn", "stop_btn", "resume_btn"]
    gpu = {"concurrency_id": GPU, "concurrency_limit": 1}
    connect(
        ctx, c["start_btn"].click, start, [FORM, "data_state", "history_query"], start_outputs,
        api_name="start_training", **gpu,
    )  # fmt: skip
    connect(ctx, c["resume_btn"].click, resume, ["watch", "history_query"], start_outputs,
            api_name="resume_training", **gpu)  # fmt: skip
    connect(ctx, c["stop_btn"].click, stop, [], ["train_msg"], api_name="stop_training")
    # the log shows its newest line: scrolled to the bottom after each update (the textarea's own autoscroll
    # only follows updates while mounted, and a tab opened later starts at the top)
    c["train_log"].change(None, None, None, js=SCROLL_LOG_JS, **quiet)
    lists = ["history", "watch", "overlay_runs", "test_run", "export_run"]
    connect(ctx, c["refresh_btn"].click, refresh_lists, ["watch", "history_query"], lists, api_name="list_runs")

    def picked(table, evt: gr.SelectData):  # Gradio passes the selection by this annotation
        out = pick_row(ctx, table, evt)
        return [out.get(key, gr.skip()) for key in ("selected", "drawn", "sig")]

    c["history"].select(picked, c["history"], ctx.comps(["selected", "drawn", "sig"]), **quiet)
    load = connect(
        ctx, ctx.blocks.load, on_load, [],
        ["selected", "drawn", "sig", "history", "train_status", "train_progress"], **quiet,
    )  # fmt: skip
    connect(ctx, load.then, tick, TICK_INPUTS, TICK_KEYS, **quiet)

    def run_status_api(run_name: str = "") -> dict:
        """Progress of a run (default: the one training now, else the newest run)."""
        return run_status(ctx, run_name)

    gr.api(run_status_api, api_name="run_status")
    history_view.wire(ctx)
    time_view.wire_run(ctx)
    trackers_view.wire(ctx)

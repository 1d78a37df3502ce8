"""Train tab: Start / Stop / Resume, live progress and charts, log tail, run history.

Engine calls (all through the Studio): start, resume, stop, training_now, progress (one path for a
run training here or only on disk), runs, run (Run.metrics/log_tail), rename, delete.
Training runs in the engine's thread; this tab only polls (gr.Timer, 1 s), so closing the
browser never stops a run and a reloaded page reattaches to it.
"""

from __future__ import annotations

import html
import time
from typing import Any

import gradio as gr

from finetune.errors import FinetuneError
from finetune.studio import ACTIVE_STATES, FINAL_STATES, Run
from ui import charts, config_form, history_view, time_view, trackers_view
from ui.history_view import STATE_COLUMN, history_rows
from ui.state import GPU, Ctx, error_text, fmt_duration, json_safe, md_error, md_escape, run_dropdown_update

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


def locate(ctx: Ctx, name: str | None):
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
    frac = float(p.get("fraction") or 0.0)
    state = p.get("state", "")
    if state == "done":
        frac = 1.0
    step, total = p.get("step") or 0, p.get("total_steps") or 0
    parts = [f"step {step} / {total}" if total else f"step {step}", f"{frac:.0%}"]
    if p.get("elapsed") is not None:
        parts.append(f"elapsed {fmt_duration(p['elapsed'])}")
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
        f'<div class="ft-progress {html.escape(cls)}" data-state="{html.escape(state)}">'
        f'<div class="ft-bar"><div class="ft-fill" style="width:{frac * 100:.1f}%"></div></div>'
        f'<div class="ft-progress-text">{html.escape(" · ".join(parts))}</div></div>'
    )


def figures(run: Run, name: str) -> list:
    figs = charts.training_figures(run.metrics(), name)
    mem = figs["mem"]
    return [
        figs["loss"],
        figs["lr"],
        figs["grad"],
        figs["acc"],
        gr.Plot(value=mem, visible=True) if mem is not None else gr.Plot(visible=False),
        figs["speed"],
    ]


def buttons(ctx: Ctx, p: dict | None, data_state: dict | None) -> tuple[str, dict[str, Any]]:
    """(signature, updates) of Start / Stop / Resume: Start only with usable data and nothing training,
    Stop only while a run trains here, Resume only for a finished run with a checkpoint."""
    training = ctx.studio.training_now() is not None
    data_ok = not (data_state or {}).get("error")
    resumable = not training and bool(p and p.get("resumable"))
    updates = {
        "start_btn": gr.Button(interactive=data_ok and not training),
        "stop_btn": gr.Button(interactive=training),
        "resume_btn": gr.Button(interactive=resumable),
    }
    return f"b{int(training)}{int(data_ok)}{int(resumable)}", updates


def tick(
    ctx: Ctx,
    watched: str | None,
    drawn: int,
    sig: str,
    plotted_at: float = 0.0,
    data_state: dict | None = None,
    query: str = "",
) -> list:
    """One poll (every second per open page): what changed since the last one, else gr.skip().

    Outputs follow TICK_KEYS. `drawn` is how many metric points the page already plots and `sig`
    a signature of the last status shown; plots are rebuilt only when new points arrived, and
    while a run trains at most every PLOT_INTERVAL_S (building the figures runs in the training
    process, so redrawing every second cost a few percent of its speed). `data_state` (the Data
    tab's) and `query` (the history filter) decide the Start button and the history rows.
    """
    skip = [gr.skip()] * len(TICK_KEYS)
    name = watched
    switched = False
    if not name:  # nothing chosen yet: follow a job started elsewhere (another tab, the API)
        name = ctx.studio.training_now()
        switched = name is not None
    run = locate(ctx, name)
    if run is None:  # no run to show: only the buttons may change
        button_sig, updates = buttons(ctx, None, data_state)
        if sig == f"||{button_sig}":
            return skip
        return [updates.get(k, f"||{button_sig}" if k == "sig" else gr.skip()) for k in TICK_KEYS]
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
    button_sig, button_updates = buttons(ctx, p, data_state)
    new_sig = f"{name}|{state}|{p.get('message')}|{p.get('step')}|{p.get('total_steps')}|{log_size}|{button_sig}"
    if not fresh and new_sig == sig and not active and not switched:
        return skip  # the common case on an idle page: nothing is sent
    out: dict[str, Any] = {k: gr.skip() for k in TICK_KEYS}
    if new_sig.rsplit("|", 1)[-1] != (sig or "").rsplit("|", 1)[-1]:
        out.update(button_updates)
    out["train_status"] = status_md(name, p, state not in FINAL_STATES or p.get("resumable"))
    out["train_progress"] = progress_html(p)
    due = not active or not drawn or time.time() - float(plotted_at or 0) >= PLOT_INTERVAL_S
    if (fresh and due) or (not drawn and new_sig != sig):
        for key, fig in zip(
            ("plot_loss", "plot_lr", "plot_grad", "plot_acc", "plot_mem", "plot_speed"), figures(run, name)
        ):
            out[key] = fig
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
        out["watch"] = run_dropdown_update(ctx.studio, None, prefer=name, with_adapter=False)
    if state in FINAL_STATES and old_state != state:
        # finished since this page last looked (or between its load and first poll): fresh run lists
        if old_state in ACTIVE_STATES:
            (gr.Info if state == "done" else gr.Warning)(f"Run {name}: {state}")
        out["history"] = history_rows(ctx, query=query)
        out["overlay_runs"] = gr.Dropdown(choices=ctx.studio.run_names())
        out["test_run"] = run_dropdown_update(ctx.studio, None, prefer=name)
        out["export_run"] = run_dropdown_update(ctx.studio, None, prefer=name)
    return [out[k] for k in TICK_KEYS]


TICK_KEYS = [
    "train_status",
    "train_progress",
    "plot_loss",
    "plot_lr",
    "plot_grad",
    "plot_acc",
    "plot_mem",
    "plot_speed",
    "train_log",
    "drawn",
    "sig",
    "plotted_at",
    "history",
    "watch",
    "overlay_runs",
    "test_run",
    "export_run",
    "start_btn",
    "stop_btn",
    "resume_btn",
]
PLOT_INTERVAL_S = 3.0
SCROLL_LOG_JS = """() => {
  const bottom = () => document.querySelectorAll('#train-log textarea').forEach(t => { t.scrollTop = t.scrollHeight; });
  requestAnimationFrame(bottom); setTimeout(bottom, 250);
}"""


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
    c["train_status"] = gr.Markdown("No run yet: press **Start training**.", elem_id="train-status")
    c["train_progress"] = gr.HTML(progress_html({"state": "", "fraction": 0}), elem_id="train-progress")
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
    c["train_log"] = gr.Textbox(
        label="Log (last 40 lines)", lines=10, max_lines=10, interactive=False, autoscroll=True, elem_id="train-log"
    )
    history_view.build(ctx)
    c["drawn"] = gr.State(0)
    c["sig"] = gr.State("")
    c["plotted_at"] = gr.State(0.0)
    c["timer"] = gr.Timer(1.0)


def wire(ctx: Ctx) -> None:
    c, fields = ctx.c, ctx.field_list
    tick_outputs = [c[k] for k in TICK_KEYS]

    def poll(watched, drawn, sig, plotted_at, data_state, query):
        return tick(ctx, watched, drawn, sig, plotted_at, data_state, query)

    poll_inputs = [c["watch"], c["drawn"], c["sig"], c["plotted_at"], c["data_state"], c["history_query"]]
    c["timer"].tick(
        poll,
        poll_inputs,
        tick_outputs,
        show_progress="hidden",
        api_visibility="private",
        concurrency_limit=8,
        trigger_mode="always_last",
    )

    def after_start(run, verb: str, query: str) -> list:
        names = ctx.studio.run_names()
        msg = f"{verb} **{md_escape(run.name)}** — it keeps training if you close this page."
        gr.Info(f"{verb} {run.name}")
        return [
            msg,
            gr.Dropdown(choices=names, value=run.name),
            0,
            "",
            history_rows(ctx, query=query),
            gr.Dropdown(choices=names),
            gr.Button(interactive=False),  # Start, Stop, Resume: the next poll confirms them
            gr.Button(interactive=True),
            gr.Button(interactive=False),
        ]

    start_outputs = [
        c["train_msg"],
        c["watch"],
        c["drawn"],
        c["sig"],
        c["history"],
        c["overlay_runs"],
        c["start_btn"],
        c["stop_btn"],
        c["resume_btn"],
    ]
    fail = [gr.skip()] * (len(start_outputs) - 1)

    def start(*values):
        *values, data_state, query = values
        try:
            cfg = config_form.config_from_values(values)
            unusable = (data_state or {}).get("error")
            if unusable and (data_state or {}).get("dataset_path", "") == cfg.dataset_path:
                raise FinetuneError(
                    f"The data chosen in 1 · Data cannot be used: {unusable}\n"
                    "Fix it there (or press “Use the sample dataset”), then start again."
                )
            run = ctx.studio.start(cfg)
        except Exception as exc:
            gr.Warning(error_text(exc))
            return [md_error(exc, "Training did not start")] + fail
        return after_start(run, "Started", query)

    c["start_btn"].click(
        start,
        [*fields, c["data_state"], c["history_query"]],
        start_outputs,
        api_name="start_training",
        concurrency_id=GPU,
        concurrency_limit=1,
    )

    def resume(name, query):
        try:
            if not name:
                raise FinetuneError("Pick the run to resume in 'Run shown' first.")
            run = ctx.studio.resume(name)
        except Exception as exc:
            gr.Warning(error_text(exc))
            return [md_error(exc, "Not resumed")] + fail
        return after_start(run, "Resumed", query)

    c["resume_btn"].click(
        resume,
        [c["watch"], c["history_query"]],
        start_outputs,
        api_name="resume_training",
        concurrency_id=GPU,
        concurrency_limit=1,
    )

    def stop():
        name = ctx.studio.stop()
        if name is None:
            gr.Info("Nothing is training.")
            return "Nothing is training right now."
        gr.Info(f"Stopping {name}")
        return (
            f"■ Stop requested for **{md_escape(name)}**: it finishes the current step, saves a checkpoint "
            "and the adapter trained so far."
        )

    c["stop_btn"].click(stop, None, c["train_msg"], api_name="stop_training")

    # the log shows its newest line: scrolled to the bottom after each update (the textarea's own autoscroll
    # only follows updates while mounted, and a tab opened later starts at the top)
    c["train_log"].change(None, None, None, js=SCROLL_LOG_JS, api_visibility="private", show_progress="hidden")

    def refresh_history(watched, query=""):
        names = ctx.studio.run_names()
        return (
            history_rows(ctx, query=query),
            gr.Dropdown(choices=names, value=watched if watched in names else None),
            gr.Dropdown(choices=names),
        )

    c["refresh_btn"].click(
        refresh_history,
        [c["watch"], c["history_query"]],
        [c["history"], c["watch"], c["overlay_runs"]],
        api_name="list_runs",
    )

    def pick_row(table, test_current, export_current, evt: gr.SelectData):
        """A row picked in the history: the run shown here, and in Test and Export when it has an adapter."""
        try:
            name = table.iloc[evt.index[0], 0]
        except Exception:
            return [gr.skip()] * 5
        return (
            name,
            0,
            "",
            run_dropdown_update(ctx.studio, test_current, prefer=name),
            run_dropdown_update(ctx.studio, export_current, prefer=name),
        )

    c["history"].select(
        pick_row,
        [c["history"], c["test_run"], c["export_run"]],
        [c["watch"], c["drawn"], c["sig"], c["test_run"], c["export_run"]],
        api_visibility="private",
    )

    def on_load():
        """Reattach: the job running in this process, else the newest active run, else the newest run."""
        rows = history_rows(ctx)
        names = [r[0] for r in rows]
        name = ctx.studio.training_now()
        if name is None:
            name = next((r[0] for r in rows if r[STATE_COLUMN] in ACTIVE_STATES), names[0] if names else None)
        return gr.Dropdown(choices=names, value=name), 0, "", rows, gr.Dropdown(choices=names)

    load = ctx.blocks.load(
        on_load, None, [c["watch"], c["drawn"], c["sig"], c["history"], c["overlay_runs"]], api_visibility="private"
    )
    load.then(
        poll,
        poll_inputs,
        tick_outputs,
        api_visibility="private",
        show_progress="hidden",
    )

    def run_status(run_name: str = "") -> dict:
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

    gr.api(run_status, api_name="run_status")
    history_view.wire(ctx)
    time_view.wire_run(ctx)
    trackers_view.wire(ctx)

"""Checkpoints view (inside the Test tab): which checkpoint is best? Every saved checkpoint and the final
adapter scored the same way (batch evaluation on the held-out rows, or benchmark tasks) as a curve: the metric
per step, the base as a dashed line, the best point starred, the training's eval_loss beside it. Then
"export this checkpoint" (adapter zip or merged model, through the export desk) or "continue from this
checkpoint" (it becomes the Model tab's Start from: a new run continues its adapter).

Engine calls: the Studio's judging desk (checkpoint_curve with progress/stop under the GPU lease,
latest_curve, curve_figure) and export desk (export_checkpoint, zip_adapter, merge). Curves are saved by
the engine in <run>/evaluations/curve-*.json; the latest is shown when a run is chosen.
"""

from __future__ import annotations

from functools import partial

import gradio as gr

from finetune.errors import FinetuneError
from ui.eval_common import StopFlag, progress_callback, request_stop, settings_from
from ui.state import GPU, Ctx, error_text, md_error, md_escape

KINDS = [("Batch evaluation (held-out rows)", "batch"), ("Benchmark tasks (lm-eval)", "benchmark")]


def build(ctx: Ctx) -> None:
    c = ctx.c
    gr.Markdown(
        "Which checkpoint is best? Score every saved checkpoint and the final adapter the same way and read the "
        "curve; then export the best one or continue training from it. How many checkpoints a run keeps is "
        "set by save_total_limit (the Model tab says how many and their size).",
        elem_id="curve-intro",
    )
    c["curve_stop_flag"] = gr.State(StopFlag())
    with gr.Row(equal_height=True):
        c["curve_kind"] = gr.Radio(KINDS, value="batch", label="Score with", elem_id="curve-kind", scale=2)
        c["curve_tasks"] = gr.Textbox(value="finetune_general", label="Benchmark tasks (for benchmark tasks)",
                                      elem_id="curve-tasks", scale=2)  # fmt: skip
        c["curve_limit"] = gr.Number(value=10, precision=0, minimum=1, label="Rows / questions per point",
                                     elem_id="curve-limit", scale=1)  # fmt: skip
    with gr.Row():
        c["curve_start"] = gr.Button("Score every checkpoint", variant="primary", elem_id="curve-start", scale=3)
        c["curve_stop"] = gr.Button("Stop", variant="stop", elem_id="curve-stop", scale=1)
    c["curve_msg"] = gr.Markdown(elem_id="curve-msg")
    c["curve_metric"] = gr.Dropdown(choices=[], label="Best by", elem_id="curve-metric", interactive=True)
    c["curve_plot"] = gr.Plot(show_label=False, elem_id="curve-plot")
    c["curve_table"] = gr.Dataframe(interactive=False, wrap=True, label="Scores per checkpoint", elem_id="curve-table")
    with gr.Row(equal_height=True):
        c["curve_point"] = gr.Dropdown(choices=[], label="Checkpoint", elem_id="curve-point", scale=2)
        c["curve_zip"] = gr.Button("Export this checkpoint (adapter zip)", elem_id="curve-zip", scale=1)
        c["curve_merge"] = gr.Button("Merge this checkpoint", elem_id="curve-merge", scale=1)
        c["curve_continue"] = gr.Button("Continue from this checkpoint", elem_id="curve-continue", scale=1)
    c["curve_action_msg"] = gr.Markdown(elem_id="curve-action-msg")
    c["curve_file"] = gr.File(label="Exported checkpoint", interactive=False, height=90, elem_id="curve-file")


def curve_table(curve):
    import pandas as pd

    best = curve.best()
    rows = [{"point": "base", "step": None, **{m: _round(curve.base.get(m)) for m in curve.metrics}, "eval_loss": None}]
    for p in curve.points:
        name = p.name + (" ★ best" if best is not None and p.name == best.name else "")
        rows.append({"point": name, "step": p.step, **{m: _round(p.scores.get(m)) for m in curve.metrics},
                     "eval_loss": _round(p.eval_loss)})  # fmt: skip
    return pd.DataFrame(rows)


def _round(value):
    return round(value, 4) if isinstance(value, float) else value


def curve_message(curve, prefix: str) -> str:
    best = curve.best()
    what = f"{curve.kind}: {md_escape(curve.source)}"
    if curve.stopped and not curve.points:
        return "■ Stopped before any checkpoint was scored."
    stopped = " **Stopped early**: the points not reached are missing." if curve.stopped else ""
    if best is None:
        return f"{prefix} {len(curve.points)} point(s) ({what}), none scored on {md_escape(curve.metric)}.{stopped}"
    value = best.scores[curve.metric]
    base = curve.base.get(curve.metric)
    versus = f" (base {base:.4g})" if isinstance(base, (int, float)) else ""
    return (
        f"{prefix} {len(curve.points)} point(s) ({what}). **Best by {md_escape(curve.metric)}: {md_escape(best.name)}** "
        f"(step {best.step}, {value:.4g}{versus}).{stopped}"
    )


def view(ctx: Ctx, curve, metric: str | None = None):
    """(message, metric dropdown, plot, table, point dropdown) of a curve, or empty ones."""
    if curve is None:
        empty = gr.Dropdown(choices=[], value=None)
        return "*No checkpoint curve of this run yet.*", empty, None, None, empty
    if metric and metric in curve.metrics:
        curve.metric = metric
    best = curve.best()
    points = [(f"{p.name} (step {p.step})", p.name) for p in curve.points]
    return (
        curve_message(curve, "Curve:"),
        gr.Dropdown(choices=curve.metrics, value=curve.metric),
        ctx.studio.judge.curve_figure(curve),
        curve_table(curve),
        gr.Dropdown(choices=points, value=best.name if best else (points[-1][1] if points else None)),
    )


def score(ctx: Ctx, run_name, kind, tasks, limit, stop: StopFlag, system, temperature, top_p, max_new, seed,
          progress=gr.Progress()):  # fmt: skip
    stop.clear()
    try:
        ctx.studio.lease.refuse_while_training("scoring every checkpoint")
        settings = settings_from(system, temperature, top_p, max_new, seed)
        progress(0.0, desc="Loading the models")
        stop.running = True
        report = progress_callback(progress, "Answering", "answers") if kind == "batch" else None
        curve = ctx.studio.judge.checkpoint_curve(
            run_name,
            kind=kind,
            limit=int(limit or 10),
            settings=settings,
            tasks=tasks or "",
            progress=report or (lambda f, m: progress(f, desc=m)),
            stop=stop,
        )
    except Exception as exc:
        gr.Warning(error_text(exc))
        return md_error(exc, "No curve"), *([gr.skip()] * 4)
    finally:
        stop.running = False
    message, *rest = view(ctx, curve)
    return (message.replace("Curve:", "✔ Done:", 1), *rest)


def repick(ctx: Ctx, run_name, metric):
    """Another metric picks the best point: message, plot, table, point."""
    try:
        curve = ctx.studio.judge.latest_curve(run_name) if run_name else None
    except Exception as exc:
        return md_error(exc, "Cannot show the curve"), gr.skip(), gr.skip(), gr.skip()
    message, _, plot, frame, point = view(ctx, curve, metric)
    return message, plot, frame, point


RUN_OUTPUTS = ("curve_msg", "curve_metric", "curve_plot", "curve_table", "curve_point")  # what `latest` returns


def latest(ctx: Ctx, run_name):
    if not run_name:
        return view(ctx, None)
    try:
        return view(ctx, ctx.studio.judge.latest_curve(run_name))
    except Exception as exc:
        empty = gr.Dropdown(choices=[], value=None)
        return md_error(exc, "Cannot show the last curve"), empty, None, None, empty


def _point(run_name, point):
    if not run_name:
        raise FinetuneError("Pick a run first.")
    if not point:
        raise FinetuneError("Score the checkpoints first, then pick one.")
    return point


def export_point(ctx: Ctx, kind: str, run_name, point, progress=gr.Progress()):
    """Outputs: action message, file."""
    try:
        point = _point(run_name, point)
        if kind == "zip":
            path = (ctx.studio.export.zip_adapter(run_name) if point == "final"
                    else ctx.studio.export.export_checkpoint(run_name, point, "zip"))  # fmt: skip
            return f"✔ {md_escape(point)} exported as **{md_escape(path.name)}**.", str(path)
        report = lambda f, m: progress(f, desc=m)  # noqa: E731 - the export desk's (fraction, message)
        merged = (ctx.studio.export.merge(run_name, report) if point == "final"
                  else ctx.studio.export.export_checkpoint(run_name, point, "merge", report))  # fmt: skip
        return (f"✔ {md_escape(point)} merged into `{md_escape(merged.where)}` ({merged.size_mb:.1f} MB, "
                f"{md_escape(merged.dtype or 'weights')}).", None)  # fmt: skip
    except Exception as exc:
        gr.Warning(error_text(exc))
        return md_error(exc, "Not exported"), None


def continue_from(ctx: Ctx, run_name, point):
    """The point becomes the Model tab's Start from. Outputs: action message, start_from_run field, tabs."""
    try:
        point = _point(run_name, point)
        ref = ctx.studio.judge.start_ref(run_name, point)
    except Exception as exc:
        gr.Warning(error_text(exc))
        return md_error(exc, "Not set"), gr.skip(), gr.skip()
    gr.Info(f"Start from: {ref}")
    note = (f"✔ The next run starts from **{md_escape(ref)}** (Model tab → Start from); pick its data and objective, "
            "then press Start.")  # fmt: skip
    return note, ref, gr.Tabs(selected="model")


def wire(ctx: Ctx, settings_inputs: list) -> None:
    c = ctx.c
    shown = [c[k] for k in RUN_OUTPUTS]
    c["curve_start"].click(
        partial(score, ctx),
        [c["test_run"], c["curve_kind"], c["curve_tasks"], c["curve_limit"], c["curve_stop_flag"], *settings_inputs],
        shown,
        api_name="checkpoint_curve",
        concurrency_id=GPU,
        concurrency_limit=1,
    )
    c["curve_stop"].click(partial(request_stop, what="scoring"), c["curve_stop_flag"], c["curve_msg"],
                          api_name="stop_curve")  # fmt: skip
    c["curve_metric"].input(
        partial(repick, ctx),
        [c["test_run"], c["curve_metric"]],
        [c["curve_msg"], c["curve_plot"], c["curve_table"], c["curve_point"]],
        api_name="curve_metric",
    )
    acts = [c["curve_action_msg"], c["curve_file"]]
    c["curve_zip"].click(partial(export_point, ctx, "zip"), [c["test_run"], c["curve_point"]], acts,
                         api_name="export_checkpoint", concurrency_id=GPU, concurrency_limit=1)  # fmt: skip
    c["curve_merge"].click(partial(export_point, ctx, "merge"), [c["test_run"], c["curve_point"]], acts,
                           api_name="merge_checkpoint", concurrency_id=GPU, concurrency_limit=1)  # fmt: skip
    start_from = ctx.fields["start_from_run"]
    ev = c["curve_continue"].click(partial(continue_from, ctx), [c["test_run"], c["curve_point"]],
                                   [c["curve_action_msg"], start_from, c["tabs"]], api_name="continue_from_checkpoint")  # fmt: skip
    ctx.hooks["refresh"](ev)  # the Model tab's Start from, estimate and summary follow

"""Charts of the benchmarks and the checkpoint curve: plotly figures for the app (the Test tab's colours:
base grey, fine-tuned blue; worse beyond noise red) and inline SVG for the offline report."""

from __future__ import annotations

from typing import Any

from finetune.evaluation.charts import COLORS, svg_lines

WORSE = "#d9534f"
BEST = "#2ca02c"


def benchmark_figure(bench: Any):
    """Grouped bars per task and metric: base and fine-tuned with 95% error bars; a fine-tuned bar that is
    worse beyond noise is red."""
    import plotly.graph_objects as go

    rows = [r for r in bench.rows if r.base is not None and r.finetuned is not None]
    labels = [f"{r.task} · {r.metric}" for r in rows]
    fig = go.Figure()
    fig.add_bar(
        name="base",
        x=labels,
        y=[r.base for r in rows],
        error_y={"type": "data", "array": [1.96 * (r.base_stderr or 0) for r in rows]},
        marker_color=COLORS["base"],
    )
    fig.add_bar(
        name="fine-tuned (red: worse beyond noise)",
        x=labels,
        y=[r.finetuned for r in rows],
        error_y={"type": "data", "array": [1.96 * (r.finetuned_stderr or 0) for r in rows]},
        marker_color=[WORSE if r.worse else COLORS["finetuned"] for r in rows],
        text=[f"{r.diff:+.3f}" if r.diff is not None else "" for r in rows],
        textposition="outside",
    )
    title = f"{', '.join(bench.tasks)}" + (f" (first {bench.limit} questions per task)" if bench.limit else "")
    fig.update_layout(
        barmode="group",
        title=title,
        yaxis={"title": "score", "rangemode": "tozero"},
        uirevision="benchmark",
        margin={"l": 40, "r": 10, "t": 40, "b": 60},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def curve_figure(curve: Any, metric: str | None = None):
    """The metric per step (fine-tuned at each checkpoint and the final adapter), the base as a dashed line,
    the best point starred; the training's eval_loss on a second axis when it was logged at those steps."""
    import plotly.graph_objects as go

    metric = metric or curve.metric
    points = [p for p in curve.points if isinstance(p.scores.get(metric), (int, float))]
    fig = go.Figure()
    fig.add_scatter(
        name=f"fine-tuned {metric}",
        x=[p.step for p in points],
        y=[p.scores[metric] for p in points],
        text=[p.name for p in points],
        mode="lines+markers",
        line={"color": COLORS["finetuned"]},
        hovertemplate="%{text} (step %{x}): %{y:.4f}<extra></extra>",
    )
    base = curve.base.get(metric)
    if isinstance(base, (int, float)):
        fig.add_hline(y=base, line={"color": COLORS["base"], "dash": "dash"}, annotation_text=f"base {base:.3f}")
    best = curve.best(metric)
    if best is not None:
        fig.add_scatter(
            name=f"best: {best.name}",
            x=[best.step],
            y=[best.scores[metric]],
            mode="markers",
            marker={"symbol": "star", "size": 16, "color": BEST},
        )
    losses = [p for p in points if isinstance(p.eval_loss, (int, float))]
    if losses:
        fig.add_scatter(
            name="eval_loss (training)",
            x=[p.step for p in losses],
            y=[p.eval_loss for p in losses],
            mode="lines+markers",
            line={"color": COLORS["eval_loss"], "dash": "dot"},
            yaxis="y2",
        )
    fig.update_layout(
        title=f"{metric} per checkpoint ({curve.kind}: {curve.source})",
        xaxis={"title": "step"},
        yaxis={"title": metric},
        yaxis2={"title": "eval_loss", "overlaying": "y", "side": "right", "showgrid": False},
        uirevision="curve",
        margin={"l": 50, "r": 50, "t": 40, "b": 40},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def svg_curve(curve: Any) -> str:
    """The curve for the report: the metric per step and the base as a flat line (inline SVG)."""
    metric = curve.metric
    base = curve.base.get(metric)
    records = [{"step": p.step, metric: p.scores.get(metric)} for p in curve.points]
    if isinstance(base, (int, float)):
        records += [{"step": p.step, "base": base} for p in curve.points]
    return svg_lines(records, keys=(metric, "base"))

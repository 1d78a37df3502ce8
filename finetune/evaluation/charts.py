"""Charts: plotly figures for the app (gr.Plot takes them as they are) and small inline SVG
versions for reports, which must open offline without a 4 MB plotly.js inside every file."""

from __future__ import annotations

from html import escape
from typing import Any

COLORS = {"base": "#8c8c8c", "finetuned": "#2f6fdf", "loss": "#2f6fdf", "eval_loss": "#e0702f"}
LABELS = {"base": "base", "finetuned": "fine-tuned"}


def summary_metrics(summary: dict[str, Any]) -> list[str]:
    """The metrics a summary has values for, in display order."""
    names = ["exact_match", "token_f1", "rouge_l", "bleu"]  # perplexity is not a 0-1 share: tables only
    if "preference_pairs" in summary:  # a share like the others (mean_margin, in nats, is not drawn)
        names = ["preference_accuracy", *names]
    if summary.get("label_like"):
        names += ["accuracy", "macro_f1"]
    names = [m for m in summary.get("extra_metrics") or [] if m not in names] + names  # e.g. GRPO's mean_reward
    return [m for m in names if any(isinstance(summary.get(s, {}).get(m), (int, float)) for s in COLORS)]


def summary_figure(summary: dict[str, Any]):
    """Grouped bars: each metric (0-1) for base and fine-tuned."""
    import plotly.graph_objects as go

    metrics = summary_metrics(summary)
    fig = go.Figure()
    for model in ("base", "finetuned"):
        stats = summary.get(model, {})
        values = [stats.get(m) or 0.0 for m in metrics]
        fig.add_bar(
            name=LABELS[model],
            x=metrics,
            y=values,
            marker_color=COLORS[model],
            text=[f"{v:.2f}" for v in values],
            textposition="outside",
        )
    fig.update_layout(
        barmode="group",
        yaxis={"range": [0, 1.1], "title": "score"},
        title=f"Evaluation on {summary.get('n', 0)} rows",
        uirevision="evaluation",
        margin={"l": 40, "r": 10, "t": 40, "b": 40},
    )
    return fig


def tally_figure(tally: Any):
    """One stacked bar of the votes: fine-tuned wins, ties, base wins, both bad."""
    import plotly.graph_objects as go

    parts = [
        ("fine-tuned better", tally.wins, COLORS["finetuned"]),
        ("tie", tally.ties, "#c9c9c9"),
        ("base better", tally.losses, COLORS["base"]),
        ("both bad", tally.both_bad, "#d9534f"),
    ]
    fig = go.Figure()
    for name, count, color in parts:
        fig.add_bar(name=name, y=["votes"], x=[count], orientation="h", marker_color=color, text=[count])
    fig.update_layout(barmode="stack", height=180, uirevision="votes", margin={"l": 50, "r": 10, "t": 10, "b": 30})
    return fig


# inline SVG -----------------------------------------------------------------------------
def svg_bars(summary: dict[str, Any], width: int = 560, height: int = 240) -> str:
    """Grouped bars like `summary_figure`, as a standalone <svg> string."""
    metrics = summary_metrics(summary)
    if not metrics:
        return ""
    left, bottom, top = 40, 30, 20
    plot_h = height - bottom - top
    group_w = (width - left - 10) / len(metrics)
    bar_w = group_w * 0.35
    parts = [_axis(left, top, plot_h, width, (0, 1))]
    for i, metric in enumerate(metrics):
        x0 = left + i * group_w + group_w * 0.15
        for j, model in enumerate(("base", "finetuned")):
            value = summary.get(model, {}).get(metric) or 0.0
            h = max(0.0, min(1.0, float(value))) * plot_h
            x, y = x0 + j * bar_w, top + plot_h - h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w * 0.95:.1f}" height="{h:.1f}" '
                f'fill="{COLORS[model]}"><title>{LABELS[model]} {escape(metric)}: {value:.3f}</title></rect>'
            )
            parts.append(_text(x + bar_w / 2, y - 3, f"{value:.2f}", size=10))
        parts.append(_text(x0 + bar_w, height - 10, metric, size=11))
    parts.append(_legend(width - 170, 12, [("base", COLORS["base"]), ("fine-tuned", COLORS["finetuned"])]))
    return _svg(width, height, parts, "Evaluation metrics, base vs fine-tuned")


def svg_lines(
    records: list[dict[str, Any]], keys: tuple[str, ...] = ("loss", "eval_loss"), width: int = 560, height: int = 240
) -> str:
    """Training curves (value per step) as a standalone <svg> string; '' without data."""
    series = {k: [(r["step"], r[k]) for r in records if _num(r.get(k)) and _num(r.get("step"))] for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return ""
    points = [p for v in series.values() for p in v]
    x_lo, x_hi = min(p[0] for p in points), max(p[0] for p in points)
    y_lo, y_hi = min(p[1] for p in points), max(p[1] for p in points)
    x_hi, y_hi = (x_hi if x_hi > x_lo else x_lo + 1), (y_hi if y_hi > y_lo else y_lo + 1)
    left, bottom, top = 50, 30, 20
    plot_w, plot_h = width - left - 10, height - bottom - top
    parts = [_axis(left, top, plot_h, width, (y_lo, y_hi))]
    for key, values in series.items():
        xy = [
            (left + (x - x_lo) / (x_hi - x_lo) * plot_w, top + plot_h - (y - y_lo) / (y_hi - y_lo) * plot_h)
            for x, y in values
        ]
        color = COLORS.get(key, "#333")
        if len(xy) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>' for x, y in xy]
    parts.append(_text(left, height - 10, f"step {x_lo:g}", size=11, anchor="start"))
    parts.append(_text(width - 10, height - 10, f"step {x_hi:g}", size=11, anchor="end"))
    parts.append(_legend(width - 170, 12, [(k, COLORS.get(k, "#333")) for k in series]))
    return _svg(width, height, parts, "Training curves: " + ", ".join(series))


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _svg(width: int, height: int, parts: list[str], title: str) -> str:
    body = "".join(parts)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(title)}" font-family="sans-serif">{body}</svg>'
    )


def _text(x: float, y: float, text: str, size: int = 11, anchor: str = "middle") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}">{escape(str(text))}</text>'


def _axis(left: float, top: float, plot_h: float, width: float, y_range: tuple[float, float]) -> str:
    lo, hi = y_range
    base = top + plot_h
    return (
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="#999"/>'
        f'<line x1="{left}" y1="{base}" x2="{width - 10}" y2="{base}" stroke="#999"/>'
        + _text(left - 4, top + 4, f"{hi:.3g}", size=10, anchor="end")
        + _text(left - 4, base, f"{lo:.3g}", size=10, anchor="end")
    )


def _legend(x: float, y: float, items: list[tuple[str, str]]) -> str:
    out = []
    for i, (label, color) in enumerate(items):
        xi = x + i * 85
        out.append(f'<rect x="{xi:.1f}" y="{y - 8:.1f}" width="10" height="10" fill="{color}"/>')
        out.append(_text(xi + 14, y + 1, label, size=11, anchor="start"))
    return "".join(out)

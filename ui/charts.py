"""Plotly figures for the app. Pure functions of plain data (metric dicts, lengths, estimates).

Every live figure carries a constant `layout.uirevision` (per run), so Plotly.react keeps the
user's zoom and hidden traces while new points arrive.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

COLORS = {
    "train": "#2563eb",
    "train_raw": "rgba(37, 99, 235, 0.28)",
    "eval": "#ea580c",
    "lr": "#059669",
    "grad": "#7c3aed",
    "acc": "#0891b2",
    "mem": "#db2777",
    "mem2": "rgba(219, 39, 119, 0.35)",
}
PALETTE = ["#2563eb", "#ea580c", "#059669", "#7c3aed", "#db2777", "#0891b2", "#ca8a04", "#4b5563"]
HEIGHT = 300
_AXIS = {"gridcolor": "#ebf0f8", "zerolinecolor": "#ebf0f8", "linecolor": "#d1d5db", "automargin": True}
# A small template built once: assigning "plotly_white" deep-copies and validates the whole
# built-in template on every figure, which made one poll tick cost ~45 ms of the training process.
_TEMPLATE = go.layout.Template(
    layout={
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "font": {"color": "#2a3f5f"},
        "colorway": PALETTE,
        "xaxis": _AXIS,
        "yaxis": _AXIS,
        "hoverlabel": {"align": "left"},
    }
)


def _layout(fig: go.Figure, title: str, ytitle: str, uirevision: str, xtitle: str = "step") -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.02, "xanchor": "left", "font": {"size": 15}},
        template=_TEMPLATE,
        height=HEIGHT,
        margin={"l": 55, "r": 15, "t": 45, "b": 40},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1},
        uirevision=uirevision,
        hovermode="x unified",
    )
    fig.update_xaxes(title_text=xtitle)
    fig.update_yaxes(title_text=ytitle)
    return fig


def empty_figure(title: str, message: str, uirevision: str = "empty") -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(
        text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"color": "#6b7280"}
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, "", uirevision)


def ema(values: list[float], weight: float = 0.6) -> list[float]:
    """Debiased exponential moving average (TensorBoard-style smoothing)."""
    out, last, norm = [], 0.0, 0.0
    for v in values:
        last = weight * last + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(last / norm)
    return out


def series(metrics: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the records that hold a finite number under `key`."""
    xs, ys = [], []
    for m in metrics:
        v = m.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"):
            xs.append(m.get("step", len(xs)))
            ys.append(float(v))
    return xs, ys


def _mode(xs: list) -> str:
    """Markers while there are few points, so the first logged steps are visible."""
    return "lines+markers" if len(xs) < 25 else "lines"


def loss_figure(metrics: list[dict], run: str = "") -> go.Figure:
    xs, ys = series(metrics, "loss")
    exs, eys = series(metrics, "eval_loss")
    if not xs and not exs:
        return empty_figure("Loss", "Waiting for the first logged step…", f"{run}-loss")
    fig = go.Figure()
    if xs:
        fig.add_scatter(
            x=xs, y=ys, name="train (raw)", mode=_mode(xs), line={"color": COLORS["train_raw"], "width": 1.5}
        )
        fig.add_scatter(
            x=xs, y=ema(ys), name="train (smoothed)", mode="lines", line={"color": COLORS["train"], "width": 2.5}
        )
    if exs:
        fig.add_scatter(x=exs, y=eys, name="eval", mode="lines+markers", line={"color": COLORS["eval"], "width": 2})
    return _layout(fig, "Loss", "loss", f"{run}-loss")


def single_figure(metrics: list[dict], key: str, title: str, ytitle: str, color: str, run: str = "") -> go.Figure:
    xs, ys = series(metrics, key)
    if not xs:
        return empty_figure(title, "No data yet", f"{run}-{key}")
    fig = go.Figure()
    fig.add_scatter(x=xs, y=ys, name=key, mode=_mode(xs), line={"color": color, "width": 2})
    fig = _layout(fig, title, ytitle, f"{run}-{key}")
    fig.update_layout(showlegend=False)
    if key == "learning_rate":
        fig.update_yaxes(exponentformat="e")
    return fig


def accuracy_figure(metrics: list[dict], run: str = "") -> go.Figure:
    xs, ys = series(metrics, "mean_token_accuracy")
    exs, eys = series(metrics, "eval_mean_token_accuracy")
    if not xs and not exs:
        return empty_figure("Token accuracy", "No data yet", f"{run}-acc")
    fig = go.Figure()
    if xs:
        fig.add_scatter(x=xs, y=ys, name="train", mode=_mode(xs), line={"color": COLORS["acc"], "width": 2})
    if exs:
        fig.add_scatter(x=exs, y=eys, name="eval", mode="lines+markers", line={"color": COLORS["eval"], "width": 2})
    fig = _layout(fig, "Token accuracy", "accuracy", f"{run}-acc")
    fig.update_yaxes(tickformat=".1%")
    return fig


def memory_figure(metrics: list[dict], run: str = "") -> go.Figure | None:
    """GPU memory over steps, or None when the run logged none (CPU)."""
    xs, ys = series(metrics, "cuda_mem_allocated_gb")
    if not xs:
        return None
    rxs, rys = series(metrics, "cuda_mem_reserved_gb")
    fig = go.Figure()
    fig.add_scatter(x=xs, y=ys, name="allocated", mode=_mode(xs), line={"color": COLORS["mem"], "width": 2})
    if rxs:
        fig.add_scatter(x=rxs, y=rys, name="reserved", mode="lines", line={"color": COLORS["mem2"], "width": 2})
    return _layout(fig, "GPU memory", "GiB", f"{run}-mem")


def _lines(fig: go.Figure, metrics: list[dict], key: str, name: str, color: str, **extra) -> bool:
    """Train (solid) and eval (dotted, when logged) lines of `key`; False when neither has a point."""
    xs, ys = series(metrics, key)
    exs, eys = series(metrics, f"eval_{key}")
    if xs:
        fig.add_scatter(x=xs, y=ys, name=name, mode=_mode(xs), line={"color": color, "width": 2}, **extra)
    if exs:
        fig.add_scatter(
            x=exs, y=eys, name=f"eval {name}", mode="lines+markers", line={"color": color, "dash": "dot"}, **extra
        )
    return bool(xs or exs)


def rewards_figure(metrics: list[dict], run: str = "") -> go.Figure:
    """A preference run's implicit rewards of the chosen and the rejected answers (eval dotted)."""
    fig = go.Figure()
    drawn = _lines(fig, metrics, "rewards/chosen", "chosen", "#16a34a")
    drawn = _lines(fig, metrics, "rewards/rejected", "rejected", "#dc2626") or drawn
    if not drawn:
        return empty_figure("Rewards: chosen vs rejected", "No data yet", f"{run}-rewards")
    return _layout(fig, "Rewards: chosen vs rejected", "reward", f"{run}-rewards")


def margins_figure(metrics: list[dict], run: str = "") -> go.Figure:
    """Reward margin (chosen - rejected) and reward accuracy (share of pairs with chosen above rejected)."""
    return _line_and_share(
        metrics,
        ("rewards/margins", "margin", COLORS["grad"]),
        ("rewards/accuracies", "reward accuracy", COLORS["acc"]),
        "Reward margin and accuracy",
        "margin",
        f"{run}-margins",
    )


def _line_and_share(metrics: list[dict], left: tuple, right: tuple, title: str, unit: str, key: str) -> go.Figure:
    """One series (key, name, color) on the left axis and a share of 0-100% on the right one."""
    fig = go.Figure()
    drawn = _lines(fig, metrics, *left)
    share = _lines(fig, metrics, *right, yaxis="y2")
    if not (drawn or share):
        return empty_figure(title.split(" (")[0], "No data yet", key)
    fig = _layout(fig, title, unit, key)
    if share:
        fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "range": [0, 1.05], "tickformat": ".0%"})
    return fig


def speed_figure(metrics: list[dict], run: str = "") -> go.Figure:
    """Tokens/s and how well the hardware is used: MFU on a GPU, achieved GFLOP/s on a CPU (right axis)."""
    xs, ys = series(metrics, "tokens_per_s")
    if not xs:
        return empty_figure("Speed and hardware use", "No data yet", f"{run}-speed")
    fig = go.Figure()
    fig.add_scatter(x=xs, y=ys, name="tokens/s", mode=_mode(xs), line={"color": COLORS["train"], "width": 2})
    mxs, mys = series(metrics, "mfu")
    key, name = ("mfu", "MFU") if mxs else ("achieved_gflops", "GFLOP/s")
    hxs, hys = (mxs, mys) if mxs else series(metrics, "achieved_gflops")
    if hxs:
        fig.add_scatter(x=hxs, y=hys, name=name, mode=_mode(hxs), line={"color": COLORS["mem"], "width": 2}, yaxis="y2")
    title = f"Speed and hardware use ({'MFU' if key == 'mfu' else 'achieved GFLOP/s'})"
    fig = _layout(fig, title, "tokens/s", f"{run}-speed")
    if hxs:
        axis = {"overlaying": "y", "side": "right", "rangemode": "tozero", "title": {"text": name}}
        if key == "mfu":
            axis["tickformat"] = ".0%"
        fig.update_layout(yaxis2=axis)
    fig.update_yaxes(rangemode="tozero")
    return fig


def is_preference_metrics(metrics: list[dict]) -> bool:
    return any("rewards/chosen" in m or "eval_rewards/chosen" in m for m in metrics)


def training_figures(metrics: list[dict], run: str = "") -> dict[str, go.Figure | None]:
    """The Train tab's charts. A preference run (DPO/ORPO/KTO) shows its rewards and margins where an
    SFT run shows gradient norm and token accuracy; a GRPO run its rewards, their spread, the completions'
    lengths and the KL / clipped ratio (grpo_figures)."""
    if is_grpo_metrics(metrics):
        return grpo_figures(metrics, run)
    if is_preference_metrics(metrics):
        return {
            "loss": loss_figure(metrics, run),
            "lr": single_figure(metrics, "learning_rate", "Learning rate", "lr", COLORS["lr"], run),
            "grad": rewards_figure(metrics, run),
            "acc": margins_figure(metrics, run),
            "mem": memory_figure(metrics, run),
            "speed": speed_figure(metrics, run),
        }
    return {
        "loss": loss_figure(metrics, run),
        "lr": single_figure(metrics, "learning_rate", "Learning rate", "lr", COLORS["lr"], run),
        "grad": single_figure(metrics, "grad_norm", "Gradient norm", "norm", COLORS["grad"], run),
        "acc": accuracy_figure(metrics, run),
        "mem": memory_figure(metrics, run),
        "speed": speed_figure(metrics, run),
    }


# --- GRPO ----------------------------------------------------------------------------------------
def is_grpo_metrics(metrics: list[dict]) -> bool:
    return any("completions/mean_length" in m or "eval_completions/mean_length" in m for m in metrics)


def reward_functions_of(metrics: list[dict]) -> list[str]:
    """The reward functions a GRPO run logged (TRL's rewards/<name>/mean), in first-seen order."""
    names = (k[len("rewards/") : -len("/mean")] for m in metrics for k in m if k.startswith("rewards/"))
    return list(dict.fromkeys(n for n in names if n and "/" not in n))


def grpo_reward_figure(metrics: list[dict], run: str = "") -> go.Figure:
    """Mean reward (the weighted total) and each reward function's mean; evaluation dotted."""
    fig = go.Figure()
    drawn = _lines(fig, metrics, "reward", "mean reward", COLORS["train"])
    names = reward_functions_of(metrics)
    if len(names) > 1 or not drawn:
        for i, name in enumerate(names):
            drawn = _lines(fig, metrics, f"rewards/{name}/mean", name, PALETTE[(i + 1) % len(PALETTE)]) or drawn
    if not drawn:
        return empty_figure("Mean reward", "Waiting for the first logged step…", f"{run}-reward")
    return _layout(fig, "Mean reward" + (" and each function's" if len(names) > 1 else ""), "reward", f"{run}-reward")


def grpo_std_figure(metrics: list[dict], run: str = "") -> go.Figure:
    """Reward std within the step, and the share of groups whose completions all scored the same."""
    return _line_and_share(
        metrics,
        ("reward_std", "reward std", COLORS["grad"]),
        ("frac_reward_zero_std", "groups with one reward", COLORS["eval"]),
        "Reward std (groups with nothing to learn: right axis)",
        "std",
        f"{run}-reward-std",
    )


def grpo_length_figure(metrics: list[dict], run: str = "") -> go.Figure:
    """Completion length in tokens: mean and max of the step, and the mean of those that ended (EOS)."""
    fig = go.Figure()
    drawn = _lines(fig, metrics, "completions/mean_length", "mean", COLORS["acc"])
    _lines(fig, metrics, "completions/max_length", "max", COLORS["mem2"])
    _lines(fig, metrics, "completions/mean_terminated_length", "mean of ended", COLORS["lr"])
    if not drawn:
        return empty_figure("Completion length", "No data yet", f"{run}-length")
    return _layout(fig, "Completion length", "tokens", f"{run}-length")


def grpo_kl_figure(metrics: list[dict], run: str = "") -> go.Figure:
    """KL to the reference (logged when kl_coef > 0), the share of completions cut at max_completion_length
    and the share of tokens whose ratio was clipped."""
    fig = go.Figure()
    kl = _lines(fig, metrics, "kl", "KL", COLORS["grad"])
    cut = _lines(fig, metrics, "completions/clipped_ratio", "cut at max length", COLORS["eval"], yaxis="y2")
    clipped = _lines(fig, metrics, "clip_ratio/region_mean", "ratio clipped", COLORS["mem"], yaxis="y2")
    if not (kl or cut or clipped):
        return empty_figure("KL and clipped ratio", "No data yet", f"{run}-kl")
    title = "KL and clipped ratio" if kl else "Clipped ratio (no KL term: kl_coef 0)"
    fig = _layout(fig, title, "KL" if kl else "", f"{run}-kl")
    fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "range": [0, 1.05], "tickformat": ".0%"})
    return fig


def _legend_below(fig: go.Figure) -> go.Figure:
    """GRPO charts carry several lines (and their eval twins): the legend goes under the plot, off the title."""
    fig.update_layout(
        legend={"orientation": "h", "yanchor": "top", "y": -0.22, "xanchor": "left", "x": 0},
        margin={"l": 55, "r": 45, "t": 45, "b": 40},
        height=HEIGHT + 40,
    )
    return fig


def grpo_figures(metrics: list[dict], run: str = "") -> dict[str, go.Figure | None]:
    figures = {
        "loss": grpo_reward_figure(metrics, run),
        "lr": grpo_std_figure(metrics, run),
        "grad": grpo_length_figure(metrics, run),
        "acc": grpo_kl_figure(metrics, run),
    }
    return {
        **{k: _legend_below(f) if f.data else f for k, f in figures.items()},
        "mem": memory_figure(metrics, run),
        "speed": speed_figure(metrics, run),
    }


def overlay_figure(runs: dict[str, list[dict]], smoothed: bool = True) -> go.Figure:
    """Train (and eval) loss of several runs on one chart."""
    if not runs:
        return empty_figure("Loss of selected runs", "Select runs above to overlay their loss curves", "overlay")
    fig = go.Figure()
    for i, (name, metrics) in enumerate(runs.items()):
        color = PALETTE[i % len(PALETTE)]
        xs, ys = series(metrics, "loss")
        if xs:
            fig.add_scatter(
                x=xs, y=ema(ys) if smoothed else ys, name=f"{name}", mode="lines", line={"color": color, "width": 2}
            )
        exs, eys = series(metrics, "eval_loss")
        if exs:
            fig.add_scatter(
                x=exs,
                y=eys,
                name=f"{name} (eval)",
                mode="lines+markers",
                line={"color": color, "width": 1.5, "dash": "dot"},
            )
    if not fig.data:
        return empty_figure("Loss of selected runs", "The selected runs logged no loss yet", "overlay")
    return _layout(fig, "Loss of selected runs (train smoothed, eval dotted)", "loss", "overlay")


HISTOGRAM_TITLES = {
    "conversational": "Token lengths (chat template applied)",
    "prompt_completion": "Token lengths (prompt + completion)",
    "text": "Token lengths (plain text)",
    "prompts": "Token lengths (prompts; completions are sampled on top)",
}


def length_histogram(stats: dict[str, Any], max_length: int | None, shape: str | None = None) -> go.Figure:
    """Token lengths with p50/p95/p99 and the chosen max_length as vertical lines. `shape` (the data's
    normalized shape: conversational, prompt_completion, text) names what was measured in the title.
    The lines' values are named in a legend below the chart, so no label covers another or the bars."""
    lengths = stats.get("lengths") or []
    if not lengths:
        return empty_figure("Token lengths", "No examples", "lengths")
    fig = go.Figure()
    fig.add_histogram(
        x=lengths, nbinsx=min(60, max(10, len(lengths) // 4)), marker={"color": "#93c5fd"}, name="examples"
    )
    top = max(lengths)
    x_max = top * 1.15 + 1
    lines = [
        ("p50", stats.get("p50"), "#059669", "dot"),
        ("p95", stats.get("p95"), "#ca8a04", "dot"),
        ("p99", stats.get("p99"), "#ea580c", "dot"),
        ("max_length", max_length, "#dc2626", "solid"),
    ]
    for label, x, color, dash in lines:
        if x is None:
            continue
        beyond = label == "max_length" and x > x_max  # far beyond the data: named, not drawn (no squashed bars)
        if not beyond:
            fig.add_vline(x=x, line={"color": color, "dash": dash, "width": 2})
        # the values are named in the legend under the chart, where no label can cover another or the bars
        fig.add_scatter(
            x=[None],
            y=[None],
            mode="lines",
            line={"color": color, "dash": dash, "width": 2},
            name=f"{label} {x:g}" + (" (beyond the longest example)" if beyond else ""),
        )
    fig.update_xaxes(range=[0, x_max])
    title = HISTOGRAM_TITLES.get(shape or "", "Token lengths")
    fig = _layout(fig, title, "examples", "lengths", xtitle="tokens")
    fig.update_layout(
        showlegend=True,
        legend={"orientation": "h", "yanchor": "top", "y": -0.32, "xanchor": "left", "x": 0, "font": {"size": 11}},
        margin={"l": 55, "r": 15, "t": 45, "b": 90},  # room under the axis title for the legend's row(s)
        bargap=0.05,
        hovermode="closest",
    )
    fig.data[0].showlegend = False  # the bars need no legend entry
    return fig


def memory_breakdown_figure(breakdown: dict[str, float], total: float, gpu_gb: float | None) -> go.Figure:
    """The estimate's parts stacked into one bar, with the GPU's memory as a dashed line."""
    items = [(k, float(v)) for k, v in breakdown.items() if isinstance(v, (int, float)) and v > 0]
    if not items:
        return empty_figure("Estimated memory", "No breakdown available", "estimate")
    fig = go.Figure()
    for i, (name, value) in enumerate(items):
        fig.add_bar(
            x=[value],
            y=["estimate"],
            orientation="h",
            name=name.replace("_", " "),
            marker={"color": PALETTE[i % len(PALETTE)]},
            hovertemplate=f"{name.replace('_', ' ')}: {value:.2f} GB<extra></extra>",
        )
    title = f"Estimated peak memory: {total:.2f} GB" if total < 10 else f"Estimated peak memory: {total:.1f} GB"
    if gpu_gb:
        fig.add_vline(x=gpu_gb, line={"color": "#dc2626", "dash": "dash", "width": 2})
        fig.add_annotation(
            x=gpu_gb,
            y=1.02,
            yref="paper",
            text=f"GPU {gpu_gb:.0f} GB",
            showarrow=False,
            font={"color": "#dc2626", "size": 11},
            xanchor="right",
        )
        title += f" of {gpu_gb:.0f} GB GPU"
    fig = _layout(fig, title, "", "estimate", xtitle="GB")
    fig.update_layout(
        barmode="stack",
        height=230,
        hovermode="closest",
        legend={"orientation": "h", "yanchor": "top", "y": -0.35, "x": 0, "xanchor": "left"},
    )
    fig.update_yaxes(showticklabels=False)
    return fig

"""Time and cost, before Start and after: the predicted time next to the Model tab's memory verdict and in
the Train tab's "Start will train" line, the price per GPU hour (Hugging Face Spaces' prices as presets when
the app runs on a Space), and a finished run's predicted-against-actual line under its status.

Engine calls (through the Studio): timing.predict, timing.record, timing.price_presets. The price is the
RunConfig field `price_per_hour` (the Advanced form's); the box here mirrors it.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from finetune.studio import format_seconds
from ui.state import Ctx, md_escape

NO_PRESET = "(type a price)"


def duration(seconds: float | None) -> str:
    """About how long, as people say it (finetune's format_seconds); – for none."""
    if seconds is None or seconds != seconds:
        return "–"
    return format_seconds(seconds)


def money(value: float | None) -> str:
    if value is None:
        return ""
    return f"${value:.4f}" if value < 0.01 else f"${value:,.2f}"


def speed_text(est) -> str:
    """tokens/s with MFU (GPU) or achieved GFLOP/s (CPU)."""
    text = f"{est.tokens_per_s:,.0f} tokens/s"
    if est.mfu is not None:
        return text + f" at {est.mfu:.0%} MFU"
    return text + f" ({est.flops_per_s / 1e9:.1f} GFLOP/s)"


def prediction_md(ctx: Ctx, cfg, *, calibrate: bool = True) -> str:
    """The Model tab's predicted-time section (with how the throughput was obtained); never raises."""
    prediction = ctx.studio.timing.predict(cfg, calibrate=calibrate)
    est = prediction.estimate
    if est is None:
        return f"\n\n**Predicted time:** not available: {md_escape(prediction.why_not or 'no estimate')}"
    cost = f" · **{money(est.cost)}** at {money(est.price_per_hour)}/h" if est.cost is not None else ""
    devices = f" on {est.devices} devices" if est.devices > 1 else ""
    head = (
        f"\n\n**Predicted time: about {duration(est.seconds)}**{devices}{cost} — {est.steps:,} steps · "
        f"{est.tokens:,.0f} tokens · {speed_text(est)}"
    )
    measured = "measured" if est.throughput.measured else "**not measured**"
    lines = [f"- {md_escape(name)}: {md_escape(why)}" for name, why in est.reasons]
    lines.append(
        f"- split: training {duration(est.train_seconds)}, evaluation {duration(est.eval_seconds)}, checkpoints "
        f"{duration(est.save_seconds)}; loading the model and data not included; throughput {measured}"
    )
    lines += [f"- {md_escape(note)}" for note in est.notes]
    if prediction.busy_cpu:
        lines.append(f"- ⚠ {md_escape(prediction.busy_cpu)}")
    return head + f"  \nData: {md_escape(prediction.data)}\n\n" + "\n".join(lines)


def start_line(ctx: Ctx, cfg) -> str:
    """The Train tab's "Start will train" line's time: `≈ 9 s · 156 steps · 33,108 tokens · $0.01`."""
    prediction = ctx.studio.timing.predict(cfg, calibrate=False)
    est = prediction.estimate
    if est is None:
        return f"  \nPredicted time: not available ({md_escape(prediction.why_not or 'no estimate')})"
    cost = f" · {money(est.cost)}" if est.cost is not None else ""
    return (
        f"  \n**Predicted: about {duration(est.seconds)}** · {est.steps:,} steps · {est.tokens:,.0f} tokens · "
        f"{speed_text(est)}{cost}"
    )


def run_timing_md(ctx: Ctx, name: str | None) -> str:
    """A run's predicted against actual time (and tokens/s, hardware use, cost) from its prediction.json."""
    if not name:
        return ""
    record = ctx.studio.timing.record(name)
    predicted, actual = record.get("predicted") or {}, record.get("actual") or {}
    if not predicted and not actual and not record.get("predicted_why"):
        return ""
    parts = []
    if predicted:
        parts.append(f"predicted **{duration(predicted.get('predicted_seconds'))}**")
    elif record.get("predicted_why"):
        parts.append(f"no prediction ({md_escape(record['predicted_why'])})")
    if actual:
        seconds = actual.get("seconds")
        text = f"measured **{duration(seconds)}**"
        if predicted.get("predicted_seconds") and seconds:
            text += f" ({seconds / predicted['predicted_seconds'] - 1:+.0%})"
        if actual.get("tokens_per_s"):
            text += f" · {actual['tokens_per_s']:,.0f} tokens/s"
        if actual.get("mean_mfu") is not None:
            text += f" · mean MFU {actual['mean_mfu']:.1%}"
        elif actual.get("mean_achieved_gflops") is not None:
            text += f" · mean {actual['mean_achieved_gflops']:.2f} GFLOP/s"
        if actual.get("cost") is not None:
            text += f" · {money(actual['cost'])}"
        if actual.get("cpu_seconds") and predicted.get("throughput", {}).get("device") == "cpu":
            text += f" · CPU time {duration(actual['cpu_seconds'])}"  # what a CPU prediction predicts
            if predicted.get("predicted_seconds"):
                text += f" ({actual['cpu_seconds'] / predicted['predicted_seconds'] - 1:+.0%})"
        parts.append(text)
    return "**Time:** " + " · ".join(parts)


def history_cells(record: dict[str, Any]) -> tuple[str, str]:
    """(predicted, actual) for the run history's columns."""
    predicted = (record.get("predicted") or {}).get("predicted_seconds")
    actual = (record.get("actual") or {}).get("seconds")
    shown = duration(actual) if actual is not None else ""
    if actual and predicted:
        shown += f" ({actual / predicted - 1:+.0%})"
    return (duration(predicted) if predicted is not None else ""), shown


# --- the price setting (Model tab) ------------------------------------------------------------------
def build_price(ctx: Ctx) -> None:
    c = ctx.c
    presets = ctx.studio.timing.price_presets()
    with gr.Row(equal_height=True, elem_id="price-row"):
        c["price_preset"] = gr.Dropdown(
            choices=[NO_PRESET] + [p.label for p in presets],
            value=presets[0].label if presets else NO_PRESET,
            label="Hardware price (Hugging Face Spaces)",
            info="This Space's hardware is preselected; the price is per GPU hour.",
            visible=bool(presets),
            elem_id="price-preset",
            scale=2,
        )
        c["price_box"] = gr.Number(
            value=ctx.base_config.price_per_hour,
            minimum=0,
            label="Price per GPU hour ($)",
            info="Turns the predicted and the measured time into money; 0 shows no cost.",
            elem_id="price-per-hour",
            scale=1,
        )
    c["price_presets"] = presets


def set_price(ctx: Ctx, label: str):
    """The price of a preset (per GPU hour), for the box and the form field."""
    for preset in ctx.c.get("price_presets") or []:
        if preset.label == label:
            return preset.price_per_hour, preset.price_per_hour
    return gr.skip(), gr.skip()


def wire_price(ctx: Ctx) -> None:
    """The box and the preset write the form's price_per_hour (then the estimate refreshes); the form
    field (a loaded YAML, a reset) shows in the box."""
    c, field = ctx.c, ctx.fields["price_per_hour"]
    refresh = ctx.hooks["refresh"]
    refresh(c["price_box"].input(lambda v: v or 0.0, c["price_box"], field, api_visibility="private"))
    refresh(
        c["price_preset"].select(
            lambda label: set_price(ctx, label), c["price_preset"], [c["price_box"], field], api_name="set_price"
        )
    )
    field.change(lambda v: v, field, c["price_box"], api_visibility="private", show_progress="hidden")
    if c["price_presets"]:  # on a Space: the matching hardware's price from the first page load on
        first = c["price_presets"][0]
        refresh(
            ctx.blocks.load(
                lambda v: (gr.skip(), gr.skip()) if v else (first.price_per_hour, first.price_per_hour),
                field,
                [c["price_box"], field],
                api_visibility="private",
            )
        )


# --- a run's predicted vs actual (Train tab) ----------------------------------------------------------
def build_run(ctx: Ctx) -> None:
    ctx.c["run_timing"] = gr.Markdown(elem_id="train-timing")


def wire_run(ctx: Ctx) -> None:
    c = ctx.c
    for trigger in (c["train_status"].change, c["watch"].change):
        trigger(
            lambda name: run_timing_md(ctx, name),
            c["watch"],
            c["run_timing"],
            api_visibility="private",
            show_progress="hidden",
        )

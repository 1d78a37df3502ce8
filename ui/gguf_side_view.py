"""The "Opposite the fine-tuned model" choice of the Test tab: the base model, or one of the run's GGUF
exports, so the side by side and the batch evaluation show what a quantized file costs against the
16-bit fine-tune. The choice is a side name the judging desk understands ("base", "gguf:<file>").

Engine calls: the Studio's judging desk (sides, side_label).
"""

from __future__ import annotations

from functools import partial

import gradio as gr

from ui.state import Ctx

BASE = "base"


def _choices(ctx: Ctx, run_name: str | None) -> list[tuple[str, str]]:
    try:
        return ctx.studio.judge.sides(run_name or None)
    except Exception:  # a run that cannot be read has only its base to offer
        return [("Base model", BASE)]


def sides_update(ctx: Ctx, run_name: str | None, current: str | None = None):
    """Fresh choices for the run; keeps `current` while the run still has it, else the base."""
    choices = _choices(ctx, run_name)
    value = current if current in [v for _, v in choices] else BASE
    return gr.Dropdown(choices=choices, value=value)


def answer_label(ctx: Ctx, side: str | None):
    """The left answer box is named after what answers in it."""
    return gr.Textbox(label=ctx.studio.judge.side_label(side))


def build(ctx: Ctx) -> None:
    c = ctx.c
    c["test_against"] = gr.Dropdown(
        choices=_choices(ctx, c["test_run"].value),
        value=BASE,
        label="Opposite the fine-tuned model",
        info="The base model, or a GGUF export of this run (Export tab) to see what quantization costs",
        elem_id="test-against",
    )


def wire(ctx: Ctx) -> None:
    c = ctx.c
    refresh = partial(sides_update, ctx)
    for event in (c["test_run"].change, ctx.blocks.load):
        event(refresh, [c["test_run"], c["test_against"]], c["test_against"], api_visibility="private")
    c["test_against"].change(partial(answer_label, ctx), c["test_against"], c["test_base"], api_visibility="private")

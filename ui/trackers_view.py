"""Experiment trackers (inside the Train tab): where the metrics of the run shown also went (the command that
opens TensorBoard, Trackio or a local MLflow store; the W&B or MLflow run's URL; `wandb sync` for an
offline W&B run), and, before Start, what is missing when the tracker chosen in report_to is not installed.

Engine calls (through the Studio): timing.tracker_links, timing.tracker_missing.
"""

from __future__ import annotations

import html

import gradio as gr

from ui.state import Ctx, md_escape


def links_md(ctx: Ctx, name: str | None, report_to: str) -> str:
    """The tracker line of the run shown, else (no run, or a run without a tracker) the form's choice."""
    missing = ctx.studio.timing.tracker_missing(report_to or "none")
    lines = [f"⚠ {md_escape(missing)}"] if missing else []
    run_tracker, links = ctx.studio.timing.tracker_links(name) if name else ("none", [])
    for link in links:
        where = link.get("text", "")
        if link.get("url"):
            url = html.escape(link["url"], quote=True)
            lines.append(f"📈 **{link['name']}**: [{md_escape(where)}]({url})")
        else:
            lines.append(f"📈 **{link['name']}** ({md_escape(where)}): `{link.get('command', '')}`")
    if not links and report_to not in ("", "none") and not missing:
        lines.append(
            f"📈 Metrics will also go to **{md_escape(report_to)}** (report_to): the link shows once the run starts."
        )
    elif run_tracker != "none" and not links:
        lines.append(f"📈 {md_escape(run_tracker)}: no link recorded for this run.")
    return "  \n".join(lines)


def build(ctx: Ctx) -> None:
    ctx.c["trackers_md"] = gr.Markdown(elem_id="train-trackers")


def wire(ctx: Ctx) -> None:
    c, field = ctx.c, ctx.fields["report_to"]
    inputs = [c["watch"], field]
    for trigger in (c["train_status"].change, c["watch"].change, field.change):
        trigger(
            lambda name, report_to: links_md(ctx, name, report_to),
            inputs,
            c["trackers_md"],
            api_visibility="private",
            show_progress="hidden",
        )

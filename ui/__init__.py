"""The Gradio app: a thin layer over `finetune/`, one module per tab.

`build_app(workspace=None)` returns the Blocks; `ui.launch.launch_kwargs()` says how to serve it.
"""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from finetune.studio import Studio
from ui import data_tab, export_tab, grpo_view, model_tab, selection, test_tab, train_tab
from ui.guard import guard
from ui.pools import pool_data_reads
from ui.state import Ctx, Selection

TITLE = "finetune studio"


def build_app(
    workspace: str | Path | None = None, *, exposure_warning: str | None = None, studio: Studio | None = None
) -> gr.Blocks:
    """The whole app. `exposure_warning` shows as a red banner (network exposure without auth).
    `studio`: the engine service to use (default: one opened on `workspace`, hardware detected)."""
    studio = studio or Studio.open(workspace)
    ctx = Ctx(studio=studio, base_config=studio.base_config())
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(86400, 86400)) as blocks:
        ctx.blocks = blocks
        if exposure_warning:
            gr.HTML(
                f'<div class="ft-banner" id="exposure-banner">⚠ {html.escape(exposure_warning)}</div>',
                elem_id="exposure-banner-block",
            )
        gr.Markdown(
            f"# {TITLE}\nFine-tune a language model without code: pick data, pick a model, press Start, "
            "compare the answers, export the result.",
            elem_id="title",
        )
        # the form survives a page reload (this browser only, until the server restarts); outside the
        # tabs because a tab's content is only mounted once it is opened
        ctx.c["saved_config"] = gr.BrowserState(None, storage_key="finetune-studio-config")
        ctx.c["selected"] = gr.State(Selection())  # the run the page shows: one for every tab (ui.selection)
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("1 · Data", id="data", elem_id="tab-data"):
                data_tab.build(ctx)
            with gr.Tab("2 · Model & memory", id="model", elem_id="tab-model"):
                model_tab.build(ctx)
            with gr.Tab("3 · Train", id="train", elem_id="tab-train") as train_tab_item:
                train_tab.build(ctx)
            with gr.Tab("4 · Test", id="test", elem_id="tab-test"):
                test_tab.build(ctx)
            with gr.Tab("5 · Export", id="export", elem_id="tab-export") as export_tab_item:
                export_tab.build(ctx)
        ctx.c["tabs"] = tabs
        ctx.c["train_tab_item"] = train_tab_item
        ctx.c["export_tab_item"] = export_tab_item
        model_tab.wire(ctx)
        data_tab.wire(ctx)
        train_tab.wire(ctx)
        grpo_view.wire(ctx)
        test_tab.wire(ctx)
        export_tab.wire(ctx)
        selection.wire(ctx)
        _wire_cross_tab(ctx)
    guard(blocks)  # every handler: an unexpected error is one line plus where its details were written
    pool_data_reads(blocks)  # one user's heavy upload does not queue the others' (ui/pools.py)
    # one worker per listener; start, compare and merge also share one ("gpu", see ui.state.GPU)
    blocks.queue(default_concurrency_limit=1)
    blocks.finetune_ctx = ctx  # for tests and debugging
    return blocks


def _wire_cross_tab(ctx: Ctx) -> None:
    c, hooks = ctx.c, ctx.hooks
    # a new model changes the tokenizer: re-measure the data; a loaded YAML may change both
    hooks["reanalyze"](hooks["refresh"](hooks["after_model"]))
    hooks["reanalyze"](hooks["after_yaml"])

    # first open: the settings this browser had (else the defaults: sample data, demo, suggested preset),
    # then the Data tab measures that data; fresh run lists in Test / Export
    hooks["reanalyze"](hooks["after_restore"])
    hooks["reanalyze"](hooks["after_reset"])

    def landing_tab():
        """A page opened (or reloaded) while a run trains lands on the Train tab, else where it is."""
        return gr.Tabs(selected="train") if ctx.studio.training_now() else gr.skip()

    ctx.blocks.load(landing_tab, None, c["tabs"], api_visibility="private", show_progress="hidden")

    # the Train tab mounts its log at the top: show the newest line when it is opened
    c["train_tab_item"].select(None, None, None, js=train_tab.SCROLL_LOG_JS, api_visibility="private")

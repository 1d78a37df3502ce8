"""Test tab: judge the fine-tune. Shared run choice and decoding settings on top, then views:

- Side by side: the same prompt answered by the base model and by the fine-tuned one (streamed),
  with an inline word diff and each answer's length in tokens and generation time.
- Chat (ui.chat_view): a multi-turn conversation with both models in two panes sharing one history.
- Blind A/B (ui.ab_view, its votes as DPO data: ui.votes_view), Batch evaluation (ui.eval_tab), Benchmarks and
  the forgetting check (ui.benchmark_view), Checkpoints (ui.curve_view), Prompt set × checkpoints (ui.grid_view).
- Report: a self-contained HTML or Markdown comparison report of the run.

Engine calls: the Studio's judging desk (stream, diff_html, report), which keeps one model copy in
memory under the GPU lease and generates the base answer with the adapter disabled.
"""

from __future__ import annotations

import time
from functools import partial

import gradio as gr

from finetune.errors import FinetuneError
from finetune.studio import NO_RUN
from ui import ab_view, benchmark_view, chat_view, curve_view, eval_tab, gguf_side_view, grid_view, run_views
from ui.eval_common import settings_from
from ui.state import GPU, Ctx, adapter_run_picker, error_text, md_error, md_escape, run_dropdown_update

DEFAULT_PROMPT = "Spell the word garden backwards."
DIFF_EMPTY = '<div class="ft-diff-empty">The word diff appears here once both answers are in.</div>'
DIFF_LEGEND = (
    '<div class="ft-diff-legend"><b>Word diff, base → fine-tuned:</b> <del>only in the base answer</del> '
    "<ins>only in the fine-tuned answer</ins></div>"
)


def build(ctx: Ctx) -> None:
    c = ctx.c
    adapter_run_picker(ctx, "test")
    gguf_side_view.build(ctx)
    with gr.Accordion("Decoding settings (shared by every view below)", open=False, elem_id="test-settings"):
        c["test_system"] = gr.Textbox(label="System prompt", placeholder="optional", lines=1, elem_id="test-system")
        with gr.Row():
            c["test_temperature"] = gr.Slider(
                0,
                2,
                value=0.0,
                step=0.05,
                label="temperature",
                info="0 = greedy (deterministic)",
                elem_id="test-temperature",
            )
            c["test_top_p"] = gr.Slider(0.05, 1, value=1.0, step=0.05, label="top_p", elem_id="test-top-p")
            c["test_max_new"] = gr.Slider(1, 1024, value=64, step=1, label="max_new_tokens", elem_id="test-max-new")
            c["test_seed"] = gr.Number(value=0, precision=0, minimum=0, label="seed", elem_id="test-seed")
    with gr.Tabs(elem_id="test-views"):
        with gr.Tab("Chat", id="chat", elem_id="test-chat"):
            chat_view.build(ctx)
        with gr.Tab("Side by side", id="side", elem_id="test-side"):
            _build_side_by_side(ctx)
        with gr.Tab("Blind A/B", id="ab", elem_id="test-ab"):
            ab_view.build(ctx)
        with gr.Tab("Batch evaluation", id="eval", elem_id="test-eval"):
            eval_tab.build(ctx)
        with gr.Tab("Benchmarks", id="bench", elem_id="test-bench"):
            benchmark_view.build(ctx)
        with gr.Tab("Checkpoints", id="curve", elem_id="test-curve"):
            curve_view.build(ctx)
        with gr.Tab("Prompt set × checkpoints", id="grid", elem_id="test-grid"):
            grid_view.build(ctx)
        with gr.Tab("Report", id="report", elem_id="test-report"):
            gr.Markdown(
                "A comparison report of the chosen run: configuration, training curves, the latest batch "
                "evaluation, the blind A/B tally and sample rows. The HTML file is self-contained (no "
                "scripts, opens offline); local paths are reduced to file names."
            )
            with gr.Row():
                c["report_html"] = gr.Button("HTML report", elem_id="report-html")
                c["report_md"] = gr.Button("Markdown report", elem_id="report-md")
            c["report_file"] = gr.File(label="Report", interactive=False, height=90, elem_id="report-file")


def _build_side_by_side(ctx: Ctx) -> None:
    c = ctx.c
    c["test_prompt"] = gr.Textbox(value=DEFAULT_PROMPT, label="Prompt", lines=3, elem_id="test-prompt")
    c["test_btn"] = gr.Button("Generate both answers", variant="primary", elem_id="test-btn")
    c["test_msg"] = gr.Markdown(elem_id="test-msg")
    with gr.Row(equal_height=True):
        c["test_base"] = gr.Textbox(
            label="Base model", lines=10, max_lines=20, interactive=False, elem_id="answer-base", buttons=["copy"]
        )
        c["test_tuned"] = gr.Textbox(
            label="Fine-tuned", lines=10, max_lines=20, interactive=False, elem_id="answer-tuned", buttons=["copy"]
        )
    c["test_stats"] = gr.Markdown(elem_id="test-stats")
    c["test_diff"] = gr.HTML(DIFF_EMPTY, label="Word diff", show_label=False, elem_id="test-diff", container=True)


def stats_md(base_tokens: int, base_s: float, tuned_tokens: int, tuned_s: float) -> str:
    def one(tokens: int, seconds: float) -> str:
        rate = f", {tokens / seconds:.1f} tokens/s" if seconds > 0 and tokens else ""
        return f"{tokens} tokens in {seconds:.2f} s{rate}"

    return f"**Base:** {one(base_tokens, base_s)} · **Fine-tuned:** {one(tuned_tokens, tuned_s)}"


def diff_html(ctx: Ctx, base: str, tuned: str) -> str:
    if base.strip() == tuned.strip():
        return '<div class="ft-diff-same">The two answers are identical.</div>'
    return DIFF_LEGEND + ctx.studio.judge.diff_html(base, tuned)


def compare(ctx: Ctx, run_name, prompt, system, temperature, top_p, max_new, seed, against=None):
    """Stream the base answer (or the GGUF side `against`), then the fine-tuned one; yields
    (base, tuned, message, stats, diff)."""
    try:
        if not run_name:
            raise FinetuneError(NO_RUN)
        if not (prompt or "").strip():
            raise FinetuneError("Type a prompt first.")
        settings = settings_from(system, temperature, top_p, max_new, seed)
        judge = ctx.studio.judge
        ctx.studio.lease.refuse_while_training("comparing")
        yield "", "", f"● Loading the base model and the adapter of **{md_escape(run_name)}**…", "", DIFF_EMPTY
        base = ""
        t0 = time.perf_counter()
        for base in judge.stream(run_name, prompt, False, settings, against=against):
            yield base, "", f"… {md_escape(judge.side_label(against))} answering…", gr.skip(), gr.skip()
        t1 = time.perf_counter()
        tuned = ""
        for tuned in judge.stream(run_name, prompt, True, settings):
            yield base, tuned, "… Fine-tuned model answering…", gr.skip(), gr.skip()
        t2 = time.perf_counter()
        # the stream's last item carries the number of tokens generated (0 if it yielded nothing)
        stats = stats_md(getattr(base, "tokens", 0) or 0, t1 - t0, getattr(tuned, "tokens", 0) or 0, t2 - t1)
    except Exception as exc:
        gr.Warning(error_text(exc))
        yield gr.skip(), gr.skip(), md_error(exc, "No comparison"), gr.skip(), gr.skip()
        return
    same = " (identical answers)" if base == tuned else ""
    yield (
        base,
        tuned,
        f"✔ Done: {md_escape(judge.side_label(against))} {t1 - t0:.1f} s, fine-tuned {t2 - t1:.1f} s{same}.",
        stats,
        diff_html(ctx, base, tuned),
    )


def make_report(ctx: Ctx, fmt: str, run_name):
    try:
        path = ctx.studio.judge.report(run_name, fmt)
    except Exception as exc:
        gr.Warning(error_text(exc))
        return None
    gr.Info(f"Report written: {path.name}")
    return str(path)


def wire(ctx: Ctx) -> None:
    c = ctx.c

    def run_compare(run_name, prompt, system, temperature, top_p, max_new, seed, against=None):
        yield from compare(ctx, run_name, prompt, system, temperature, top_p, max_new, seed, against)

    settings = [c["test_system"], c["test_temperature"], c["test_top_p"], c["test_max_new"], c["test_seed"]]
    inputs = [c["test_run"], c["test_prompt"], *settings, c["test_against"]]
    outputs = [c["test_base"], c["test_tuned"], c["test_msg"], c["test_stats"], c["test_diff"]]
    c["test_btn"].click(run_compare, inputs, outputs, api_name="compare", concurrency_id=GPU, concurrency_limit=1)
    c["test_prompt"].submit(
        run_compare, inputs, outputs, api_visibility="private", concurrency_id=GPU, concurrency_limit=1
    )
    c["test_refresh"].click(
        lambda cur: run_dropdown_update(ctx.studio, cur), c["test_run"], c["test_run"], api_name="list_adapter_runs"
    )
    c["report_html"].click(partial(make_report, ctx, "html"), c["test_run"], c["report_file"], api_name="report_html")
    c["report_md"].click(
        partial(make_report, ctx, "markdown"), c["test_run"], c["report_file"], api_name="report_markdown"
    )
    ab_view.wire(ctx, settings)
    eval_tab.wire(ctx, settings)
    gguf_side_view.wire(ctx)
    grid_view.wire(ctx, settings)
    chat_view.wire(ctx, settings)
    benchmark_view.wire(ctx)
    curve_view.wire(ctx, settings)
    run_views.wire(ctx)

"""Test tab: the same prompt answered by the base model and by the fine-tuned one, side by side.

Engine calls: finetune.compare (GenerationSettings, get_comparer -> Comparer.stream), which keeps
one model copy in memory and generates the base answer with the adapter disabled.
"""

from __future__ import annotations

import time

import gradio as gr

from finetune.compare import GenerationSettings, get_comparer
from finetune.errors import FinetuneError
from finetune.runs import open_run
from finetune.training import current_job
from ui.state import GPU, Ctx, error_text, md_error, md_escape, run_choices, run_dropdown_update

DEFAULT_PROMPT = "Spell the word garden backwards."


def build(ctx: Ctx) -> None:
    c = ctx.c
    choices = run_choices(ctx.workspace, with_adapter=True)
    with gr.Row(equal_height=True):
        c["test_run"] = gr.Dropdown(choices=choices, value=choices[0] if choices else None, label="Run", allow_custom_value=True,
                                    info="Runs with a saved adapter.", elem_id="test-run", scale=4)
        c["test_refresh"] = gr.Button("Refresh", size="sm", elem_id="test-refresh", scale=0, min_width=90)
    c["test_prompt"] = gr.Textbox(value=DEFAULT_PROMPT, label="Prompt", lines=3, elem_id="test-prompt")
    with gr.Accordion("Decoding settings (shared by both answers)", open=True, elem_id="test-settings"):
        c["test_system"] = gr.Textbox(label="System prompt", placeholder="optional", lines=1, elem_id="test-system")
        with gr.Row():
            c["test_temperature"] = gr.Slider(0, 2, value=0.0, step=0.05, label="temperature",
                                              info="0 = greedy (deterministic)", elem_id="test-temperature")
            c["test_top_p"] = gr.Slider(0.05, 1, value=1.0, step=0.05, label="top_p", elem_id="test-top-p")
            c["test_max_new"] = gr.Slider(1, 1024, value=64, step=1, label="max_new_tokens", elem_id="test-max-new")
            c["test_seed"] = gr.Number(value=0, precision=0, minimum=0, label="seed", elem_id="test-seed")
    c["test_btn"] = gr.Button("Generate both answers", variant="primary", elem_id="test-btn")
    c["test_msg"] = gr.Markdown(elem_id="test-msg")
    with gr.Row(equal_height=True):
        c["test_base"] = gr.Textbox(label="Base model", lines=10, max_lines=20, interactive=False,
                                    elem_id="answer-base", buttons=["copy"])
        c["test_tuned"] = gr.Textbox(label="Fine-tuned", lines=10, max_lines=20, interactive=False,
                                     elem_id="answer-tuned", buttons=["copy"])


def compare(ctx: Ctx, run_name, prompt, system, temperature, top_p, max_new, seed):
    """Stream the base answer, then the fine-tuned one; yields (base, tuned, message)."""
    try:
        if not run_name:
            raise FinetuneError("No run with a saved adapter yet: train one in the Train tab first.")
        if not (prompt or "").strip():
            raise FinetuneError("Type a prompt first.")
        job = current_job()
        if job is not None:
            raise FinetuneError(
                f"The run '{job.run.name}' is training: comparing would load a second model into memory. "
                "Wait for it to finish or stop it, then compare.")
        settings = GenerationSettings(system_prompt=system or "", temperature=float(temperature), top_p=float(top_p),
                                      max_new_tokens=int(max_new), seed=int(seed or 0)).check()
        run = open_run(run_name, ctx.workspace)
        yield "", "", f"● Loading the base model and the adapter of **{md_escape(run_name)}**…"
        comparer = get_comparer(run)
        base = ""
        t0 = time.perf_counter()
        for base in comparer.stream(prompt, False, settings):
            yield base, "", "… Base model answering…"
        t1 = time.perf_counter()
        tuned = ""
        for tuned in comparer.stream(prompt, True, settings):
            yield base, tuned, "… Fine-tuned model answering…"
        t2 = time.perf_counter()
    except Exception as exc:
        gr.Warning(error_text(exc))
        yield gr.skip(), gr.skip(), md_error(exc, "No comparison")
        return
    same = " (identical answers)" if base == tuned else ""
    yield base, tuned, f"✔ Done: base {t1 - t0:.1f} s, fine-tuned {t2 - t1:.1f} s{same}."


def wire(ctx: Ctx) -> None:
    c = ctx.c

    def run_compare(run_name, prompt, system, temperature, top_p, max_new, seed):
        yield from compare(ctx, run_name, prompt, system, temperature, top_p, max_new, seed)

    inputs = [c["test_run"], c["test_prompt"], c["test_system"], c["test_temperature"], c["test_top_p"],
              c["test_max_new"], c["test_seed"]]
    outputs = [c["test_base"], c["test_tuned"], c["test_msg"]]
    c["test_btn"].click(run_compare, inputs, outputs, api_name="compare", concurrency_id=GPU, concurrency_limit=1)
    c["test_prompt"].submit(run_compare, inputs, outputs, api_visibility="private", concurrency_id=GPU,
                            concurrency_limit=1)
    c["test_refresh"].click(lambda cur: run_dropdown_update(ctx.workspace, cur), c["test_run"], c["test_run"],
                            api_name="list_adapter_runs")

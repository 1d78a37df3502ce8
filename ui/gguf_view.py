"""GGUF view (inside the Export tab): the fine-tune as a GGUF file for llama.cpp, Ollama and LM Studio.

A type list that shows which types this machine can make for the chosen run's model and why the others
are missing; Export (merging first when needed) with a progress bar, then the file's size, the time it
took, what a runtime will read from it (name, base model, EOS, end-of-turn token, chat template), the
GGUF and its Ollama Modelfile to download, and the exact `ollama create` / `llama-server` commands.
"Adapter as a GGUF LoRA" writes the adapter alone for llama.cpp's --lora.

Engine calls: the Studio's export desk (gguf_types, gguf under the GPU lease, lora_gguf). Only paths
the engine returns reach the file component.
"""

from __future__ import annotations

from functools import partial

import gradio as gr

from ui import gguf_side_view
from ui.state import GPU, Ctx, error_text, md_error, md_escape

INTRO = (
    "### 4. GGUF for llama.cpp, Ollama and LM Studio\n"
    "The merged model converted by llama.cpp's own converter (fetched with pip on first use, no compiler), "
    "with an Ollama Modelfile beside it. Compare a GGUF with the 16-bit fine-tune in the Test tab "
    "(“Opposite the fine-tuned model”)."
)


def code(text) -> str:
    """Inline code: shown as it is (Markdown escapes would show as backslashes inside it)."""
    return "`" + str(text).replace("`", "'") + "`"


def type_table(ctx: Ctx, run_name: str | None, current: str | None = None) -> tuple[list[str], str | None, str]:
    """(the types this machine can make for the run's model, the one to preselect, the table of all types)."""
    try:
        choices = ctx.studio.export.gguf_types(run_name or None)
    except Exception as exc:  # an unreadable run must not break the tab
        return [], None, md_error(exc, "GGUF types unknown")
    available = [c.type for c in choices if c.available]
    value = current if current in available else ("q8_0" if "q8_0" in available else (available or [None])[0])
    lines = ["| type | on this machine | |", "|---|---|---|"]
    for choice in choices:
        mark = "✔" if choice.available else "✘"
        text = md_escape(choice.note) + ("" if choice.available else f". **Not here:** {md_escape(choice.reason)}")
        lines.append(f"| {code(choice.type)} | {mark} | {text} |")
    return available, value, "\n".join(lines)


def types_view(ctx: Ctx, run_name: str | None, current: str | None = None):
    """(type dropdown update, availability table) for the run's model on this machine."""
    available, value, table = type_table(ctx, run_name, current)
    return gr.Dropdown(choices=available, value=value), table


def result_md(result) -> str:
    meta = result.metadata
    template = "yes (plain, no generation markers)" if meta.get("chat_template") else "none"
    lines = [
        f"✔ **{md_escape(result.path.name)}**: {result.size_mb:,.1f} MB in {result.seconds:.1f} s, "
        f"saved in {code(result.path.parent)}",
        "",
        f"In the file: name **{md_escape(str(meta.get('name')))}**, base model "
        f"**{md_escape(str(meta.get('base_model')))}**, EOS {code(meta.get('eos_token'))}, end of turn "
        f"{code(meta.get('eot_token'))}, chat template {template}, tensors "
        f"{md_escape(', '.join(meta.get('tensor_types') or []))}.",
        "",
        f"Ollama: {md_escape(result.modelfile.name) if result.modelfile else md_escape(result.modelfile_note)}"
        + (f" ({md_escape(result.modelfile_note)})" if result.modelfile else ""),
        "",
        f"llama.cpp: {md_escape(result.runtime_check)}",
    ]
    return "\n".join(lines)


def export_gguf(ctx: Ctx, run_name, type_name, progress=gr.Progress()):
    """Outputs: message, commands, files."""
    try:
        if not type_name:
            raise ValueError("Pick a GGUF type this machine can make (see the table).")
        ctx.studio.lease.refuse_while_training("exporting to GGUF")
        progress(0.0, desc="Starting the GGUF export")
        result = ctx.studio.export.gguf(run_name, type_name, progress=lambda frac, msg: progress(float(frac), desc=msg))
    except Exception as exc:
        gr.Warning(error_text(exc))
        return md_error(exc, "No GGUF"), gr.skip(), gr.skip()
    gr.Info(f"GGUF saved: {result.path.name}")
    commands = "\n".join(result.commands.values())
    files = [str(result.path)] + ([str(result.modelfile)] if result.modelfile else [])
    return result_md(result), commands, files


def export_lora(ctx: Ctx, run_name, progress=gr.Progress()):
    """Outputs: message, commands, files."""
    try:
        progress(0.0, desc="Converting the adapter")
        path = ctx.studio.export.lora_gguf(run_name, progress=lambda frac, msg: progress(float(frac), desc=msg))
    except Exception as exc:
        gr.Warning(error_text(exc))
        return md_error(exc, "No GGUF LoRA"), gr.skip(), gr.skip()
    gr.Info(f"GGUF LoRA saved: {path.name}")
    size = path.stat().st_size / 2**20
    msg = f"✔ **{md_escape(path.name)}** ({size:,.1f} MB): the adapter alone, applied on the base model's GGUF."
    return msg, f"llama-server -m BASE.f16.gguf --lora {path} --jinja", [str(path)]


def build(ctx: Ctx) -> None:
    c = ctx.c
    gr.Markdown(INTRO, elem_id="export-gguf-intro")
    available, value, table = type_table(ctx, c["export_run"].value)
    with gr.Row(equal_height=True):
        c["gguf_type"] = gr.Dropdown(
            choices=available,
            value=value,
            label="GGUF type",
            info="Only the types this machine can make for this model",
            elem_id="export-gguf-type",
            scale=2,
        )
        c["gguf_btn"] = gr.Button("Export GGUF", variant="primary", elem_id="export-gguf-btn", scale=1)
        c["gguf_lora_btn"] = gr.Button("Adapter as a GGUF LoRA", elem_id="export-gguf-lora-btn", scale=1)
    c["gguf_types"] = gr.Markdown(table, elem_id="export-gguf-types")
    c["gguf_msg"] = gr.Markdown(elem_id="export-gguf-msg")
    c["gguf_commands"] = gr.Code(
        label="Serve it (Ollama, llama.cpp's llama-server, llama-cpp-python)",
        language="shell",
        interactive=False,
        elem_id="export-gguf-commands",
    )
    c["gguf_files"] = gr.File(
        label="GGUF and Modelfile", file_count="multiple", interactive=False, elem_id="export-gguf-files", height=110
    )


def wire(ctx: Ctx) -> None:
    c = ctx.c
    outputs = [c["gguf_msg"], c["gguf_commands"], c["gguf_files"]]
    done = c["gguf_btn"].click(
        partial(export_gguf, ctx),
        [c["export_run"], c["gguf_type"]],
        outputs,
        api_name="export_gguf",
        concurrency_id=GPU,
        concurrency_limit=1,
    )
    c["gguf_lora_btn"].click(
        partial(export_lora, ctx), c["export_run"], outputs, api_name="export_gguf_lora", concurrency_id=GPU
    )
    show_types = partial(types_view, ctx)
    for event in (c["export_run"].change, ctx.blocks.load):
        event(
            show_types, [c["export_run"], c["gguf_type"]], [c["gguf_type"], c["gguf_types"]], api_visibility="private"
        )
    if "test_against" in c:  # a new file is at once a side the Test tab can compare against
        refresh = partial(gguf_side_view.sides_update, ctx)
        done.then(refresh, [c["test_run"], c["test_against"]], c["test_against"], api_visibility="private")

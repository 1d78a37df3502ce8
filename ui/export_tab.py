"""Export tab: adapter zip, merged model (folder + zip), Hub upload, model card preview.

Engine calls: the Studio's export desk (zip_adapter, merge with a progress callback under the GPU
lease, zip_merged, model_card, push). Only paths the engine returns reach a file component; the
Hub token is handed straight to the engine and never stored, logged or echoed.
"""

from __future__ import annotations

import gradio as gr

from finetune.errors import FinetuneError
from ui import gguf_view
from ui.state import GPU, Ctx, adapter_run_picker, error_text, md_error, md_escape, run_choices


def card_md(card: str) -> str:
    """The card for display: its YAML front matter as a code block instead of mangled Markdown."""
    if card.startswith("---\n"):
        end = card.find("\n---", 4)
        if end != -1:
            front, rest = card[4:end], card[end + 4 :].lstrip("\n")
            return f"```yaml\n{front}\n```\n\n{rest}"
    return card


def card_for(ctx: Ctx, run_name: str | None) -> str:
    if not run_name:
        return "*No run with a saved adapter yet.*"
    try:
        return card_md(ctx.studio.export.model_card(run_name))
    except Exception as exc:
        return md_error(exc, "No model card")


def build(ctx: Ctx) -> None:
    c = ctx.c
    adapter_run_picker(ctx, "export")
    with gr.Row(equal_height=False):
        with gr.Column():
            gr.Markdown("### 1. The adapter\nA few MB; load it on top of the base model with PEFT.")
            c["zip_btn"] = gr.Button("Download the adapter (.zip)", elem_id="export-zip-btn")
            c["zip_file"] = gr.File(label="Adapter zip", interactive=False, elem_id="export-adapter-file", height=90)
        with gr.Column():
            gr.Markdown(
                "### 2. A merged model\nThe adapter folded into an unquantized copy of the base weights "
                "(16-bit on a GPU; float32 on CPU unless the base is stored in 16 bits): a standalone "
                "transformers model."
            )
            c["merge_btn"] = gr.Button("Merge into a standalone model", variant="primary", elem_id="export-merge-btn")
            c["merge_msg"] = gr.Markdown(elem_id="export-merge-msg")
            c["merged_zip_btn"] = gr.Button(
                "Download the merged model (.zip)", interactive=False, elem_id="export-merged-zip-btn"
            )
            c["merged_file"] = gr.File(
                label="Merged model zip", interactive=False, elem_id="export-merged-file", height=90
            )
    with gr.Accordion("3. Push to the Hugging Face Hub", open=False, elem_id="export-hub"):
        with gr.Row():
            c["hub_repo"] = gr.Textbox(
                label="Repository id", placeholder="your-name/my-model", elem_id="export-hub-repo"
            )
            c["hub_token"] = gr.Textbox(
                label="Write token", type="password", placeholder="hf_… (never stored)", elem_id="export-hub-token"
            )
        with gr.Row():
            c["hub_what"] = gr.Radio(
                ["merged model", "adapter"], value="adapter", label="Upload", elem_id="export-hub-what"
            )
            c["hub_private"] = gr.Checkbox(value=True, label="Private repository", elem_id="export-hub-private")
        c["hub_btn"] = gr.Button("Push to the Hub", elem_id="export-hub-btn")
        c["hub_msg"] = gr.Markdown(elem_id="export-hub-msg")
    gguf_view.build(ctx)
    gr.Markdown("### Model card")
    c["card"] = gr.Markdown(card_for(ctx, c["export_run"].value), elem_id="export-card", container=True, max_height=500)


def wire(ctx: Ctx) -> None:
    c = ctx.c

    def do_zip(run_name):
        try:
            path = ctx.studio.export.zip_adapter(run_name)
        except Exception as exc:
            gr.Warning(error_text(exc))
            return None
        gr.Info(f"Adapter zipped: {path.name}")
        return str(path)

    c["zip_btn"].click(do_zip, c["export_run"], c["zip_file"], api_name="zip_adapter")

    def do_merge(run_name, progress=gr.Progress()):
        try:
            ctx.studio.lease.refuse_while_training("merging")
            progress(0.0, desc="Starting the merge")
            merged = ctx.studio.export.merge(run_name, progress=lambda frac, msg: progress(float(frac), desc=msg))
        except Exception as exc:
            gr.Warning(error_text(exc))
            return md_error(exc, "Merge failed"), gr.skip(), gr.skip()
        gr.Info("Merged model saved")
        dtype = f", {merged.dtype} weights" if merged.dtype else ""
        return (
            f"✔ Merged model saved ({merged.size_mb:,.0f} MB{dtype}) in `{md_escape(merged.where)}` inside the run "
            f"folder **{md_escape(run_name)}** — download it below or push it to the Hub.",
            card_for(ctx, run_name),
            merged_zip_button(ctx, run_name),
        )

    c["merge_btn"].click(
        do_merge,
        c["export_run"],
        [c["merge_msg"], c["card"], c["merged_zip_btn"]],
        api_name="merge_model",
        concurrency_id=GPU,
        concurrency_limit=1,
    )

    def do_zip_merged(run_name, progress=gr.Progress()):
        try:
            progress(0.1, desc="Zipping the merged model")
            out = ctx.studio.export.zip_merged(run_name)
        except Exception as exc:
            gr.Warning(error_text(exc))
            return None
        gr.Info(f"Merged model zipped: {out.name}")
        return str(out)

    c["merged_zip_btn"].click(do_zip_merged, c["export_run"], c["merged_file"], api_name="zip_merged_model")

    def do_push(run_name, repo_id, token, what, private):
        try:
            url = ctx.studio.export.push(run_name, repo_id, token, merged=what == "merged model", private=private)
        except Exception as exc:
            text = error_text(exc)
            if token and token.strip():
                text = text.replace(token.strip(), "***")
            gr.Warning(text)
            return md_error(text, "Not uploaded"), ""
        gr.Info("Uploaded to the Hub")
        return f"✔ Uploaded: [{md_escape(url)}]({url})", ""

    c["hub_btn"].click(
        do_push,
        [c["export_run"], c["hub_repo"], c["hub_token"], c["hub_what"], c["hub_private"]],
        [c["hub_msg"], c["hub_token"]],
        api_name="push_to_hub",
    )

    gguf_view.wire(ctx)

    def card_and_button(name):
        return card_for(ctx, name), merged_zip_button(ctx, name)

    c["export_run"].change(card_and_button, c["export_run"], [c["card"], c["merged_zip_btn"]], api_visibility="private")

    def refreshed(current):
        choices = run_choices(ctx.studio, with_adapter=True)
        value = current if current in choices else (choices[0] if choices else None)
        return gr.Dropdown(choices=choices, value=value), card_for(ctx, value), merged_zip_button(ctx, value)

    # the card is drawn fresh whenever it is looked at: a run that went on training (Resume) after its card was
    # drawn keeps its name in the list, so the list's own change event never fires for it
    c["export_refresh"].click(
        refreshed,
        c["export_run"],
        [c["export_run"], c["card"], c["merged_zip_btn"]],
        api_name="refresh_export",
        show_progress="hidden",
    )
    c["export_tab_item"].select(
        card_and_button,
        c["export_run"],
        [c["card"], c["merged_zip_btn"]],
        api_visibility="private",
        show_progress="hidden",
    )


def merged_zip_button(ctx: Ctx, name: str | None):
    """The merged model's download is offered only once the run has a merged model."""
    try:
        merged = bool(name) and ctx.studio.export.merged_folder(name) is not None
    except FinetuneError:
        merged = False
    return gr.Button(interactive=merged)

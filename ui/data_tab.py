"""Data tab: pick the data (sample, upload, Hub), check it, preview it, size max_length.

Engine calls: the Studio's data desk (report, columns, store_upload, length_stats, render,
problems_csv; it owns the caches). The chosen source, format and mapping are written
into the Advanced form (dataset_path, eval_dataset_path, dataset_format, column_mapping).
Handlers are module-level functions returning updates keyed by component name (`ui.state.connect`).
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from finetune.config import DATASET_FORMATS
from finetune.errors import FinetuneError
from finetune.studio import MAP_TARGETS, parse_mapping, row_chat, source_label
from ui import charts
from ui.data_view import chat_messages, preview, summary_md, truncation_md
from ui.state import Ctx, connect, error_text, md_error, md_escape


# --- layout ----------------------------------------------------------------------------
def build(ctx: Ctx) -> None:
    c = ctx.c
    gr.Markdown("Choose training data: the sample dataset, your own file, or a dataset on the Hugging Face Hub.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=260):
            c["data_sample_btn"] = gr.Button("Use the sample dataset", variant="primary", elem_id="data-sample-btn")
            c["data_pref_sample_btn"] = gr.Button(
                "Use the preference sample (DPO, ORPO, KTO)", size="sm", elem_id="data-pref-sample-btn"
            )
            c["data_hub_id"] = gr.Textbox(
                label="…or a Hub dataset id", placeholder="owner/dataset", elem_id="data-hub-id"
            )
            c["data_hub_btn"] = gr.Button("Load from the Hub", size="sm", elem_id="data-hub-btn")
        with gr.Column(scale=1, min_width=260):
            c["data_train_file"] = gr.File(
                label="…or upload a training file (.jsonl .json .csv .parquet)",
                file_types=list(ctx.studio.data.extensions),
                elem_id="data-train-file",
                height=130,
            )
        with gr.Column(scale=1, min_width=260):
            c["data_val_file"] = gr.File(
                label="Optional validation file",
                file_types=list(ctx.studio.data.extensions),
                elem_id="data-val-file",
                height=130,
            )
            c["data_val_md"] = gr.Markdown(
                "No validation file: `val_split` of the training data is held out.", elem_id="data-val-summary"
            )
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            c["data_summary"] = gr.Markdown("Loading the sample dataset…", elem_id="data-summary")
        with gr.Column(scale=2, min_width=240):
            c["data_format"] = gr.Dropdown(
                choices=list(DATASET_FORMATS),
                value="auto",
                label="Format",
                info="auto-detect, or force a format",
                elem_id="data-format",
            )
            c["data_detected"] = gr.Markdown(elem_id="data-detected")
    with gr.Accordion("Column mapping", open=False, elem_id="data-mapping") as acc:
        c["data_mapping_acc"] = acc
        c["data_mapping_md"] = gr.Markdown("Map the columns a format expects to the columns of your file.")
        c["data_map"] = {}
        with gr.Row():
            for name in MAP_TARGETS:
                c["data_map"][name] = c[f"map_{name}"] = gr.Dropdown(
                    choices=[""],
                    value="",
                    label=name,
                    allow_custom_value=False,
                    elem_id=f"data-map-{name}",
                    min_width=120,
                )
        c["data_map_btn"] = gr.Button("Apply mapping", size="sm", elem_id="data-map-btn")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            gr.Markdown("### Preview")
            c["data_example"] = gr.Slider(1, 2, value=1, step=1, label="Example", elem_id="data-example")
            with gr.Tabs():
                with gr.Tab("As a chat"):
                    c["data_chat"] = gr.Chatbot(
                        label="Conversation",
                        height=380,
                        elem_id="data-chat",
                        feedback_options=None,
                        buttons=["copy"],
                        group_consecutive_messages=False,
                    )
                with gr.Tab("As the model sees it"):
                    c["data_text"] = gr.HTML(elem_id="data-template")
        with gr.Column(scale=1):
            gr.Markdown("### Token lengths")
            c["data_hist"] = gr.Plot(elem_id="data-hist", show_label=False)
            with gr.Row(equal_height=True):
                c["data_max_length"] = gr.Number(
                    value=ctx.base_config.max_length,
                    precision=0,
                    label="max_length",
                    minimum=16,
                    elem_id="data-max-length",
                    scale=1,
                )
                c["data_suggest_btn"] = gr.Button("Use suggested max_length", elem_id="data-suggest-btn", scale=1)
            c["data_trunc"] = gr.Markdown(elem_id="data-trunc")
    with gr.Accordion("Validation report: problem rows", open=False, elem_id="data-problems-acc"):
        c["data_problems"] = gr.Dataframe(
            headers=["row", "where", "reason"],
            value=[],
            interactive=False,
            wrap=True,
            elem_id="data-problems",
            max_height=300,
        )
        c["data_problems_file"] = gr.File(
            label="Download the report (CSV)", interactive=False, elem_id="data-problems-file"
        )
    c["data_state"] = gr.State({})


def analyze(
    ctx: Ctx,
    dataset_path: str,
    fmt: str,
    mapping_text: str,
    model: str,
    max_length,
    train_on_prompt: bool,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Every Data-tab output for the given source (see OUTPUT_KEYS)."""
    desk = ctx.studio.data
    max_length = int(max_length or 1024)
    fmt = fmt if fmt in DATASET_FORMATS else "auto"
    out: dict[str, Any] = {"f.dataset_path": dataset_path or "", "f.dataset_format": fmt, "data_format": fmt}
    try:
        mapping = parse_mapping(mapping_text)
        out["f.column_mapping"] = json.dumps(mapping) if mapping else ""
        report = desk.report(dataset_path, fmt, mapping)
    except FinetuneError as exc:
        return {**out, **unusable(ctx, dataset_path, mapping_text, exc)}
    columns = list(report.columns)
    out.update(
        data_summary=summary_md(dataset_path, report),
        data_detected=(
            f"Detected format: **{report.format}**" if fmt == "auto" else f"Format (forced): **{report.format}**"
        )
        + (f" · mapping {md_escape(json.dumps(mapping))}" if mapping else ""),
        data_mapping_acc=gr.Accordion(open=False),
        data_mapping_md=f"Columns found: {', '.join('`' + md_escape(col) + '`' for col in columns)}",
        data_example=gr.Slider(minimum=1, maximum=max(2, report.kept_rows), value=1, interactive=report.kept_rows > 1),
        data_problems=[[i.row, i.where, i.reason] for i in report.skipped[:1000]],
        data_problems_file=desk.problems_csv(report),
    )
    for name in MAP_TARGETS:
        out[f"map_{name}"] = gr.Dropdown(choices=[""] + columns, value=mapping.get(name, ""))
    stats = None
    try:
        stats = desk.length_stats(report, model, max_length, trust_remote_code)
    except Exception as exc:  # a tokenizer that cannot be loaded, or cannot format some row, must not break the tab
        reason = error_text(exc)
        out.update(
            data_hist=charts.empty_figure("Token lengths", "Token statistics need the model's tokenizer"),
            data_trunc=md_error(
                f"Cannot measure token lengths with the tokenizer of {model}: {reason}", "No token statistics"
            ),
            data_suggest_btn=gr.Button("Use suggested max_length", interactive=False),
        )
    if stats is not None:
        out.update(
            data_hist=charts.length_histogram(stats, max_length, report.shape),
            data_trunc=truncation_md(stats, max_length),
            data_suggest_btn=gr.Button(f"Use suggested max_length ({stats['suggested_max_length']})", interactive=True),
        )
    out["data_state"] = {
        "dataset_path": dataset_path,
        "lengths": stats["lengths"] if stats else [],
        "suggested": stats["suggested_max_length"] if stats else None,
        "shape": report.shape,
    }
    if stats is not None:  # the tokenizer loaded
        out["data_chat"], out["data_text"] = preview(ctx.studio, report, model, 1, train_on_prompt, trust_remote_code)
    else:
        out["data_chat"], out["data_text"] = chat_messages(row_chat(report.rows[0])), ""
    return out


def unusable(ctx: Ctx, dataset_path: str, mapping_text: str, exc: FinetuneError) -> dict[str, Any]:
    """What the tab shows for data it cannot use: why, the columns it found, a mapping form to fix it."""
    columns = ctx.studio.data.columns(dataset_path)
    cols = ", ".join(f"`{md_escape(col)}`" for col in columns) or "(none could be read)"
    try:
        mapping = parse_mapping(mapping_text)
    except FinetuneError:
        mapping = {}
    out: dict[str, Any] = dict(
        # "error": the Train tab refuses to start on data the Data tab shows as unusable
        data_state={"dataset_path": dataset_path, "lengths": [], "suggested": None, "error": error_text(exc)},
        data_summary=md_error(exc, f"Cannot use {source_label(dataset_path)}"),
        data_detected="Format: **not detected**",
        data_mapping_acc=gr.Accordion(open=bool(columns)),
        data_mapping_md=(
            f"Columns found in your file: {cols}.  \nPick which of your columns plays each role "
            "(leave the others empty), then **Apply mapping**. You can also force a **Format** above."
        ),
        data_example=gr.Slider(minimum=1, maximum=2, value=1, interactive=False),
        data_chat=[],
        data_text="",
        data_trunc="",
        data_hist=charts.empty_figure("Token lengths", "No usable data"),
        data_suggest_btn=gr.Button("Use suggested max_length", interactive=False),
        data_problems=[],
        data_problems_file=None,
    )
    for name in MAP_TARGETS:
        chosen = mapping.get(name, "")
        out[f"map_{name}"] = gr.Dropdown(choices=[""] + columns, value=chosen if chosen in columns else "")
    return out


OUTPUT_KEYS = [
    "data_state",
    "data_summary",
    "data_detected",
    "data_mapping_acc",
    "data_mapping_md",
    *[f"map_{name}" for name in MAP_TARGETS],
    "data_example",
    "data_chat",
    "data_text",
    "data_hist",
    "data_trunc",
    "data_suggest_btn",
    "data_problems",
    "data_problems_file",
    "data_format",
    "f.dataset_path",
    "f.dataset_format",
    "f.column_mapping",
]
# what every analysis reads besides the source: the model's tokenizer, the Data tab's max_length, and two knobs
COMMON = ["f.model_name_or_path", "data_max_length", "f.train_on_prompt", "f.trust_remote_code"]
SOURCE = ["f.dataset_path", "f.dataset_format", "f.column_mapping"]
NO_VALIDATION = "No validation file: `val_split` of the training data is held out."


# --- handlers --------------------------------------------------------------------------------
def use_sample(ctx: Ctx, model, max_length, train_on_prompt, trust_remote_code) -> dict:
    return analyze(ctx, "", "auto", "", model, max_length, train_on_prompt, trust_remote_code)


def use_preference_sample(ctx: Ctx, model, max_length, train_on_prompt, trust_remote_code) -> dict:
    sample = ctx.studio.data.preference_sample
    return analyze(ctx, sample, "auto", "", model, max_length, train_on_prompt, trust_remote_code)


def use_upload(ctx: Ctx, path, model, max_length, train_on_prompt, trust_remote_code) -> dict:
    if not path:  # the file was removed: back to the sample
        return use_sample(ctx, model, max_length, train_on_prompt, trust_remote_code)
    try:
        stored = ctx.studio.data.store_upload(path)
    except (OSError, FinetuneError) as exc:
        gr.Warning(error_text(exc))
        return {}
    return analyze(ctx, stored, "auto", "", model, max_length, train_on_prompt, trust_remote_code)


def use_hub(ctx: Ctx, dataset_id, model, max_length, train_on_prompt, trust_remote_code) -> dict:
    dataset_id = (dataset_id or "").strip()
    if not ctx.studio.data.is_hub_dataset(dataset_id):
        gr.Warning("Type a Hub dataset id like owner/name (e.g. HuggingFaceH4/no_robots).")
        return {}
    return analyze(ctx, dataset_id, "auto", "", model, max_length, train_on_prompt, trust_remote_code)


def reanalyze(ctx: Ctx, dataset_path, fmt, mapping, model, max_length, train_on_prompt, trust_remote_code) -> dict:
    """The source as the form now describes it (a new format, model or knob), measured again."""
    return analyze(ctx, dataset_path, fmt, mapping, model, max_length, train_on_prompt, trust_remote_code)


def apply_mapping(ctx: Ctx, dataset_path, fmt, *values) -> dict:
    chosen, (model, max_length, train_on_prompt, trust_remote_code) = (
        values[: len(MAP_TARGETS)],
        values[len(MAP_TARGETS) :],
    )
    mapping = {name: v for name, v in zip(MAP_TARGETS, chosen) if v}
    text = json.dumps(mapping) if mapping else ""
    return analyze(ctx, dataset_path, fmt, text, model, max_length, train_on_prompt, trust_remote_code)


def show_example(ctx: Ctx, dataset_path, fmt, mapping, model, index, train_on_prompt, trust_remote_code) -> dict:
    try:
        report = ctx.studio.data.report(dataset_path, fmt, parse_mapping(mapping))
    except FinetuneError:
        return {}
    chat, text = preview(ctx.studio, report, model, index, train_on_prompt, trust_remote_code)
    return {"data_chat": chat, "data_text": text}


def use_validation(ctx: Ctx, path, fmt, mapping) -> dict:
    if not path:
        return {"f.eval_dataset_path": "", "data_val_md": NO_VALIDATION}
    try:
        stored = ctx.studio.data.store_upload(path)
        report = ctx.studio.data.report(stored, fmt, parse_mapping(mapping))
    except (OSError, FinetuneError) as exc:
        gr.Warning(error_text(exc))
        return {"f.eval_dataset_path": "", "data_val_md": md_error(exc, "Validation file not used")}
    return {
        "f.eval_dataset_path": stored,
        "data_val_md": f"Validation: **{report.kept_rows}** rows ({report.format}), "
        f"{len(report.skipped)} skipped — used instead of `val_split`.",
    }


def files_shown(ctx: Ctx, dataset_path, eval_path) -> dict:
    """After a reload: the upload boxes show the files the restored settings use (uploads only)."""
    return {
        "data_train_file": ctx.studio.data.stored_upload(dataset_path),
        "data_val_file": ctx.studio.data.stored_upload(eval_path),
    }


def lengths_view(ctx: Ctx, state, max_length) -> dict:
    """The histogram and truncation count at another max_length (from the lengths already measured)."""
    lengths = (state or {}).get("lengths") or []
    if not lengths or not max_length:
        return {}
    stats = ctx.studio.data.lengths_at(lengths, int(max_length))
    return {
        "data_hist": charts.length_histogram(stats, int(max_length), state.get("shape")),
        "data_trunc": truncation_md(stats, int(max_length)),
    }


def set_max_length(ctx: Ctx, max_length) -> dict:
    """The Data tab's number is the form's max_length field."""
    return {"f.max_length": max_length}


def use_suggested(ctx: Ctx, state) -> dict:
    suggested = (state or {}).get("suggested")
    if not suggested:
        gr.Warning("No suggestion yet: load data whose token lengths can be measured.")
        return {}
    gr.Info(f"max_length set to {suggested}")
    return {"data_max_length": suggested, "f.max_length": suggested}


def wire(ctx: Ctx) -> None:
    c, f = ctx.c, ctx.fields
    refresh = ctx.hooks["refresh"]  # the Model tab's estimate and summary follow every change of source

    def on(trigger, handler, inputs, outputs=OUTPUT_KEYS, **listener):
        return refresh(connect(ctx, trigger, handler, inputs, outputs, **listener))

    on(c["data_sample_btn"].click, use_sample, COMMON, api_name="load_sample_data")
    on(c["data_pref_sample_btn"].click, use_preference_sample, COMMON, api_name="load_preference_sample")
    # .upload/.clear, not .change: a page reload puts the stored file back in the box without re-reading it
    on(c["data_train_file"].upload, use_upload, ["data_train_file", *COMMON], api_name="load_data_file")
    on(c["data_train_file"].clear, use_sample, COMMON, api_visibility="private")
    on(c["data_hub_btn"].click, use_hub, ["data_hub_id", *COMMON], api_name="load_hub_dataset")
    on(c["data_format"].input, reanalyze, ["f.dataset_path", "data_format", "f.column_mapping", *COMMON],
       api_name="set_data_format")  # fmt: skip
    on(c["data_map_btn"].click, apply_mapping, ["f.dataset_path", "data_format", *[f"map_{n}" for n in MAP_TARGETS],
       *COMMON], api_name="apply_column_mapping")  # fmt: skip

    quiet = {"api_visibility": "private", "show_progress": "minimal"}
    ctx.hooks["reanalyze"] = lambda dep: connect(ctx, dep.then, reanalyze, [*SOURCE, *COMMON], OUTPUT_KEYS, **quiet)
    form_changes = [
        f["model_name_or_path"].submit,
        f["dataset_path"].submit,
        f["dataset_format"].input,
        f["column_mapping"].submit,
        f["train_on_prompt"].input,
        f["trust_remote_code"].input,
    ]
    connect(ctx, lambda fn, i, o, **kw: gr.on(form_changes, fn, i, o, **kw), reanalyze, [*SOURCE, *COMMON],
            OUTPUT_KEYS, **quiet)  # fmt: skip
    connect(ctx, c["data_example"].release, show_example,
            [*SOURCE, "f.model_name_or_path", "data_example", "f.train_on_prompt", "f.trust_remote_code"],
            ["data_chat", "data_text"], api_name="preview_example", show_progress="minimal")  # fmt: skip

    val_in, val_out = ["data_val_file", "f.dataset_format", "f.column_mapping"], ["f.eval_dataset_path", "data_val_md"]
    refresh(connect(ctx, c["data_val_file"].upload, use_validation, val_in, val_out, api_name="load_validation_file"))
    refresh(connect(ctx, c["data_val_file"].clear, use_validation, val_in, val_out, api_visibility="private"))
    connect(ctx, ctx.hooks["after_restore"].then, files_shown, ["f.dataset_path", "f.eval_dataset_path"],
            ["data_train_file", "data_val_file"], api_visibility="private", show_progress="hidden")  # fmt: skip

    connect(ctx, c["data_max_length"].change, lengths_view, ["data_state", "data_max_length"],
            ["data_hist", "data_trunc"], api_visibility="private", show_progress="hidden")  # fmt: skip
    refresh(connect(ctx, c["data_max_length"].input, set_max_length, ["data_max_length"], ["f.max_length"],
                    api_visibility="private", show_progress="hidden"))  # fmt: skip
    refresh(connect(ctx, c["data_suggest_btn"].click, use_suggested, ["data_state"], ["data_max_length", "f.max_length"],
                    api_name="use_suggested_max_length"))  # fmt: skip

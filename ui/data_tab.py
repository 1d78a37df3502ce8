"""Data tab: pick the data (sample, upload, Hub), check it, preview it, size max_length.

Engine calls: the Studio's data desk (report, columns, store_upload, length_stats, render,
problems_csv; it owns the caches). The chosen source, format and mapping are written
into the Advanced form (dataset_path, eval_dataset_path, dataset_format, column_mapping).
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
from ui.state import Ctx, error_text, md_error, md_escape


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
                c["data_map"][name] = gr.Dropdown(
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
) -> list:
    """Every Data-tab output for the given source (see OUTPUT_KEYS)."""
    desk = ctx.studio.data
    max_length = int(max_length or 1024)
    fmt = fmt if fmt in DATASET_FORMATS else "auto"
    out: dict[str, Any] = {k: gr.skip() for k in OUTPUT_KEYS}
    out.update(field_dataset_path=dataset_path or "", field_dataset_format=fmt, data_format=fmt)
    try:
        mapping = parse_mapping(mapping_text)
        out["field_column_mapping"] = json.dumps(mapping) if mapping else ""
        report = desk.report(dataset_path, fmt, mapping)
    except FinetuneError as exc:
        columns = desk.columns(dataset_path)
        cols = ", ".join(f"`{md_escape(col)}`" for col in columns) or "(none could be read)"
        mapping = {}
        try:
            mapping = parse_mapping(mapping_text)
        except FinetuneError:
            pass
        out.update(
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
            out[f"map_{name}"] = gr.Dropdown(
                choices=[""] + columns, value=mapping.get(name, "") if mapping.get(name) in columns else ""
            )
        return [out[k] for k in OUTPUT_KEYS]

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
    except FinetuneError as exc:
        reason = error_text(exc)
        out.update(
            data_hist=charts.empty_figure("Token lengths", "Token statistics need the model's tokenizer"),
            data_trunc=md_error(
                f"Cannot measure token lengths with the tokenizer of {model}: {reason}", "No token statistics"
            ),
            data_suggest_btn=gr.Button("Use suggested max_length", interactive=False),
        )
    except Exception as exc:  # a tokenizer that cannot format some row must not break the tab
        out.update(
            data_hist=charts.empty_figure("Token lengths", "Could not measure"),
            data_trunc=md_error(exc, "No token statistics"),
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
    return [out[k] for k in OUTPUT_KEYS]


OUTPUT_KEYS = (
    ["data_state", "data_summary", "data_detected", "data_mapping_acc", "data_mapping_md"]
    + [f"map_{name}" for name in MAP_TARGETS]
    + [
        "data_example",
        "data_chat",
        "data_text",
        "data_hist",
        "data_trunc",
        "data_suggest_btn",
        "data_problems",
        "data_problems_file",
        "data_format",
        "field_dataset_path",
        "field_dataset_format",
        "field_column_mapping",
    ]
)


def _outputs(ctx: Ctx) -> list:
    c, f = ctx.c, ctx.fields
    lookup = {
        **{k: c[k] for k in OUTPUT_KEYS if k in c},
        **{f"map_{n}": c["data_map"][n] for n in MAP_TARGETS},
        "field_dataset_path": f["dataset_path"],
        "field_dataset_format": f["dataset_format"],
        "field_column_mapping": f["column_mapping"],
    }
    return [lookup[k] for k in OUTPUT_KEYS]


def wire(ctx: Ctx) -> None:
    c, f = ctx.c, ctx.fields
    outputs = _outputs(ctx)
    common = [f["model_name_or_path"], c["data_max_length"], f["train_on_prompt"], f["trust_remote_code"]]
    refresh = ctx.hooks["refresh"]

    def use_sample(model, ml, top, trc):
        return analyze(ctx, "", "auto", "", model, ml, top, trc)

    def use_upload(path, model, ml, top, trc):
        if not path:  # the file was removed: back to the sample
            return analyze(ctx, "", "auto", "", model, ml, top, trc)
        try:
            stored = ctx.studio.data.store_upload(path)
        except (OSError, FinetuneError) as exc:
            gr.Warning(error_text(exc))
            return [gr.skip()] * len(OUTPUT_KEYS)
        return analyze(ctx, stored, "auto", "", model, ml, top, trc)

    def use_hub(dataset_id, model, ml, top, trc):
        dataset_id = (dataset_id or "").strip()
        if not ctx.studio.data.is_hub_dataset(dataset_id):
            gr.Warning("Type a Hub dataset id like owner/name (e.g. HuggingFaceH4/no_robots).")
            return [gr.skip()] * len(OUTPUT_KEYS)
        return analyze(ctx, dataset_id, "auto", "", model, ml, top, trc)

    def reformat(dataset_path, fmt, mapping, model, ml, top, trc):
        return analyze(ctx, dataset_path, fmt, mapping, model, ml, top, trc)

    def apply_mapping(dataset_path, fmt, *args):
        values, (model, ml, top, trc) = args[: len(MAP_TARGETS)], args[len(MAP_TARGETS) :]
        mapping = {name: v for name, v in zip(MAP_TARGETS, values) if v}
        return analyze(ctx, dataset_path, fmt, json.dumps(mapping) if mapping else "", model, ml, top, trc)

    ev = c["data_sample_btn"].click(use_sample, common, outputs, api_name="load_sample_data")
    refresh(ev)

    def use_preference_sample(model, ml, top, trc):
        return analyze(ctx, ctx.studio.data.preference_sample, "auto", "", model, ml, top, trc)

    ev = c["data_pref_sample_btn"].click(use_preference_sample, common, outputs, api_name="load_preference_sample")
    refresh(ev)
    # .upload/.clear, not .change: a page reload puts the stored file back in the box without re-reading it
    ev = c["data_train_file"].upload(use_upload, [c["data_train_file"], *common], outputs, api_name="load_data_file")
    refresh(ev)
    refresh(c["data_train_file"].clear(use_sample, common, outputs, api_visibility="private"))
    ev = c["data_hub_btn"].click(use_hub, [c["data_hub_id"], *common], outputs, api_name="load_hub_dataset")
    refresh(ev)
    ev = c["data_format"].input(
        reformat,
        [f["dataset_path"], c["data_format"], f["column_mapping"], *common],
        outputs,
        api_name="set_data_format",
    )
    refresh(ev)
    ev = c["data_map_btn"].click(
        apply_mapping,
        [f["dataset_path"], c["data_format"], *[c["data_map"][n] for n in MAP_TARGETS], *common],
        outputs,
        api_name="apply_column_mapping",
    )
    refresh(ev)

    def reanalyze(dataset_path, fmt, mapping, model, ml, top, trc):
        return analyze(ctx, dataset_path, fmt, mapping, model, ml, top, trc)

    re_inputs = [
        f["dataset_path"],
        f["dataset_format"],
        f["column_mapping"],
        f["model_name_or_path"],
        c["data_max_length"],
        f["train_on_prompt"],
        f["trust_remote_code"],
    ]
    ctx.hooks["reanalyze"] = lambda dep: dep.then(
        reanalyze, re_inputs, outputs, api_visibility="private", show_progress="minimal"
    )
    gr.on(
        [
            f["model_name_or_path"].submit,
            f["dataset_path"].submit,
            f["dataset_format"].input,
            f["column_mapping"].submit,
            f["train_on_prompt"].input,
            f["trust_remote_code"].input,
        ],
        reanalyze,
        re_inputs,
        outputs,
        api_visibility="private",
        show_progress="minimal",
    )

    # preview another example
    def show_example(dataset_path, fmt, mapping, model, index, top, trc):
        try:
            report = ctx.studio.data.report(dataset_path, fmt, parse_mapping(mapping))
        except FinetuneError:
            return gr.skip(), gr.skip()
        return preview(ctx.studio, report, model, index, top, trc)

    c["data_example"].release(
        show_example,
        [
            f["dataset_path"],
            f["dataset_format"],
            f["column_mapping"],
            f["model_name_or_path"],
            c["data_example"],
            f["train_on_prompt"],
            f["trust_remote_code"],
        ],
        [c["data_chat"], c["data_text"]],
        api_name="preview_example",
        show_progress="minimal",
    )

    # validation file
    def use_val(path, fmt, mapping):
        if not path:
            return "", "No validation file: `val_split` of the training data is held out."
        try:
            stored = ctx.studio.data.store_upload(path)
            report = ctx.studio.data.report(stored, fmt, parse_mapping(mapping))
        except (OSError, FinetuneError) as exc:
            gr.Warning(error_text(exc))
            return "", md_error(exc, "Validation file not used")
        return stored, (
            f"Validation: **{report.kept_rows}** rows ({report.format}), "
            f"{len(report.skipped)} skipped — used instead of `val_split`."
        )

    val_inputs = [c["data_val_file"], f["dataset_format"], f["column_mapping"]]
    val_outputs = [f["eval_dataset_path"], c["data_val_md"]]
    refresh(c["data_val_file"].upload(use_val, val_inputs, val_outputs, api_name="load_validation_file"))
    refresh(c["data_val_file"].clear(use_val, val_inputs, val_outputs, api_visibility="private"))

    def files_shown(dataset_path, eval_path):
        """After a reload: the upload boxes show the files the restored settings use (uploads only)."""
        return ctx.studio.data.stored_upload(dataset_path), ctx.studio.data.stored_upload(eval_path)

    ctx.hooks["after_restore"].then(
        files_shown,
        [f["dataset_path"], f["eval_dataset_path"]],
        [c["data_train_file"], c["data_val_file"]],
        api_visibility="private",
        show_progress="hidden",
    )

    # max_length: the Data tab's number mirrors the form's field
    def lengths_view(state, ml):
        lengths = (state or {}).get("lengths") or []
        if not lengths or not ml:
            return gr.skip(), gr.skip()
        stats = ctx.studio.data.lengths_at(lengths, int(ml))
        return charts.length_histogram(stats, int(ml), state.get("shape")), truncation_md(stats, int(ml))

    c["data_max_length"].change(
        lengths_view,
        [c["data_state"], c["data_max_length"]],
        [c["data_hist"], c["data_trunc"]],
        api_visibility="private",
        show_progress="hidden",
    )
    ev = c["data_max_length"].input(
        lambda ml: ml, c["data_max_length"], f["max_length"], api_visibility="private", show_progress="hidden"
    )
    refresh(ev)

    def use_suggested(state):
        suggested = (state or {}).get("suggested")
        if not suggested:
            gr.Warning("No suggestion yet: load data whose token lengths can be measured.")
            return gr.skip(), gr.skip()
        gr.Info(f"max_length set to {suggested}")
        return suggested, suggested

    ev = c["data_suggest_btn"].click(
        use_suggested, c["data_state"], [c["data_max_length"], f["max_length"]], api_name="use_suggested_max_length"
    )
    refresh(ev)

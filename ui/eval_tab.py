"""Batch evaluation view (inside the Test tab): base and fine-tuned over the run's validation split
or a chosen file, capped at N rows, scored against the references, with a progress bar and a Stop
button; a table with filters (answers differ / fine-tuned worse), a summary chart and downloads.

Engine calls: the Studio's judging desk (evaluate with progress/stop callbacks under the GPU lease,
latest_evaluation, load_evaluation; Evaluation.filtered/write/figure). Each evaluation is saved by the engine in
<run>/evaluations/<timestamp>/; the page keeps only that folder in gr.State, and the latest one is
shown again when a run is chosen. Only files the engine wrote reach the download component.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import gradio as gr

from finetune.studio import Evaluation
from ui.eval_common import StopFlag, fmt_score, offer_stop_while, progress_callback, request_stop, settings_from
from ui.state import GPU, Ctx, error_text, frame_json, md_error, md_escape

DEFAULT_LIMIT = 20
FILTERS = [("All rows", "all"), ("Answers differ", "differ"), ("Fine-tuned scored worse (forgetting check)", "worse")]
METRIC_NAMES = {
    "exact_match": "exact match",
    "token_f1": "token F1",
    "rouge_l": "ROUGE-L",
    "bleu": "BLEU (sacreBLEU / 100)",
    "perplexity": "validation perplexity (lower is better)",
    "accuracy": "accuracy",
    "macro_f1": "macro F1",
    "mean_tokens": "mean tokens",
    "mean_seconds": "mean seconds",
    "preference_accuracy": "preference accuracy (log p chosen > rejected)",
    "mean_margin": "mean margin (nats)",
    "mean_reward": "mean reward (the run's reward functions)",
}
SHORT = {"exact_match": "EM", "token_f1": "F1", "rouge_l": "ROUGE-L", "correct": "✓", "reward": "reward"}
EMPTY_HEADERS = ["#", "prompt", "reference", "base", "fine-tuned"]
# the text columns, then up to 8 score columns (4 metrics x 2 models): fits a laptop screen without scrolling
COLUMN_WIDTHS = ["44px", "170px", "100px", "220px", "220px", *["60px"] * 8]


def build(ctx: Ctx) -> None:
    c = ctx.c
    gr.Markdown(
        "Run the base and the fine-tuned model over held-out rows and score both against the reference "
        "answers (exact match, token F1, ROUGE-L; accuracy and macro F1 when the answers look like labels). "
        "Uses the decoding settings above (the rows keep their own system turns). On preference pairs "
        "(chosen/rejected): also each model's preference accuracy (log-probability of the chosen answer above "
        "the rejected one's) and mean margin, with the chosen answers as the references.",
        elem_id="eval-intro",
    )
    c["eval_stop_flag"] = gr.State(StopFlag())
    c["eval_folder"] = gr.State(None)
    with gr.Row(equal_height=True):
        c["eval_file"] = gr.File(
            label="Data file (optional: default is the run's validation split)",
            file_types=[".jsonl", ".json", ".csv", ".parquet", ".txt"],
            height=140,
            elem_id="eval-file",
            scale=3,
        )
        c["eval_limit"] = gr.Number(
            value=DEFAULT_LIMIT,
            precision=0,
            minimum=1,
            maximum=100_000,
            label="Rows (at most)",
            elem_id="eval-limit",
            scale=1,
            min_width=140,
        )
    with gr.Row():
        c["eval_start"] = gr.Button("Evaluate base vs fine-tuned", variant="primary", elem_id="eval-start", scale=3)
        c["eval_stop"] = gr.Button("Stop", variant="stop", elem_id="eval-stop", scale=1, interactive=False)
    c["eval_msg"] = gr.Markdown(elem_id="eval-msg")
    with gr.Row(equal_height=False):
        c["eval_summary"] = gr.Markdown(elem_id="eval-summary", container=True)
        c["eval_chart"] = gr.Plot(label="Mean scores", elem_id="eval-chart", show_label=False)
    c["eval_filter"] = gr.Radio(FILTERS, value="all", label="Show", elem_id="eval-filter")
    c["eval_table"] = gr.Dataframe(
        headers=EMPTY_HEADERS,
        interactive=False,
        wrap=True,
        max_height=520,
        elem_id="eval-table",
        label="Rows",
        max_chars=400,
        show_search="search",
        column_widths=COLUMN_WIDTHS,
    )
    c["eval_files"] = gr.File(
        label="Download these rows (CSV and JSONL)",
        file_count="multiple",
        interactive=False,
        elem_id="eval-files",
    )


def table(evaluation: Evaluation, which: str):
    """The rows for display: the texts, then each metric for base and fine-tuned side by side (token
    counts, times and the differ/worse flags are in the downloads; the filters use the flags)."""
    import pandas as pd

    rows = evaluation.filtered(which)
    label_like = bool(evaluation.summary.get("label_like"))
    metrics = ["exact_match", "token_f1", "rouge_l"] + (["correct"] if label_like else [])
    if "mean_reward" in evaluation.summary.get("base", {}):
        metrics = ["reward", *metrics]
    records = []
    for r in rows:
        rec = {"#": r.index, "prompt": r.prompt, "reference": r.reference, "base": r.base, "fine-tuned": r.finetuned}
        for m in metrics:
            rec[f"{SHORT[m]} base"] = fmt_score(r.base_scores.get(m))
            rec[f"{SHORT[m]} ft"] = fmt_score(r.finetuned_scores.get(m))
        records.append(rec)
    if not records:
        return pd.DataFrame(columns=EMPTY_HEADERS)
    return pd.DataFrame(records)


def summary_md(evaluation: Evaluation) -> str:
    s = evaluation.summary
    folder = evaluation.folder.name if evaluation.folder else "not saved"
    metrics = ["exact_match", "token_f1", "rouge_l", "bleu", "perplexity"]
    metrics += ["accuracy", "macro_f1"] if s.get("label_like") else []
    if "preference_pairs" in s:  # preference pairs: the chosen answers are the references above
        metrics = ["preference_accuracy", "mean_margin", *metrics]
    metrics = [*(s.get("extra_metrics") or []), *metrics]  # e.g. a GRPO run's mean reward (the engine names them)
    lines = [
        f"**{s.get('n', 0)} rows** from {md_escape(Path(str(s.get('source', '?'))).name)} "
        f"(adapter: {md_escape(s.get('adapter') or 'final')}, saved as `{md_escape(folder)}`)"
        + (" — **stopped early**" if s.get("stopped") else ""),
        "",
        f"| metric | {md_escape(s.get('against_label') or 'base')} | fine-tuned |",
        "|---|---|---|",
    ]
    for m in [*metrics, "mean_tokens", "mean_seconds"]:
        b, f = s.get("base", {}).get(m), s.get("finetuned", {}).get(m)
        fmt = (
            (lambda v: "–" if v is None else f"{v:.3f}")
            if m != "mean_tokens"
            else (lambda v: "–" if v is None else f"{v:.1f}")
        )
        lines.append(f"| {METRIC_NAMES.get(m, m)} | {fmt(b)} | {fmt(f)} |")
    lines += [
        "",
        f"Answers differ in **{s.get('differ', 0)}** rows; fine-tuned scored better in "
        f"**{s.get('finetuned_better', 0)}** and worse in **{s.get('finetuned_worse', 0)}** "
        f"(by {'reward' if s.get('primary_metric') == 'mean_reward' else 'label accuracy' if s.get('label_like') else 'ROUGE-L'}).",
    ]
    for w in s.get("warnings") or []:
        lines.append(f"\n⚠ {md_escape(w)}")
    for n in s.get("notes") or []:
        lines.append(f"\nℹ {md_escape(n)}")
    if s.get("skipped"):
        lines.append(f"\n{len(s['skipped'])} row(s) skipped (no prompt or no reference).")
    return "\n".join(lines)


def row_files(evaluation: Evaluation, which: str) -> list[str]:
    """CSV + JSONL of the rows shown: the engine's saved files for all rows, else filtered copies."""
    folder = evaluation.folder
    if folder is None:
        return []
    if which == "all":
        return [str(folder / "rows.csv"), str(folder / "rows.jsonl")]
    return [
        str(evaluation.write(folder / f"rows-{which}.csv", which)),
        str(evaluation.write(folder / f"rows-{which}.jsonl", which)),
    ]


def view(evaluation: Evaluation | None, which: str):
    """(summary, chart, table, files, folder) for an evaluation, or empty outputs for none."""
    if evaluation is None:
        return "*No evaluation of this run yet.*", None, table_empty(), [], None
    which = which or "all"
    return (
        summary_md(evaluation),
        evaluation.figure(),
        table(evaluation, which),
        row_files(evaluation, which),
        str(evaluation.folder) if evaluation.folder else None,
    )


def table_empty():
    import pandas as pd

    return pd.DataFrame(columns=EMPTY_HEADERS)


def run_evaluation(
    ctx: Ctx,
    run_name,
    data_file,
    limit,
    which,
    stop: StopFlag,
    system,
    temperature,
    top_p,
    max_new,
    seed,
    against=None,
    progress=gr.Progress(),
):
    """Outputs: message, summary, chart, table, files, folder. `against`: the side opposite the fine-tune."""
    stop.clear()
    try:
        ctx.studio.lease.refuse_while_training("evaluating")
        settings = settings_from(system, temperature, top_p, max_new, seed)
        progress(0.0, desc="Loading the models")
        stop.running = True
        evaluation = ctx.studio.judge.evaluate(
            run_name,
            data_file or None,
            limit=int(limit or DEFAULT_LIMIT),
            settings=settings,
            stop=stop,
            progress=progress_callback(progress, "Evaluating", "rows"),
            against=against,
        )
    except Exception as exc:
        gr.Warning(error_text(exc))
        return md_error(exc, "No evaluation"), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    finally:
        stop.running = False
    s = evaluation.summary
    if s.get("stopped"):
        msg = f"■ Stopped after {s['n']} of {s['requested']} rows; the finished rows are scored and saved."
    else:
        msg = f"✔ Done: {s['n']} rows evaluated."
    return (msg, *view(evaluation, which))


def refilter(ctx: Ctx, folder, which):
    """Show another filter of the evaluation in `folder`: table and files only."""
    if not folder:
        return table_empty(), []
    try:
        evaluation = ctx.studio.judge.load_evaluation(folder)
        return table(evaluation, which), row_files(evaluation, which)
    except Exception as exc:
        gr.Warning(error_text(exc))
        return gr.skip(), gr.skip()


def latest(ctx: Ctx, run_name, which):
    """The latest saved evaluation of the chosen run (summary, chart, table, files, folder)."""
    if not run_name:
        return view(None, which)
    try:
        return view(ctx.studio.judge.latest_evaluation(run_name), which)
    except Exception as exc:
        return md_error(exc, "Cannot show the last evaluation"), None, table_empty(), [], None


RUN_OUTPUTS = ("eval_summary", "eval_chart", "eval_table", "eval_files", "eval_folder", "eval_filter")


def for_run(ctx: Ctx, run_name):
    """What the view shows when a run is chosen (ui.run_views): its latest evaluation, all rows."""
    return (*latest(ctx, run_name, "all"), "all")


def latest_api(ctx: Ctx, run_name: str, which: str = "all") -> dict:
    """The latest saved evaluation of a run as JSON: summary (Markdown), headers and data of the rows shown,
    folder ("" when the run has none)."""
    summary, _, frame, _, folder = latest(ctx, run_name, which)
    return {"summary": summary, **frame_json(frame), "folder": folder or ""}


def wire(ctx: Ctx, settings_inputs: list) -> None:
    c = ctx.c
    shown = [c["eval_summary"], c["eval_chart"], c["eval_table"], c["eval_files"], c["eval_folder"]]
    work = c["eval_start"].click(
        partial(run_evaluation, ctx),
        [c["test_run"], c["eval_file"], c["eval_limit"], c["eval_filter"], c["eval_stop_flag"], *settings_inputs]
        + [c["test_against"]],
        [c["eval_msg"], *shown],
        api_name="evaluate",
        concurrency_id=GPU,
        concurrency_limit=1,
    )
    offer_stop_while(c["eval_start"].click, work, c["eval_stop"])
    c["eval_stop"].click(
        partial(request_stop, what="evaluation"), c["eval_stop_flag"], c["eval_msg"], api_name="stop_evaluation"
    )
    c["eval_filter"].change(
        partial(refilter, ctx),
        [c["eval_folder"], c["eval_filter"]],
        [c["eval_table"], c["eval_files"]],
        api_name="filter_evaluation",
    )
    # the chosen run's latest evaluation is drawn by ui.run_views; this is the same read for API clients

    def latest_evaluation(run_name: str, which: str = "all") -> dict:
        return latest_api(ctx, run_name, which)

    gr.api(latest_evaluation, api_name="latest_evaluation")

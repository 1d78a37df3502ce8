"""Benchmarks view (inside the Test tab): standard lm-eval tasks on the base and the fine-tuned model, and the
one-click forgetting check (the built-in general set: kept / lost next to the run's own task metric).

A curated short list (with each task's size and, once this machine has measured the model's speed, how long
it takes here), any lm-eval task name, or task YAML files uploaded with their data files. The table has
both scores with their 95% intervals, the difference and its interval; a fine-tune worse beyond noise is
red. Tasks that need the Hugging Face Hub say so when it cannot be reached.

Engine calls: the Studio's judging desk (benchmark, forgetting_check with progress/stop under the GPU
lease, latest_benchmark, latest_forgetting, curated_benchmarks, benchmark_figure, store_task_files). Results are saved by the engine in <run>/benchmarks/.
"""

from __future__ import annotations

from functools import partial
from html import escape

import gradio as gr

from finetune.errors import FinetuneError
from ui.eval_common import StopFlag, request_stop
from ui.state import GPU, Ctx, error_text, md_error, md_escape

BUILTIN = "finetune_general"
DEFAULT_LIMIT = 50
TABLE_HEADERS = ["task", "metric", "base (95%)", "fine-tuned (95%)", "difference (95%)", "verdict", "questions"]
VERDICT_COLOURS = {"worse": "#fbd6d6", "better": "#d4f8d4"}


def build(ctx: Ctx) -> None:
    c = ctx.c
    gr.Markdown(
        "Did it get worse at everything else? The same standard tasks (EleutherAI's lm-evaluation-harness) on "
        "the base and the fine-tuned model, on the one model in memory. **Forgetting check**: the built-in "
        "general set (60 questions of our own, shipped), read as kept / lost next to your task's metric.",
        elem_id="bench-intro",
    )
    c["bench_stop_flag"] = gr.State(StopFlag())
    with gr.Row():
        c["bench_forget"] = gr.Button("Forgetting check (built-in general set)", variant="primary",
                                      elem_id="bench-forget", scale=3)  # fmt: skip
        c["bench_stop"] = gr.Button("Stop", variant="stop", elem_id="bench-stop", scale=1)
    c["bench_verdict"] = gr.HTML(elem_id="bench-verdict")
    c["bench_curated"] = gr.Dataframe(
        headers=["task", "what", "size", "time"],
        interactive=False,
        wrap=True,
        label="Curated tasks (time: both models, at the speed measured on this machine for this run's model)",
        elem_id="bench-curated",
        max_height=280,
    )
    with gr.Row(equal_height=False):
        c["bench_tasks"] = gr.Dropdown(
            choices=[BUILTIN, "mmlu", "arc_easy", "hellaswag", "gsm8k", "ifeval", "truthfulqa_mc2"],
            value=[BUILTIN],
            multiselect=True,
            allow_custom_value=True,
            label="Tasks",
            info="Pick from the list or type any lm-eval task name. Tasks on the Hub need it reachable.",
            elem_id="bench-tasks",
            scale=3,
        )
        c["bench_files"] = gr.File(
            label="Or your own task YAML (with its data files)",
            file_count="multiple",
            file_types=[".yaml", ".yml", ".jsonl", ".json", ".csv", ".parquet"],
            height=120,
            elem_id="bench-files",
            scale=2,
        )
    with gr.Row(equal_height=True):
        c["bench_limit"] = gr.Number(value=DEFAULT_LIMIT, precision=0, minimum=0, label="Questions per task (0 = all)",
                                     elem_id="bench-limit", scale=1)  # fmt: skip
        c["bench_chat"] = gr.Checkbox(value=False, label="Prompts through the run's chat template",
                                      elem_id="bench-chat", scale=1)  # fmt: skip
        c["bench_start"] = gr.Button("Run on base and fine-tuned", variant="primary", elem_id="bench-start", scale=2)
    c["bench_msg"] = gr.Markdown(elem_id="bench-msg")
    c["bench_table"] = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, wrap=True, label="Benchmark results",
                                    elem_id="bench-table")  # fmt: skip
    c["bench_chart"] = gr.Plot(show_label=False, elem_id="bench-chart")


def pm(value, stderr) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" + (f" ± {1.96 * stderr:.3f}" if stderr is not None else "")


def table(bench):
    """The results table, a worse row red and a better one green (a pandas Styler)."""
    import pandas as pd

    if bench is None or not bench.rows:
        return pd.DataFrame(columns=TABLE_HEADERS)
    frame = pd.DataFrame(
        [
            [
                r.task,
                r.metric,
                pm(r.base, r.base_stderr),
                pm(r.finetuned, r.finetuned_stderr),
                pm(r.diff, r.diff_stderr) if r.diff is not None else "–",
                r.verdict,
                r.n,
            ]
            for r in bench.rows
        ],  # fmt: skip
        columns=TABLE_HEADERS,
    )

    def colour(row):
        shade = VERDICT_COLOURS.get(row["verdict"])
        return [f"background-color: {shade}" if shade else ""] * len(row)

    return frame.style.apply(colour, axis=1)


def verdict_html(check) -> str:
    if check is None:
        return '<div class="ft-muted">No forgetting check of this run yet.</div>'
    colour = {"kept": "#2e7d32", "lost": "#c62828", "gained": "#1565c0"}.get(check.verdict, "#555")
    return (
        f'<div id="bench-verdict-text"><b style="color:{colour}">{check.verdict.upper()}</b> · '
        f"{escape(check.text())}</div>"
    )


def bench_message(bench, prefix: str) -> str:
    if bench.stopped:
        return "■ Stopped: nothing was saved (a half-scored task would mislead)."
    worse = ", ".join(f"{r.task} {r.metric}" for r in bench.worse)
    note = f" **Worse beyond noise:** {md_escape(worse)}." if worse else " Nothing is worse beyond noise."
    when = bench.folder.name if bench.folder else "not saved"
    secs = " · ".join(f"{k} {v:.0f} s" for k, v in bench.seconds.items())
    return (
        f"{prefix} {md_escape(', '.join(bench.tasks))} on {md_escape(bench.adapter)} ({secs}), saved as `{when}`.{note}"
    )


def task_list(ctx: Ctx, chosen, files) -> str:
    tasks = [t for t in (chosen or []) if str(t).strip()]
    uploaded = ctx.studio.judge.store_task_files(files or [])
    return ",".join([*tasks, *([uploaded] if uploaded else [])])


def run_tasks(ctx: Ctx, run_name, chosen, files, limit, chat, stop: StopFlag, progress=gr.Progress()):
    """Outputs: message, table, chart."""
    stop.clear()
    try:
        ctx.studio.lease.refuse_while_training("running benchmarks")
        tasks = task_list(ctx, chosen, files)
        if not tasks:
            raise FinetuneError("Pick at least one task, or upload a task YAML.")
        progress(0.0, desc="Checking the tasks and loading the models")
        stop.running = True
        bench = ctx.studio.judge.benchmark(run_name, tasks, limit=int(limit or 0) or None, chat_template=bool(chat),
                                           progress=lambda f, m: progress(f, desc=m), stop=stop)  # fmt: skip
    except Exception as exc:
        gr.Warning(error_text(exc))
        return md_error(exc, "No benchmark"), gr.skip(), gr.skip()
    finally:
        stop.running = False
    return (
        bench_message(bench, "✔ Done:"),
        table(bench),
        ctx.studio.judge.benchmark_figure(bench) if bench.rows else None,
    )


def forgetting(ctx: Ctx, run_name, stop: StopFlag, progress=gr.Progress()):
    """Outputs: verdict, message, curated list (now with a measured speed)."""
    stop.clear()
    try:
        ctx.studio.lease.refuse_while_training("running the forgetting check")
        progress(0.0, desc="Loading the models")
        stop.running = True
        check = ctx.studio.judge.forgetting_check(run_name, progress=lambda f, m: progress(f, desc=m), stop=stop)
    except Exception as exc:
        gr.Warning(error_text(exc))
        return gr.skip(), md_error(exc, "No forgetting check"), gr.skip()
    finally:
        stop.running = False
    if check.benchmark.stopped:
        return gr.skip(), bench_message(check.benchmark, ""), gr.skip()
    return verdict_html(check), bench_message(check.benchmark, "✔ Forgetting check:"), curated(ctx, run_name)


def curated(ctx: Ctx, run_name):
    import pandas as pd

    try:
        return pd.DataFrame(ctx.studio.judge.curated_benchmarks(run_name))
    except Exception:
        return pd.DataFrame(columns=["task", "what", "size", "time"])


RUN_OUTPUTS = ("bench_verdict", "bench_curated", "bench_msg", "bench_table", "bench_chart")  # what `latest` returns


def latest(ctx: Ctx, run_name):
    """The chosen run's latest forgetting check and benchmark: verdict, curated list, message, table, chart."""
    if not run_name:
        return verdict_html(None), curated(ctx, None), "", table(None), None
    try:
        check = ctx.studio.judge.latest_forgetting(run_name)
        bench = ctx.studio.judge.latest_benchmark(run_name)
    except Exception as exc:
        return (
            verdict_html(None),
            curated(ctx, run_name),
            md_error(exc, "Cannot show the last benchmark"),
            table(None),
            None,
        )
    if bench is None:
        return verdict_html(check), curated(ctx, run_name), "*No benchmark of this run yet.*", table(None), None
    figure = ctx.studio.judge.benchmark_figure(bench) if bench.rows else None
    return verdict_html(check), curated(ctx, run_name), bench_message(bench, "Last benchmark:"), table(bench), figure


def wire(ctx: Ctx) -> None:
    c = ctx.c
    c["bench_start"].click(
        partial(run_tasks, ctx),
        [c["test_run"], c["bench_tasks"], c["bench_files"], c["bench_limit"], c["bench_chat"], c["bench_stop_flag"]],
        [c["bench_msg"], c["bench_table"], c["bench_chart"]],
        api_name="benchmark",
        concurrency_id=GPU,
        concurrency_limit=1,
    )
    c["bench_forget"].click(
        partial(forgetting, ctx),
        [c["test_run"], c["bench_stop_flag"]],
        [c["bench_verdict"], c["bench_msg"], c["bench_curated"]],
        api_name="forgetting_check",
        concurrency_id=GPU,
        concurrency_limit=1,
    )
    c["bench_stop"].click(
        partial(request_stop, what="benchmark"), c["bench_stop_flag"], c["bench_msg"], api_name="stop_benchmark"
    )

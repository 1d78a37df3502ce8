"""A shareable report of one run: configuration, training curves, the latest batch
evaluation, the latest benchmarks and forgetting check, the checkpoint curve, the blind A/B tally and sample rows, as one HTML file (inline CSS and SVG, no
scripts, opens offline) or Markdown. Saved under `<run>/reports/`.

Everything that came from a user or a model is HTML-escaped (answers can hold markup), and
local file paths are reduced to file names, as in the model card: reports get shared.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from finetune.evaluation.ab import load_votes, tally
from finetune.evaluation.batch import Evaluation, latest_evaluation
from finetune.evaluation.benchmark import latest_benchmark
from finetune.evaluation.benchmark_charts import svg_curve
from finetune.evaluation.charts import summary_metrics, svg_bars, svg_lines
from finetune.evaluation.checkpoints import latest_curve
from finetune.evaluation.common import EvaluationError, as_run, stamp, unique_path
from finetune.evaluation.diff import word_diff_html
from finetune.runs import Run

CSS = """
body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f5f5f5}.answer{white-space:pre-wrap;max-width:30em}.muted{color:#777}
ins{background:#d4f8d4;text-decoration:none}del{background:#fbd6d6}
"""


@dataclass
class Section:
    title: str
    rows: list[tuple[str, Any]] = field(default_factory=list)  # key/value table
    header: tuple[str, ...] = ("setting", "value")
    table: list[list[Any]] = field(default_factory=list)  # extra rows for a wider table (header = first row)
    svg: str = ""
    note: str = ""


def _public(value: Any) -> Any:
    """Local paths -> file names (a report may leave this machine)."""
    if isinstance(value, str) and (value.startswith(("/", "~")) or re.match(r"[A-Za-z]:[\\/]", value)):
        return Path(value).name
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# collecting -------------------------------------------------------------------------------
def _run_section(run: Run) -> Section:
    status, cfg = run.status(), run.config()
    rows = [("run", run.name), ("model", _public(cfg.model_name_or_path)), ("method", cfg.method)]
    rows += [("quantization", cfg.quantization), ("state", status.get("state", "unknown"))]
    rows += [
        ("message", status.get("message", "")),
        ("steps", f"{status.get('step', 0)}/{status.get('total_steps', 0)}"),
    ]
    return Section("Run", rows)


def _config_section(run: Run) -> Section:
    return Section("Configuration", [(k, _public(v)) for k, v in run.config().to_dict().items()])


def _data_section(run: Run) -> Section | None:
    summary = run.data_summary()
    rows = [(k, _public(v)) for k, v in summary.items() if isinstance(v, (str, int, float, bool)) or v is None]
    return Section("Data", rows, ("fact", "value")) if rows else None


def _training_section(run: Run) -> Section:
    records = run.metrics()
    rows = []
    for key in ("loss", "eval_loss"):
        values = [(m.get("step"), m[key]) for m in records if isinstance(m.get(key), (int, float))]
        if values:
            rows.append((f"final {key}", f"{values[-1][1]:.4f} (step {values[-1][0]})"))
    note = "" if rows else "No training metrics were logged."
    return Section("Training", rows, ("metric", "value"), svg=svg_lines(records), note=note)


def _evaluation_section(evaluation: Evaluation | None) -> Section:
    if evaluation is None:
        return Section(
            "Batch evaluation", note="No batch evaluation yet (run one from the Evaluate tab or `finetune evaluate`)."
        )
    s = evaluation.summary
    table = [["metric", "base", "fine-tuned"]]
    table += [[m, _fmt(s["base"].get(m)), _fmt(s["finetuned"].get(m))] for m in summary_metrics(s)]
    table += [
        [m, _fmt(s["base"].get(m)), _fmt(s["finetuned"].get(m))] for m in ("perplexity", "mean_tokens", "mean_seconds")
    ]
    rows = [("data", _public(s.get("source", ""))), ("rows", s.get("n")), ("adapter", s.get("adapter"))]
    rows += [("answers differ", s.get("differ")), ("fine-tuned worse than base", s.get("finetuned_worse"))]
    rows += [("fine-tuned better than base", s.get("finetuned_better")), ("compared on", s.get("primary_metric"))]
    if s.get("stopped"):
        rows.append(("stopped early", f"{s.get('n')} of {s.get('requested')} rows"))
    note = " ".join(s.get("notes") or [])
    return Section("Batch evaluation", rows, ("fact", "value"), table=table, svg=svg_bars(s), note=note)


def _ab_section(run: Run) -> Section:
    t = tally(load_votes(run))
    rows = [("fine-tuned wins", t.wins), ("base wins", t.losses), ("ties", t.ties), ("both bad", t.both_bad)]
    rows += [("votes", t.n), ("win rate (wins / decided)", _fmt(t.win_rate))]
    rows += [("95% Wilson interval", f"{_fmt(t.ci_low)} - {_fmt(t.ci_high)}" if t.win_rate is not None else "-")]
    rows += [("score with ties as half a win", _fmt(t.score_with_ties))]
    return Section("Blind A/B votes", rows, ("tally", "value"), note=t.text())


def _samples_section(evaluation: Evaluation | None, n: int) -> Section | None:
    if evaluation is None or n <= 0 or not evaluation.rows:
        return None
    key = "correct" if evaluation.summary.get("label_like") else "rouge_l"
    table = [["prompt", "reference", "base", "fine-tuned", f"{key} base / fine-tuned"]]
    for row in evaluation.rows[:n]:
        scores = f"{_fmt(row.base_scores.get(key))} / {_fmt(row.finetuned_scores.get(key))}"
        table.append([row.prompt, row.reference, row.base, row.finetuned, scores])
    return Section(f"Sample rows (first {len(table) - 1})", table=table)


def _pm(value: Any, stderr: Any) -> str:
    return _fmt(value) + (f" ± {1.96 * stderr:.3g}" if isinstance(stderr, (int, float)) else "")


def _benchmark_sections(run: Run) -> list[Section]:
    """The latest benchmark and forgetting check: both scores, the difference with its 95% interval."""

    out = []
    for kind, title in (("benchmark", "Benchmarks (lm-eval)"), ("forgetting", "Forgetting check (built-in set)")):
        bench = latest_benchmark(run, kind=kind)
        if bench is None:
            continue
        table = [["task", "metric", "base", "fine-tuned", "difference (95%)", "verdict"]]
        for r in bench.rows:
            table.append([r.task, r.metric, _pm(r.base, r.base_stderr), _pm(r.finetuned, r.finetuned_stderr),
                          _pm(r.diff, r.diff_stderr), r.verdict])  # fmt: skip
        rows = [("adapter", bench.adapter), ("questions per task", bench.limit or "all")]
        worse = ", ".join(f"{r.task} {r.metric}" for r in bench.worse) or "none"
        out.append(Section(title, rows, ("fact", "value"), table=table, note=f"Worse beyond noise: {worse}."))
    return out


def _curve_section(run: Run) -> Section | None:
    curve = latest_curve(run)
    if curve is None:
        return None
    table = [
        ["point", "step", *curve.metrics, "eval_loss"],
        ["base", "-", *[curve.base.get(m) for m in curve.metrics], None],
    ]
    table += [[p.name, p.step, *[p.scores.get(m) for m in curve.metrics], p.eval_loss] for p in curve.points]
    best = curve.best()
    note = f"Best by {curve.metric}: {best.name} (step {best.step})." if best else "No point was scored."
    return Section("Checkpoint curve", table=table, svg=svg_curve(curve), note=note)


def collect(run: Run, sample_rows: int = 10) -> list[Section]:
    evaluation = latest_evaluation(run)
    sections = [_run_section(run), _config_section(run), _data_section(run), _training_section(run)]
    sections += [_evaluation_section(evaluation), *_benchmark_sections(run), _curve_section(run), _ab_section(run)]
    sections += [_samples_section(evaluation, sample_rows)]
    return [s for s in sections if s is not None]


# rendering -----------------------------------------------------------------------------
def _html_table(rows: list[list[Any]], header: list[Any], answer_cols: tuple[int, ...] = ()) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            cls = ' class="answer"' if i in answer_cols else ""
            cells.append(f"<td{cls}>{value if isinstance(value, _Html) else escape(_fmt(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


class _Html(str):
    """Already-escaped HTML (the word diff)."""


def render_html(run: Run, sections: list[Section]) -> str:
    parts = [f"<h1>Fine-tuning report: {escape(run.name)}</h1>"]
    for s in sections:
        parts.append(f"<h2>{escape(s.title)}</h2>")
        if s.note:
            parts.append(f'<p class="muted">{escape(s.note)}</p>')
        if s.rows:
            parts.append(_html_table([list(r) for r in s.rows], list(s.header)))
        if s.table and s.title.startswith("Sample rows"):
            rows = [[*r[:3], _Html(word_diff_html(r[2], r[3])), r[4]] for r in s.table[1:]]
            header = [*s.table[0][:3], "fine-tuned (changes from base marked)", s.table[0][4]]
            parts.append(_html_table(rows, header, answer_cols=(0, 1, 2, 3)))
        elif s.table:
            parts.append(_html_table(s.table[1:], s.table[0]))
        if s.svg:
            parts.append(f"<div>{s.svg}</div>")
    title = escape(f"Report: {run.name}")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n"
    )


def _md_cell(value: Any) -> str:
    return escape(_fmt(value)).replace("|", "&#124;").replace("\r", "").replace("\n", "<br>")


def _md_table(rows: list[list[Any]], header: list[Any]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(run: Run, sections: list[Section]) -> str:
    parts = [f"# Fine-tuning report: {_md_cell(run.name)}"]
    for s in sections:
        parts.append(f"## {s.title}")
        if s.note:
            parts.append(_md_cell(s.note))
        if s.rows:
            parts.append(_md_table([list(r) for r in s.rows], list(s.header)))
        if s.table:
            parts.append(_md_table(s.table[1:], s.table[0]))
    return "\n\n".join(parts) + "\n"


def build_report(run: Any, fmt: str = "html", sample_rows: int = 10, out: str | Path | None = None) -> Path:
    """Write the report and return its path (default `<run>/reports/report-<timestamp>.html|md`)."""
    fmt = {"md": "markdown"}.get(str(fmt).lower(), str(fmt).lower())
    if fmt not in ("html", "markdown"):
        raise EvaluationError(f"report format '{fmt}' is not supported: use html or markdown")
    run = as_run(run)
    sections = collect(run, sample_rows)
    text = render_html(run, sections) if fmt == "html" else render_markdown(run, sections)
    suffix = ".html" if fmt == "html" else ".md"
    if out is None:
        folder = run.path / "reports"
        folder.mkdir(parents=True, exist_ok=True)
        path = unique_path(folder, f"report-{stamp()}", suffix)
    else:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path

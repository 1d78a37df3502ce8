"""Data-tab helpers: cached engine calls (a page re-reads the same file for every preview click)
and the HTML/Markdown the Data tab shows. Engine calls: finetune.data (load_records,
token_length_stats, length_stats, render_example), finetune.models.load_tokenizer.
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import re
import shutil
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from finetune.config import RunConfig
from finetune.data import (
    FORMAT_COLUMNS,
    SUPPORTED_EXTENSIONS,
    length_stats,
    load_records,
    render_example,
    token_length_stats,
)
from finetune.demo import SAMPLE_DATASET
from finetune.errors import DataError, FinetuneError
from finetune.paths import check_dataset_path, check_model_path
from ui.state import md_escape

MAP_TARGETS = list(dict.fromkeys(c for spec in FORMAT_COLUMNS.values() for c in spec["required"] + spec["optional"]))
_lock = threading.Lock()
_reports: OrderedDict[tuple, Any] = OrderedDict()
_tokenizers: OrderedDict[tuple, Any] = OrderedDict()
_stats: OrderedDict[tuple, dict] = OrderedDict()


def _remember(cache: OrderedDict, key: tuple, value: Any, size: int = 4) -> Any:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)
    return value


def resolve_source(dataset_path: str) -> str:
    return (dataset_path or "").strip() or str(SAMPLE_DATASET)


def _source_key(source: str) -> tuple:
    path = Path(source)
    try:
        stat = path.stat()
        return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    except OSError:
        return (source,)


def get_report(dataset_path: str, fmt: str, mapping: dict, workspace: Path | None = None):
    """The DatasetReport of a source (cached); with `workspace`, a typed path must be an allowed place."""
    if workspace is not None:
        check_dataset_path(dataset_path or "", workspace)
    source = resolve_source(dataset_path)
    key = (_source_key(source), fmt, json.dumps(mapping, sort_keys=True))
    with _lock:
        if key in _reports:
            _reports.move_to_end(key)
            return _reports[key]
    report = load_records(source, dataset_format=fmt, column_mapping=mapping or None)
    with _lock:
        return _remember(_reports, key, report)


def get_tokenizer(model: str, workspace: Path, trust_remote_code: bool = False):
    from finetune.models import load_tokenizer

    check_model_path(model or "", workspace)  # a local model folder typed into the app: allowed places only
    key = (model.strip(), trust_remote_code, str(workspace))
    with _lock:
        if key in _tokenizers:
            return _tokenizers[key]
    tok = load_tokenizer(
        RunConfig(model_name_or_path=model.strip() or "demo", trust_remote_code=trust_remote_code), workspace
    )
    with _lock:
        return _remember(_tokenizers, key, tok, size=3)


def get_stats(report, tokenizer_key: tuple, tokenizer, max_length: int) -> dict:
    key = (id(report), tokenizer_key)
    with _lock:
        cached = _stats.get(key)
    if cached is None:
        cached = _remember(_stats, key, token_length_stats(report.rows, tokenizer, int(max_length)), size=8)
    return length_stats(cached["lengths"], int(max_length))  # truncation at the current max_length


def parse_mapping(text: str) -> dict:
    if not (text or "").strip():
        return {}
    try:
        import yaml

        value = yaml.safe_load(text)
    except Exception:
        raise DataError('column_mapping is not readable; write it as {"instruction": "question"}') from None
    if not isinstance(value, dict):
        raise DataError('column_mapping must be a mapping like {"instruction": "question"}')
    return {str(k): str(v) for k, v in value.items() if v not in (None, "")}


def copy_upload(path: str | None, workspace: Path) -> str:
    """Copy an uploaded file into <workspace>/uploads (a stable path a run can read later)."""
    if not path:
        return ""
    src = Path(path)
    if src.suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise DataError(f"{src.name}: unsupported file type; upload one of {', '.join(SUPPORTED_EXTENSIONS)}")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:10]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", src.name).lstrip(".") or f"data{src.suffix}"
    dest = workspace / "uploads" / f"{digest}-{safe}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        shutil.copyfile(src, dest)
    return str(dest)


def source_label(dataset_path: str) -> str:
    if not (dataset_path or "").strip():
        return f"the bundled sample dataset ({SAMPLE_DATASET.name})"
    name = Path(dataset_path).name
    return name.split("-", 1)[1] if re.match(r"^[0-9a-f]{10}-", name) else dataset_path


def columns_of(dataset_path: str, workspace: Path | None = None) -> list[str]:
    """Columns of a file whose format could not be detected (for the mapping form)."""
    from finetune.data import peek_columns
    from finetune.errors import FinetuneError

    try:
        if workspace is not None:
            check_dataset_path(dataset_path or "", workspace)
        return peek_columns(resolve_source(dataset_path))
    except FinetuneError:
        return []


# --- rendering -----------------------------------------------------------------------
def chat_messages(chat: list[dict]) -> list[dict]:
    out = []
    for m in chat:
        role, content = m.get("role"), str(m.get("content", ""))
        if role in ("user", "assistant"):
            out.append({"role": role, "content": content})
        elif role == "system":  # shown as a collapsible note: Chatbot has no system bubble
            out.append({"role": "assistant", "content": content, "metadata": {"title": "System prompt"}})
        else:  # plain text rows
            out.append({"role": "assistant", "content": content})
    return out


def segments_html(rendered: dict) -> str:
    legend = (
        '<div class="seg-legend"><span class="seg-trained">trained (carries loss)</span> '
        '<span class="seg-masked">no loss (prompt, template)</span> '
        f"{rendered.get('trained_tokens', '?')} of {rendered.get('num_tokens', '?')} tokens trained</div>"
    )
    if rendered.get("hidden_chars"):
        legend += (
            f'<div class="seg-legend">This example is long: {rendered["hidden_chars"]:,} characters are not shown '
            "(and not counted above); the length statistics measure all of it.</div>"
        )
    spans = []
    for text, trained in rendered.get("segments", []):
        cls = "seg-trained" if trained else "seg-masked"
        spans.append(f'<span class="{cls}">{html.escape(text)}</span>')
    return legend + f'<pre class="seg-text" id="data-template-text">{"".join(spans)}</pre>'


def preview(report, tokenizer, index: int, train_on_prompt: bool) -> tuple[list, str]:
    if report is None or not report.rows:
        return [], ""
    i = max(0, min(int(index or 1) - 1, len(report.rows) - 1))
    if tokenizer is None:
        return [], "<p>Pick a model whose tokenizer can be loaded to see the templated text.</p>"
    try:
        rendered = render_example(report.rows[i], tokenizer, train_on_prompt=bool(train_on_prompt))
    except FinetuneError as exc:
        return [], f'<p class="seg-error">{html.escape(str(exc))}</p>'
    return chat_messages(rendered["chat"]), segments_html(rendered)


def summary_md(dataset_path: str, report) -> str:
    lines = [
        f"**Data:** {md_escape(source_label(dataset_path))}  ",
        f"**{report.kept_rows}** of {report.total_rows} rows usable · **{len(report.skipped)}** skipped · "
        f"shape: {report.shape}",
    ]
    for w in report.warnings:
        lines.append(f"- ⚠ {md_escape(w)}")
    return "\n".join(lines)


def truncation_md(stats: dict, max_length: int) -> str:
    if not stats or not stats.get("count"):
        return ""
    pct = 100 * stats["truncated"] / stats["count"]
    icon = "✔" if stats["truncated"] == 0 else "⚠"
    return (
        f"{icon} **{stats['truncated']} of {stats['count']}** examples are longer than max_length = **{int(max_length)}** "
        f"and would be truncated ({pct:.1f}%).  \n"
        f"Lengths: min {stats['min']}, p50 {stats['p50']:g}, p95 {stats['p95']:g}, p99 {stats['p99']:g}, "
        f"max {stats['max']} · suggested max_length: **{stats['suggested_max_length']}**"
    )


def problems_csv(report, workspace: Path) -> str | None:
    if report is None or not report.skipped:
        return None
    out = workspace / "reports" / f"problems-{hashlib.sha256(report.source.encode()).hexdigest()[:8]}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["row", "where", "reason"])
        for issue in report.skipped:
            writer.writerow([issue.row, issue.where, issue.reason])
    return str(out)


def _row_chat(row: dict) -> list[dict]:
    """A chat view of a normalized row without a tokenizer."""
    if "messages" in row:
        return list(row["messages"])
    if "prompt" in row:
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, list):
            return list(prompt) + list(completion)
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    return [{"role": "text", "content": row.get("text", "")}]

"""`load_records`: read, detect, validate and normalize a dataset, and report every skipped row."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from typing import Any

from finetune.config import DATASET_FORMATS
from finetune.data.formats import (
    FORMAT_COLUMNS,
    PREFERENCE_FORMATS,
    RowProblem,
    apply_mapping,
    detect_format,
    mapped_columns,
    normalize_row,
    resolve_mapping,
)
from finetune.data.preference import normalize_preference
from finetune.data.prompts import is_prompt_row, normalize_prompt_row, reserved_columns, uniform_columns
from finetune.data.raw import RawData, RowIssue
from finetune.data.readers import read_source
from finetune.data.stream import StreamedRows, scan, streamable, usable_rows
from finetune.errors import DataError, shown
from finetune.names import display_name

SUMMARY_REASONS = 5  # reasons quoted when no row at all is usable


def row_shape(row: dict) -> str:
    """conversational, prompt_completion, text, preference, unpaired_preference or prompts: what TRL sees."""
    if is_prompt_row(row):
        return "prompts"
    if "chosen" in row:
        return "preference"
    if "label" in row:
        return "unpaired_preference"
    if "messages" in row:
        return "conversational"
    if "prompt" in row:
        return "conversational" if isinstance(row["prompt"], list) else "prompt_completion"
    return "text"


@dataclass
class DatasetReport:
    source: str
    format: str
    columns: list[str]
    total_rows: int
    rows: list[dict] = field(default_factory=list, repr=False)
    skipped: list[RowIssue] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unit: str = "row"  # "line" for JSON Lines: how `RowIssue.row` counts

    @property
    def shape(self) -> str:
        return row_shape(self.rows[0]) if self.rows else "unknown"

    @property
    def kept_rows(self) -> int:
        return len(self.rows)

    def to_dict(self, max_skipped: int | None = None) -> dict[str, Any]:
        """JSON-able summary without the rows; `max_skipped` caps the skipped list (the count stays exact)."""
        shown = self.skipped if max_skipped is None else self.skipped[:max_skipped]
        return {
            "source": self.source,
            "format": self.format,
            "shape": self.shape,
            "columns": list(self.columns),
            "total_rows": self.total_rows,
            "kept_rows": self.kept_rows,
            "skipped_rows": len(self.skipped),
            "skipped": [{"row": i.row, "where": i.where, "reason": i.reason} for i in shown],
            "skipped_truncated": len(shown) < len(self.skipped),
            "warnings": list(self.warnings),
        }

    def problems_table(self) -> list[dict[str, Any]]:
        """One dict per skipped row (row, where, reason): a table for the UI or a CSV download."""
        return [{"row": i.row, "where": i.where, "reason": i.reason} for i in self.skipped]

    def problems_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["row", "where", "reason"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.problems_table())
        return buffer.getvalue()

    def problems_text(self) -> str:
        head = (
            f"{display_name(self.source)}: {self.format} format, {self.kept_rows} of {self.total_rows} rows usable, "
            f"{len(self.skipped)} skipped"
        )
        lines = [head] + [f"warning: {w}" for w in self.warnings] + [f"{i.where}: {i.reason}" for i in self.skipped]
        return "\n".join(lines) + "\n"


def summarize_issues(issues: list[RowIssue], limit: int = SUMMARY_REASONS) -> str:
    lines = [f"  - {issue}" for issue in issues[:limit]]
    if len(issues) > limit:
        lines.append(f"  ... and {len(issues) - limit} more")
    return "\n".join(lines)


class Normalizer:
    """One raw record -> a normalized row of `fmt` (RowProblem when it cannot be), through the column
    mapping. TRL also accepts prompt/completion as message lists: the first record with a prompt
    decides which kind the file holds."""

    def __init__(self, fmt: str, mapping: dict[str, str], columns: list[str] = ()):
        self.fmt, self.mapping, self.has_answer = fmt, mapping, "answer" in columns
        self.conversational_prompts: bool | None = None

    def __call__(self, record: dict, number: int = 0) -> dict:
        """`number`: the record's row in the file, which a prompts row keeps for its reward functions."""
        record = apply_mapping(record, self.mapping)
        if self.fmt in PREFERENCE_FORMATS:
            return normalize_preference(self.fmt, record)
        if self.fmt == "prompts":
            return normalize_prompt_row(record, number, self.has_answer, set(self.mapping.values()))
        if self.conversational_prompts is None and record.get("prompt") is not None:
            self.conversational_prompts = isinstance(record["prompt"], (list, tuple))
        return normalize_row(self.fmt, record, self.fmt == "prompt_completion" and bool(self.conversational_prompts))


class OneKind:
    """TRL trains a preference file as all conversations or all plain text: the first usable row decides,
    rows of the other kind are skipped with a reason (`__call__` returns it, "" for a row of the kind)."""

    def __init__(self, fmt: str):
        self.active = fmt in PREFERENCE_FORMATS
        self.first: bool | None = None

    def __call__(self, row: dict) -> str:
        if not self.active:
            return ""
        conversation = isinstance(row["prompt"], list)
        if self.first is None:
            self.first = conversation
        if conversation == self.first:
            return ""
        kind = "conversations (message lists)" if self.first else "plain text"
        return f"this row is {'plain text' if self.first else 'conversations'} but the file's first rows are {kind}"


def load_records(
    source: str | os.PathLike, dataset_format: str = "auto", column_mapping: dict | None = None
) -> DatasetReport:
    """Read `source` (a file or Hub id) and normalize every row; bad rows are skipped and listed.

    Raises DataError when the source cannot be used at all or no row is usable (then its
    `report` attribute holds the DatasetReport with every skipped row).
    """
    if dataset_format not in DATASET_FORMATS:
        raise DataError(f"unknown dataset format {shown(dataset_format)}; choose one of {', '.join(DATASET_FORMATS)}")
    streamed = streamable(source)
    if streamed is not None:  # a large JSON Lines file: read line by line, twice, never whole
        found = scan(streamed)
        raw = RawData(str(streamed), "line", issues=found.issues, columns=found.columns)
        raw_total, objects = found.total_rows, found.objects
    else:
        raw = read_source(source)
        raw_total, objects = raw.total_rows, len(raw.records)
    unit = raw.unit
    name = display_name(raw.source)
    if not objects:
        raise DataError(f"{name}: none of the {raw_total} rows can be read:\n{summarize_issues(raw.issues)}")
    mapping = resolve_mapping(raw.columns, column_mapping)
    columns = mapped_columns(raw.columns, mapping)
    fmt = detect_format(columns, dataset_format, tuple(mapping))
    if streamed is not None and fmt == "prompts":
        # prompts rows carry their row number, and their extra columns are made one kind across all rows
        # (uniform_columns): read whole, as GRPO prompt sets are small next to their completions
        raw, streamed = read_source(source), None
        raw_total = raw.total_rows
    normalize, one_kind = Normalizer(fmt, mapping, columns), OneKind(fmt)

    skipped = list(raw.issues)
    if streamed is not None:
        offsets, problems = usable_rows(found, normalize, one_kind)
        rows: Any = StreamedRows(streamed, offsets, normalize)
        skipped += problems
    else:
        rows = []
        for number, record in raw.records:
            try:
                row = normalize(record, number)
            except RowProblem as problem:
                skipped.append(RowIssue(number, str(problem), unit))
                continue
            except RecursionError:
                skipped.append(RowIssue(number, "the row is nested too deeply to read", unit))
                continue
            reason = one_kind(row)
            if reason:
                skipped.append(RowIssue(number, reason, unit))
            else:
                rows.append(row)
    skipped.sort(key=lambda issue: issue.row)

    report = DatasetReport(
        source=raw.source,
        format=fmt,
        columns=list(raw.columns),
        total_rows=raw_total,
        rows=rows,
        skipped=skipped,
        warnings=list(raw.warnings),
        unit=unit,
    )
    if not len(rows):
        error = DataError(f"{name}: none of the {raw_total} rows is usable as {fmt} data:\n{summarize_issues(skipped)}")
        error.report = report  # the full list of problems, for a downloadable report
        raise error
    spec = FORMAT_COLUMNS[fmt]
    used = set(spec["required"] + spec["optional"]) | set(mapping.values())
    if fmt == "prompts":  # every other column reaches the reward functions, but for the names TRL reserves
        _prompt_warnings(report, raw.columns)
        used |= set(raw.columns)
    unused = [c for c in raw.columns if c not in used]
    if unused:
        report.warnings.append(f"columns not used by the {fmt} format: {', '.join(unused)}")
    if skipped:
        report.warnings.append(
            f"skipped {len(skipped)} of {raw_total} rows ({100 * len(skipped) / raw_total:.0f}%); "
            "see the list of problems"
        )
    return report


def _prompt_warnings(report: DatasetReport, columns: list[str]) -> None:
    """Prompts data: columns made text so the rows form one batch, and the reserved names left out."""
    changed = uniform_columns(report.rows)
    if changed:
        report.warnings.append(
            f"columns passed to the reward functions as text (their values mix kinds, or are lists/objects): "
            f"{', '.join(changed)}"
        )
    reserved = reserved_columns(columns)
    if reserved:
        report.warnings.append(
            f"columns not passed to the reward functions (TRL uses these names itself): {', '.join(reserved)}"
        )

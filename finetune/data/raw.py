"""What a reader returns: the raw rows of a source (JSON objects by row number) and the rows it could
not use, shared by the file readers (readers.py) and the Hub reader (hub.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SUPPORTED_EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet")


@dataclass
class RowIssue:
    """A row that was skipped: `row` counts from 1 the way a person counts lines (`unit`) or rows."""

    row: int
    reason: str
    unit: str = "row"

    @property
    def where(self) -> str:
        return f"{self.unit} {self.row}"

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class RawData:
    """What a reader found: JSON objects by row number, rows it could not read, and the columns seen."""

    source: str
    unit: str  # "line" for JSON Lines, "row" otherwise
    records: list[tuple[int, dict]] = field(default_factory=list)
    issues: list[RowIssue] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        return len(self.records) + len(self.issues)

    def add(self, row: int, value: Any, *, check_text: bool = True) -> None:
        """Keep `value` when it is a JSON object whose texts a tokenizer can read, else record why not.
        `check_text=False`: the caller knows no text can hold a lone surrogate (no \\u escape in it)."""
        if not isinstance(value, dict):
            self.issues.append(RowIssue(row, f"is {json_kind(value)}, not an object with named fields", self.unit))
            return
        problem = text_problem(value) if check_text else ""
        if problem:
            self.issues.append(RowIssue(row, problem, self.unit))
        else:
            self.records.append((row, value))

    def collect_columns(self) -> None:
        seen: dict[str, None] = {}
        for _, record in self.records:
            for key in record:
                seen.setdefault(str(key), None)
        self.columns = list(seen)


def json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "a JSON array"
    if isinstance(value, str):
        return "a JSON string"
    if isinstance(value, bool):
        return "a JSON boolean"
    if isinstance(value, (int, float)):
        return "a JSON number"
    if value is None:
        return "JSON null"
    return f"a {type(value).__name__}"


def text_problem(value: Any, _depth: int = 0) -> str:
    """Why the texts of a parsed JSON value cannot be tokenized ("" when they can): JSON's \\ud800-style
    escapes can encode a lone UTF-16 surrogate, which is no character at all (tokenizers refuse it)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            code = ord(value[exc.start])
            return (
                f"holds an invalid character (a lone UTF-16 surrogate \\u{code:04x} at character {exc.start + 1} "
                "of a text): fix or remove it, e.g. by re-saving the file as UTF-8"
            )
        return ""
    if _depth > 200:
        return ""  # the normalizer refuses rows nested this deep anyway
    items = value.items() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for item in items:
        for part in item if isinstance(value, dict) else (item,):
            problem = text_problem(part, _depth + 1)
            if problem:
                return problem
    return ""

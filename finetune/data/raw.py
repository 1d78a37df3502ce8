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

    def add(self, row: int, value: Any) -> None:
        """Keep `value` when it is a JSON object, else record why it is not a usable row."""
        if isinstance(value, dict):
            self.records.append((row, value))
        else:
            self.issues.append(RowIssue(row, f"is {json_kind(value)}, not an object with named fields", self.unit))

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

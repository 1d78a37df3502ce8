"""Large JSON Lines files in bounded memory: read twice, line by line, never whole.

The first pass reads every line (the columns it names, the lines that are not usable JSON objects);
the second normalizes each row and keeps only the byte offset of every usable one (8 bytes a row).
`StreamedRows` then serves rows by index or in order straight from the file, so the Data tab's preview,
`finetune validate` and the token statistics (a seeded sample of a large file) never hold the file, its
text or its parsed rows in memory. Training reads them all, as it must.

Only local .jsonl files of STREAM_MIN_BYTES or more take this path; smaller files, JSON arrays, CSV and
Parquet are read whole (finetune.data.readers), with the same rules and the same messages.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.data.formats import RowProblem
from finetune.data.raw import RowIssue, json_kind, text_problem
from finetune.data.readers import number_problem
from finetune.errors import DataError
from finetune.names import display_name

STREAM_MIN_BYTES = 16 * 2**20
SNIFF_BYTES = 8192


def streamable(source: Any) -> Path | None:
    """The path of a local .jsonl file large enough to stream (and that looks like JSON Lines text),
    else None."""
    try:
        path = Path(str(source).strip()).expanduser()
        if path.suffix.lower() != ".jsonl" or not path.is_file() or path.stat().st_size < STREAM_MIN_BYTES:
            return None
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except (OSError, ValueError):
        return None
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head:
        return None  # UTF-16 or binary: the whole-file reader says so
    return path if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") else None


def _lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(line number from 1, byte offset, the line's bytes) of every line, split on "\\n" only (JSON
    strings may hold U+2028 raw)."""
    offset = 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            yield number, offset, raw
            offset += len(raw)


def _decoded(path: Path, number: int, offset: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig" if offset == 0 else "utf-8")
    except UnicodeDecodeError as exc:  # never guess another encoding: mojibake would train silently
        raise DataError(
            f"{display_name(path)} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {offset + exc.start}, "
            f"line {number}); save it as UTF-8"
        ) from None


def _parse(line: str) -> tuple[Any, str]:
    """(value, "") or (None, why the line is not usable), as the whole-file line reader words it."""
    if "\x00" in line:
        return None, "holds a NUL byte (binary data, not text)"
    try:
        value = json.loads(line)
    except RecursionError:
        return None, "the JSON is nested too deeply to read"
    except json.JSONDecodeError as exc:
        return None, f"bad JSON: {exc.msg} (column {exc.colno})"
    except ValueError as exc:
        return None, number_problem(exc)
    if not isinstance(value, dict):
        return None, f"is {json_kind(value)}, not an object with named fields"
    if "\\u" in line or "\\U" in line:
        problem = text_problem(value)
        if problem:
            return None, problem
    return value, ""


@dataclass
class Scan:
    """What the first pass found: the columns rows name (in order of appearance), unusable lines."""

    path: Path
    columns: list[str] = field(default_factory=list)
    issues: list[RowIssue] = field(default_factory=list)
    total_rows: int = 0
    objects: int = 0


def scan(path: Path) -> Scan:
    """Pass 1: every line read and parsed, nothing kept but columns and problems."""
    found = Scan(path)
    seen: dict[str, None] = {}
    nul_lines = 0
    for number, offset, raw in _lines(path):
        line = _decoded(path, number, offset, raw).strip()
        if not line:
            continue
        found.total_rows += 1
        value, problem = _parse(line)
        if problem:
            nul_lines += "\x00" in line
            found.issues.append(RowIssue(number, problem, "line"))
            continue
        found.objects += 1
        for key in value:
            if key not in seen:
                seen[str(key)] = None
    if nul_lines * 2 >= found.total_rows:
        raise DataError(f"{display_name(path)} is a binary file, not text")
    found.columns = list(seen)
    return found


class StreamedRows(Sequence):
    """The usable rows of a large JSON Lines file, normalized on demand from their byte offsets. Raises
    DataError when the file changed since it was read (its rows would no longer be these)."""

    def __init__(self, path: Path, offsets: array, normalize: Callable[[dict], dict]):
        self.path = path
        self.offsets = offsets
        self._normalize = normalize
        stat = path.stat()
        self._identity = (stat.st_size, stat.st_mtime_ns)

    def __len__(self) -> int:
        return len(self.offsets)

    def _check(self) -> None:
        try:
            stat = self.path.stat()
        except OSError:
            stat = None
        if stat is None or (stat.st_size, stat.st_mtime_ns) != self._identity:
            raise DataError(f"{display_name(self.path)} changed since it was read; read it again")

    def _row(self, fh, offset: int) -> dict:
        fh.seek(offset)
        return self._normalize(json.loads(fh.readline().decode("utf-8-sig" if offset == 0 else "utf-8")))

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.take(range(*index.indices(len(self))))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        self._check()
        with open(self.path, "rb") as fh:
            return self._row(fh, self.offsets[index])

    def take(self, indices) -> list[dict]:
        """The rows at `indices` (any order), read in file order."""
        self._check()
        wanted = sorted(set(indices))
        with open(self.path, "rb") as fh:
            rows = {i: self._row(fh, self.offsets[i]) for i in wanted}
        return [rows[i] for i in indices]

    def __iter__(self) -> Iterator[dict]:
        self._check()
        with open(self.path, "rb") as fh:
            for offset in self.offsets:
                yield self._row(fh, offset)


def usable_rows(
    found: Scan, normalize: Callable[[dict], dict], keep: Callable[[dict], str]
) -> tuple[array, list[RowIssue]]:
    """Pass 2: every object line normalized (`normalize` raises for a row it cannot use; `keep` says why a
    usable row must still be skipped, "" to keep it); returns the offsets of the kept rows and the
    problems of the others."""
    offsets, issues = array("q"), []
    bad = {issue.row for issue in found.issues}
    for number, offset, raw in _lines(found.path):
        if number in bad:
            continue
        line = raw.decode("utf-8-sig" if offset == 0 else "utf-8").strip()
        if not line:
            continue
        try:
            row = normalize(json.loads(line))
        except RowProblem as problem:
            issues.append(RowIssue(number, str(problem), "line"))
            continue
        except RecursionError:
            issues.append(RowIssue(number, "the row is nested too deeply to read", "line"))
            continue
        reason = keep(row)
        if reason:
            issues.append(RowIssue(number, reason, "line"))
        else:
            offsets.append(offset)
    return offsets, issues

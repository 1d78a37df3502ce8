"""Files and Hub ids -> raw rows (dicts), with every unreadable row recorded instead of raised.

Only problems that make the whole source unusable raise DataError (missing file, binary,
wrong encoding, unparseable JSON array...). A bad line in a JSON Lines file is a RowIssue.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from finetune.data.formats import EXPECTED_COLUMNS
from finetune.data.hub import read_hub
from finetune.data.raw import SUPPORTED_EXTENSIONS, RawData, RowIssue
from finetune.errors import DataError
from finetune.names import display_name as shown_name
from finetune.names import is_hub_id, is_local_path

_SNIFF_BYTES = 8192
# Python's csv module refuses fields over 128 KiB by default; long documents are legitimate.
csv.field_size_limit(2**31 - 1)


def looks_like_hub_id(source: str) -> bool:
    """`owner/name` that is not an existing path and does not end like a data file."""
    text = source.strip()
    if is_local_path(text) or not is_hub_id(text, owner=True):
        return False
    return Path(text).suffix.lower() not in SUPPORTED_EXTENSIONS + (".txt", ".tsv", ".xlsx", ".gz", ".zip")


def read_source(source: str | os.PathLike) -> RawData:
    """Read a local file or a Hub dataset id into raw rows."""
    text = str(source).strip()
    if not text:
        raise DataError("no dataset given: choose a .jsonl, .json, .csv or .parquet file")
    if isinstance(source, str) and looks_like_hub_id(text):
        return read_hub(text)
    return read_file(Path(text).expanduser())


def read_file(path: Path) -> RawData:
    if not path.exists():
        raise DataError(f"file not found: {path}")
    if path.is_dir():
        raise DataError(f"{path} is a folder; choose a data file ({', '.join(SUPPORTED_EXTENSIONS)})")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise DataError(
            f"{shown_name(path)}: unsupported file type '{suffix or '(none)'}'; supported: {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not data or data.isspace():
        raise DataError(f"{shown_name(path)} is empty")
    if suffix == ".parquet":
        raw = _read_parquet(path, data)
    else:
        text = _decode_text(path, data)
        raw = _read_csv(path, text) if suffix == ".csv" else _read_json(path, text)
    if raw.total_rows == 0:
        raise DataError(f"{shown_name(path)} holds no rows")
    if not raw.columns:  # JSON rows may each have other keys: the union, in order of appearance
        raw.collect_columns()
    return raw


def _decode_text(path: Path, data: bytes) -> str:
    head = data[:_SNIFF_BYTES]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{shown_name(path)} is UTF-16 text; save it as UTF-8")
    if b"\x00" in head and not _few_nul_lines(path, data):
        raise DataError(f"{shown_name(path)} is a binary file, not text{_binary_hint(head)}")
    try:
        return data.decode("utf-8-sig")  # UTF-8, without the byte-order mark some editors write
    except UnicodeDecodeError as exc:  # never guess another encoding: mojibake would train silently
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{shown_name(path)} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}, line {line}); "
            "save it as UTF-8"
        ) from None


def _few_nul_lines(path: Path, data: bytes) -> bool:
    """JSON Lines where only a minority of lines hold a NUL byte: text with a few damaged lines, which
    the line reader names one by one, rather than a binary file refused whole."""
    if path.suffix.lower() != ".jsonl":
        return False
    lines = [line for line in data.split(b"\n") if line.strip()]
    return sum(1 for line in lines if b"\x00" in line) * 2 < len(lines)


def _binary_hint(head: bytes) -> str:
    if head.startswith(b"PAR1"):
        return " (it is a Parquet file: give it the .parquet extension)"
    if head.startswith(b"PK"):
        return " (it looks like a ZIP or Excel file: export the sheet as CSV)"
    if head.startswith(b"\x1f\x8b"):
        return " (it is gzip-compressed: decompress it first)"
    return ""


def _json_error(exc: json.JSONDecodeError) -> str:
    return f"{exc.msg} (column {exc.colno})"


def number_problem(exc: ValueError) -> str:
    """A row's reason for a number Python refuses to read (json raises a plain ValueError for it)."""
    if "digits" in str(exc):
        return "holds a number with more than 4,300 digits, which cannot be read: write it as text (in quotes)"
    return f"holds a value that cannot be read ({str(exc)[:120]})"


def _long_number_line(text: str) -> int | None:
    """The line of the first number of more than 4,300 digits in `text`, if any."""
    import re

    match = re.search(r"\d{4301,}", text)
    return text.count("\n", 0, match.start()) + 1 if match else None


def _read_json(path: Path, text: str) -> RawData:
    """A JSON array, a single object, or JSON Lines, whatever the extension says."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except RecursionError:
            lines = [line for line in stripped.split("\n")[:3] if line.strip()][:2]
            if len(lines) > 1 and any(_parses(line) for line in lines):
                return _read_json_lines(path, text)  # one deep line among JSON Lines: the line reader says which
            raise DataError(f"{shown_name(path)}: the JSON is nested too deeply to read") from None
        except json.JSONDecodeError as exc:
            first_line = stripped.split("\n", 1)[0]
            if not _parses(first_line):  # not JSON Lines of arrays: a broken array
                raise DataError(
                    f"{shown_name(path)} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
                ) from None
        except ValueError as exc:  # a number of more than 4,300 digits somewhere in the array
            lines = [line for line in stripped.split("\n")[:3] if line.strip()][:2]
            if len(lines) > 1 and any(_parses(line) for line in lines):
                return _read_json_lines(path, text)  # JSON Lines: the line reader names the row
            line = _long_number_line(stripped)
            where = f" at line {line}" if line else ""
            raise DataError(f"{shown_name(path)}{where}: {number_problem(exc)}") from None
        else:
            raw = RawData(str(path), "row")
            if path.suffix.lower() == ".jsonl" and "\n" in stripped:
                raw.warnings.append(f"{shown_name(path)} holds one JSON array, not JSON Lines; read it as an array")
            for index, item in enumerate(value if isinstance(value, list) else [value]):
                raw.add(index + 1, item)
            return raw
    # one object in a .json file, or a pretty-printed object whose first line is not JSON by itself
    if stripped.startswith("{") and (path.suffix.lower() == ".json" or not _parses(stripped.split("\n", 1)[0])):
        whole = _loads_whole(stripped)
        if isinstance(whole, dict):
            return _read_json_object(path, whole)
    return _read_json_lines(path, text)


def _parses(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except (ValueError, RecursionError):  # JSONDecodeError, or a number of more than 4,300 digits
        return False


def _loads_whole(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None  # JSON Lines (or broken): the line reader says which line


def _read_json_object(path: Path, value: dict) -> RawData:
    """One object: either a single row, or a wrapper like {"data": [...]} holding the rows."""
    raw = RawData(str(path), "row")
    lists = [key for key, item in value.items() if isinstance(item, list) and item and isinstance(item[0], dict)]
    if len(value) == 1 and lists and lists[0] not in EXPECTED_COLUMNS:  # {"messages": [...]} is one row
        raw.warnings.append(f"read the rows from the '{lists[0]}' list of {shown_name(path)}")
        for index, item in enumerate(value[lists[0]]):
            raw.add(index + 1, item)
    else:
        raw.add(1, value)
    return raw


def _read_json_lines(path: Path, text: str) -> RawData:
    raw = RawData(str(path), "line")
    # split on "\n" only: str.splitlines() also breaks on U+2028 and friends, which JSON strings may hold raw
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if not line:
            continue
        if "\x00" in line:
            raw.issues.append(RowIssue(number, "holds a NUL byte (binary data, not text)", "line"))
            continue
        try:
            value = json.loads(line)
        except RecursionError:
            raw.issues.append(RowIssue(number, "the JSON is nested too deeply to read", "line"))
            continue
        except json.JSONDecodeError as exc:
            raw.issues.append(RowIssue(number, f"bad JSON: {_json_error(exc)}", "line"))
            continue
        except ValueError as exc:  # an integer of more than 4,300 digits (Python's limit)
            raw.issues.append(RowIssue(number, number_problem(exc), "line"))
            continue
        raw.add(number, value, check_text="\\u" in line or "\\U" in line)
    return raw


def _read_csv(path: Path, text: str) -> RawData:
    raw = RawData(str(path), "row")
    first_line = text.split("\n", 1)[0]
    delimiter = ","
    if "," not in first_line:  # a semicolon- or tab-separated export saved as .csv
        delimiter = next((d for d in (";", "\t", "|") if d in first_line), ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if not header or not any(name.strip() for name in header):
            raise DataError(f"{shown_name(path)}: the first row must name the columns, but it is empty")
        header = [name.strip() for name in header]
        duplicates = sorted({name for name in header if header.count(name) > 1})
        if duplicates:
            raise DataError(f"{shown_name(path)}: column names repeat in the header: {', '.join(duplicates)}")
        number = 0
        for values in reader:
            number += 1  # the data row number a spreadsheet shows under the header
            if not values or (len(values) == 1 and not values[0].strip() and len(header) > 1):
                continue  # a blank line, not a row
            if len(values) != len(header):
                raw.issues.append(
                    RowIssue(number, f"has {_count(len(values), 'value')} but the header names {len(header)} columns")
                )
                continue
            raw.records.append((number, dict(zip(header, values))))
    except csv.Error as exc:
        raise DataError(f"{shown_name(path)} is not valid CSV near line {reader.line_num}: {exc}") from None
    if raw.total_rows == 0:
        raise DataError(f"{shown_name(path)} has a header ({', '.join(header)}) but no data rows")
    raw.columns = header
    return raw


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _read_parquet(path: Path, data: bytes) -> RawData:
    if not (data.startswith(b"PAR1") and data.endswith(b"PAR1")):
        raise DataError(f"{shown_name(path)} is not a valid Parquet file (missing the PAR1 marker)")
    try:
        import pyarrow.parquet as pq

        # one thread: pyarrow's pool still running at interpreter exit aborted `finetune validate`
        # ("terminate called without an active exception", exit 134) after its message was printed
        table = pq.read_table(io.BytesIO(data), use_threads=False)
        rows = table.to_pylist()
    except Exception as exc:  # pyarrow raises many types for corrupt files
        raise DataError(f"{shown_name(path)} is not a readable Parquet file: {exc}") from None
    raw = RawData(str(path), "row")
    for index, row in enumerate(rows):
        raw.add(index + 1, row)
    raw.columns = list(table.column_names)
    return raw

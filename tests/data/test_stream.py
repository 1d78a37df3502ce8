"""Large JSON Lines files are read line by line into the same report the whole-file reader gives, and their
rows served from the file by offset; token statistics of large data measure a seeded sample."""

from __future__ import annotations

import json

import pytest

import finetune.data.stream as stream
from finetune.data import load_records, token_length_stats
from finetune.data.stream import StreamedRows
from finetune.errors import DataError

ROWS = [
    {"messages": [{"role": "user", "content": f"What is {i} + {i}?"}, {"role": "assistant", "content": str(2 * i)}]}
    for i in range(40)
]


def _write(path, lines: list[str | bytes]) -> None:
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))


def _mixed_lines() -> list[str | bytes]:
    lines: list[str | bytes] = [json.dumps(row) for row in ROWS]
    lines[3] = '{"messages": "not a list"}'
    lines[7] = "{broken"
    lines[9] = "null"
    lines[11] = '{"messages": [{"role": "user", "content": "\\ud800 lone"}]}'
    lines[13] = '{"n": ' + "7" * 5000 + "}"
    lines[15] = ""
    lines[17] = '{"messages": [], "extra": 1}'
    return lines


@pytest.fixture
def stream_everything(monkeypatch):
    """Every .jsonl file streams, however small."""
    monkeypatch.setattr(stream, "STREAM_MIN_BYTES", 0)


def test_a_streamed_file_reads_exactly_like_the_whole_file(tmp_path, monkeypatch):
    path = tmp_path / "rows.jsonl"
    _write(path, _mixed_lines())
    whole = load_records(str(path))
    monkeypatch.setattr(stream, "STREAM_MIN_BYTES", 0)
    streamed = load_records(str(path))
    assert isinstance(streamed.rows, StreamedRows) and isinstance(whole.rows, list)
    assert streamed.to_dict() == whole.to_dict()
    assert list(streamed.rows) == whole.rows and len(streamed.rows) == len(whole.rows) == 33
    assert streamed.rows[5] == whole.rows[5] and streamed.rows[-1] == whole.rows[-1]
    assert streamed.rows[2:4] == whole.rows[2:4]
    reasons = {issue.row: issue.reason for issue in streamed.skipped}
    assert "lone UTF-16 surrogate \\ud800" in reasons[12] and "more than 4,300 digits" in reasons[14]
    assert set(reasons) == {4, 8, 10, 12, 14, 18}


def test_a_file_changed_after_it_was_read_is_said_not_misread(tmp_path, stream_everything):
    path = tmp_path / "rows.jsonl"
    _write(path, [json.dumps(row) for row in ROWS])
    report = load_records(str(path))
    _write(path, [json.dumps(row) for row in ROWS[::-1]])
    with pytest.raises(DataError, match="changed since it was read"):
        report.rows[0]


def test_a_streamed_file_with_a_bad_byte_names_its_line_and_offset(tmp_path, stream_everything):
    path = tmp_path / "rows.jsonl"
    _write(path, [json.dumps(ROWS[0]), b'{"text": "caf\xe9"}'])
    size = len(json.dumps(ROWS[0])) + 1
    with pytest.raises(DataError, match=rf"rows.jsonl is not UTF-8 text \(byte 0xe9 at offset {size + 13}, line 2\)"):
        load_records(str(path))


def test_preference_pairs_stream_with_one_kind_per_file(tmp_path, stream_everything):
    path = tmp_path / "pairs.jsonl"
    lines = [json.dumps({"prompt": f"Q{i}", "chosen": "good", "rejected": "bad"}) for i in range(5)]
    lines.append(json.dumps({"prompt": [{"role": "user", "content": "Q"}], "chosen": [], "rejected": []}))
    _write(path, lines)
    report = load_records(str(path))
    assert report.format == "preference" and len(report.rows) == 5 and report.skipped[0].row == 6


def test_large_data_is_measured_on_a_seeded_sample(tmp_path, stream_everything, demo_path):
    from finetune.config import RunConfig
    from finetune.models import load_tokenizer

    path = tmp_path / "rows.jsonl"
    _write(path, [json.dumps(row) for row in ROWS])
    report = load_records(str(path))
    tokenizer = load_tokenizer(RunConfig(), path=str(demo_path))
    full = token_length_stats(report.rows, tokenizer, 64)
    assert full["sampled"] is False and full["count"] == full["rows"] == 40
    sample = token_length_stats(report.rows, tokenizer, 64, sample_size=10)
    assert sample["sampled"] is True and sample["count"] == 10 and sample["rows"] == 40
    assert sample == token_length_stats(report.rows, tokenizer, 64, sample_size=10)  # seeded
    assert set(sample["lengths"]) <= set(full["lengths"])

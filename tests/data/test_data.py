"""finetune.data: reading, detection, validation, normalization, split, token stats and preview."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finetune.config import RunConfig
from finetune.data import (
    FORMAT_COLUMNS,
    SUPPORTED_EXTENSIONS,
    DatasetReport,
    has_generation_markers,
    hub,
    length_stats,
    load_records,
    prepare_data,
    readers,
    render_example,
    split_train_val,
    to_prompt_completion,
    token_length_stats,
)
from finetune.demo import SAMPLE_DATASET, SAMPLES_DIR
from finetune.errors import DataError
from finetune.samples import make_samples

CHAT = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def tokenizer(demo_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_path)


@pytest.fixture
def plain_tokenizer(tokenizer):
    """The demo tokenizer with a chat template that has no {% generation %} markers."""
    tokenizer.chat_template = tokenizer.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    return tokenizer


# --- sample files ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, fmt",
    [
        ("sample_chat.jsonl", "messages"),
        ("sample_alpaca.jsonl", "alpaca"),
        ("sample_sharegpt.json", "sharegpt"),
        ("sample_prompt_completion.csv", "prompt_completion"),
        ("sample_text.parquet", "text"),
    ],
)
def test_sample_files_detect_and_normalize(name, fmt):
    report = load_records(SAMPLES_DIR / name)
    expected = make_samples.rows()
    assert report.format == fmt
    assert report.total_rows == report.kept_rows == len(expected)
    assert report.skipped == [] and report.warnings == []
    if fmt in ("messages", "alpaca", "sharegpt"):
        assert report.rows == expected  # the same conversations, whatever the file format
    elif fmt == "prompt_completion":
        question = expected[0]["messages"][-2]["content"]
        assert report.rows[0] == {
            "prompt": f"Question: {question}\nAnswer:",
            "completion": " " + expected[0]["messages"][-1]["content"],
        }
    else:
        assert report.rows[0]["text"].startswith("Question: ") and "\nAnswer: " in report.rows[0]["text"]
        assert set(report.rows[0]) == {"text"}


def test_sample_dataset_is_the_chat_file():
    assert load_records(str(SAMPLE_DATASET)).shape == "conversational"


# --- detection and normalization ---------------------------------------------------------
def test_messages_keep_only_role_and_content(tmp_path):
    rows = [
        {"id": 7, "messages": [{"role": "User", "content": "Q", "name": "x"}, {"role": "assistant", "content": "A"}]}
    ]
    report = load_records(write_jsonl(tmp_path / "d.jsonl", rows))
    assert report.format == "messages"
    assert report.rows == [{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}]
    assert any("id" in w for w in report.warnings)  # unused columns are mentioned, not silently ignored


def test_sharegpt_accepts_human_gpt_and_user_assistant(tmp_path):
    rows = [
        {
            "conversations": [
                {"from": "system", "value": "S"},
                {"from": "human", "value": "Q"},
                {"from": "gpt", "value": "A"},
            ]
        },
        {"conversations": [{"from": "user", "value": "Q2"}, {"from": "assistant", "value": "A2"}]},
    ]
    report = load_records(write_jsonl(tmp_path / "d.jsonl", rows))
    assert report.format == "sharegpt"
    assert [m["role"] for m in report.rows[0]["messages"]] == ["system", "user", "assistant"]
    assert report.rows[1]["messages"][1] == {"role": "assistant", "content": "A2"}


def test_alpaca_joins_instruction_and_input_and_adds_system(tmp_path):
    rows = [
        {"instruction": "Translate", "input": "chat", "output": "cat", "system": "Be exact."},
        {"instruction": "Say hi", "output": "hi"},
        {"instruction": "Say yo", "input": "  ", "output": "yo"},
    ]
    report = load_records(write_jsonl(tmp_path / "a.jsonl", rows))
    assert report.format == "alpaca"
    assert report.rows[0]["messages"] == [
        {"role": "system", "content": "Be exact."},
        {"role": "user", "content": "Translate\n\nchat"},
        {"role": "assistant", "content": "cat"},
    ]
    assert report.rows[1]["messages"][0] == {"role": "user", "content": "Say hi"}
    assert report.rows[2]["messages"][0]["content"] == "Say yo"


def test_prompt_completion_and_text(tmp_path):
    pc = load_records(write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "2+2=", "completion": "4", "extra": 1}]))
    assert pc.format == "prompt_completion" and pc.shape == "prompt_completion"
    assert pc.rows == [{"prompt": "2+2=", "completion": "4"}]
    text = load_records(write_jsonl(tmp_path / "t.jsonl", [{"text": "hello world"}]))
    assert text.format == "text" and text.rows == [{"text": "hello world"}]


def test_conversational_prompt_completion_becomes_messages(tmp_path):
    rows = to_prompt_completion([{"messages": [{"role": "system", "content": "S"}, *CHAT]}])
    assert rows == [{"prompt": [{"role": "system", "content": "S"}, CHAT[0]], "completion": [CHAT[1]]}]
    report = load_records(write_jsonl(tmp_path / "pc.jsonl", rows))
    assert report.shape == "conversational"
    assert report.rows == [{"messages": [{"role": "system", "content": "S"}, *CHAT]}]


def test_to_prompt_completion_leaves_other_rows():
    rows = [{"prompt": "a", "completion": "b"}, {"text": "t"}]
    assert to_prompt_completion(rows) == rows


@pytest.mark.parametrize(
    "content",
    [
        json.dumps([{"messages": CHAT}, {"messages": CHAT}]),  # JSON array
        json.dumps({"messages": CHAT}) + "\n" + json.dumps({"messages": CHAT}) + "\n",  # JSON Lines in .json
        json.dumps({"data": [{"messages": CHAT}, {"messages": CHAT}]}),  # a wrapper object
    ],
)
def test_json_file_variants(tmp_path, content):
    path = tmp_path / "d.json"
    path.write_text(content, encoding="utf-8")
    report = load_records(path)
    assert report.format == "messages" and report.kept_rows == 2


def test_unicode_line_separators_inside_json_strings(tmp_path):
    path = tmp_path / "sep.jsonl"
    path.write_text(json.dumps({"text": "a\u2028b\x85c"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_records(path).rows == [{"text": "a\u2028b\x85c"}]


def test_utf8_bom_and_json_array_in_jsonl(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "caf\u00e9"}).encode())
    assert load_records(path).rows == [{"text": "caf\u00e9"}]
    path = tmp_path / "array.jsonl"
    path.write_text(json.dumps([{"text": "a"}, {"text": "b"}], indent=1), encoding="utf-8")
    report = load_records(path)
    assert report.kept_rows == 2 and any("JSON array" in w for w in report.warnings)


def test_messages_stored_as_json_text_in_csv(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["messages"], [[json.dumps(CHAT)]])
    assert load_records(path).rows == [{"messages": CHAT}]


# --- explicit format and column mapping ------------------------------------------------------
def test_column_mapping_for_alpaca(tmp_path):
    path = write_csv(tmp_path / "qa.csv", ["question", "answer"], [["What?", "That."]])
    with pytest.raises(DataError) as info:
        load_records(path)
    message = str(info.value)
    assert "question, answer" in message and "column_mapping" in message
    for fmt in FORMAT_COLUMNS:
        assert fmt in message  # says what each format accepts
    report = load_records(path, column_mapping={"instruction": "question", "output": "answer"})
    assert report.format == "alpaca"
    assert report.rows == [
        {"messages": [{"role": "user", "content": "What?"}, {"role": "assistant", "content": "That."}]}
    ]


def test_column_mapping_for_messages(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"dialog": CHAT, "text": "ignored"}])
    report = load_records(path, column_mapping={"messages": "dialog"})
    assert report.format == "messages" and report.rows == [{"messages": CHAT}]


def test_column_mapping_problems(tmp_path):
    path = write_csv(tmp_path / "qa.csv", ["question", "answer"], [["q", "a"]])
    with pytest.raises(DataError, match="no column 'reply'"):
        load_records(path, column_mapping={"output": "reply"})
    with pytest.raises(DataError, match=r'did you mean \{"instruction": "question"\}'):
        load_records(path, column_mapping={"question": "instruction"})
    assert load_records(path, "alpaca", {"instruction": "question", "output": "answer", "input": ""}).kept_rows == 1


def test_explicit_format_overrides_detection(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": CHAT, "text": "plain"}])
    assert load_records(path).format == "messages"
    report = load_records(path, dataset_format="text")
    assert report.format == "text" and report.rows == [{"text": "plain"}]
    with pytest.raises(DataError, match="format 'alpaca' needs the column.*instruction, output"):
        load_records(path, dataset_format="alpaca")
    with pytest.raises(DataError, match="unknown dataset format 'csv'"):
        load_records(path, dataset_format="csv")


# --- files that cannot be used ------------------------------------------------------------------
def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_records(tmp_path / "missing.jsonl")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"unsupported file type '\.txt'.*\.jsonl, \.json, \.csv, \.parquet"):
        load_records(tmp_path / "notes.txt")
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    with pytest.raises(DataError, match="empty.jsonl is empty"):
        load_records(tmp_path / "empty.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b"\x00\x01\x02\xff" * 10)
    with pytest.raises(DataError, match="binary file"):
        load_records(tmp_path / "bin.jsonl")
    with pytest.raises(DataError, match="is a folder"):
        load_records(tmp_path)
    assert SUPPORTED_EXTENSIONS == (".jsonl", ".json", ".csv", ".parquet")


def test_not_utf8_names_byte_and_offset(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"not UTF-8 text \(byte 0xe9 at offset 8, line 2\); save it as UTF-8"):
        load_records(path)


def test_broken_files(tmp_path):
    (tmp_path / "broken.json").write_text('[{"text": "a"},\n {"text": }]')
    with pytest.raises(DataError, match="not valid JSON: Expecting value at line 2"):
        load_records(tmp_path / "broken.json")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DataError, match="Parquet"):
        load_records(tmp_path / "bad.parquet")
    write_csv(tmp_path / "header.csv", ["text"], [])
    with pytest.raises(DataError, match="header .*no data rows"):
        load_records(tmp_path / "header.csv")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="nested too deeply"):
        load_records(tmp_path / "deep.json")
    deep_row = {"text": "ok", "meta": 0}
    pretty = json.dumps([{"text": "a"}, deep_row], indent=1).replace("0", "[" * 50_000 + "]" * 50_000)
    (tmp_path / "deep_pretty.json").write_text(pretty)
    with pytest.raises(DataError, match="nested too deeply"):
        load_records(tmp_path / "deep_pretty.json")


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    with pytest.raises(DataError, match="could not download dataset 'someone/some-data'.*no network.*local file"):
        load_records("someone/some-data")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(DataError, match="no network access"):
        load_records("someone/some-data")


def test_missing_local_path_is_not_a_hub_id(tmp_path):
    assert readers.looks_like_hub_id("owner/name")
    assert not readers.looks_like_hub_id("data/train.jsonl")
    with pytest.raises(DataError, match="file not found"):
        load_records("data/train.jsonl")


# --- rows that are skipped -----------------------------------------------------------------
BAD_ROWS = [
    ("{not json", "line 2: bad JSON: Expecting property name"),
    (json.dumps([1, 2]), "line 3: is a JSON array, not an object"),
    (json.dumps({"messages": [{"role": "user", "content": "Q"}]}), "line 4: no assistant turn"),
    (
        json.dumps({"messages": [CHAT[0], {"role": "assistant", "content": "  "}]}),
        "line 5: message 2 is an empty assistant turn",
    ),
    (
        json.dumps({"messages": [{"role": "bot", "content": "Q"}, CHAT[1]]}),
        "line 6: message 1 has unknown role 'bot'; accepted roles: system, user, assistant",
    ),
    (
        json.dumps({"messages": [CHAT[0], {"role": "assistant", "content": 42}]}),
        "line 7: message 2 (assistant) content is a number (42), not text",
    ),
    (
        json.dumps({"messages": [*CHAT, {"role": "user", "content": "more?"}]}),
        "line 8: the conversation ends with a user turn",
    ),
    (json.dumps({"messages": "hello"}), "line 9: 'messages' must be a list of messages"),
    ("[" * 50_000 + "]" * 50_000, "line 10: the JSON is nested too deeply"),
    (json.dumps({"messages": [{"content": "Q"}, CHAT[1]]}), "line 11: message 1 has no 'role'"),
    (json.dumps({"messages": [CHAT[1]]}), "line 12: the conversation is only an assistant turn"),
]


def test_partially_bad_jsonl_skips_and_lists_every_bad_line(tmp_path):
    lines = [json.dumps({"messages": CHAT})] + [line for line, _ in BAD_ROWS] + ["", json.dumps({"messages": CHAT})]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = load_records(path)
    assert report.total_rows == len(BAD_ROWS) + 2 and report.kept_rows == 2
    assert [issue.row for issue in report.skipped] == list(range(2, 2 + len(BAD_ROWS)))
    for issue, (_, expected) in zip(report.skipped, BAD_ROWS):
        assert str(issue).startswith(expected), (str(issue), expected)
    assert any(f"skipped {len(BAD_ROWS)} of" in w for w in report.warnings)

    summary = report.to_dict()
    json.dumps(summary)
    assert "rows" not in summary and summary["skipped_rows"] == len(BAD_ROWS)
    assert summary["skipped"][0] == {"row": 2, "where": "line 2", "reason": report.skipped[0].reason}
    assert report.to_dict(max_skipped=3)["skipped_truncated"] is True
    table = list(csv.DictReader(io.StringIO(report.problems_csv())))
    assert [int(r["row"]) for r in table] == [i.row for i in report.skipped]
    text = report.problems_text()
    assert "2 of 13 rows usable" in text and "line 6: message 1 has unknown role 'bot'" in text


def test_sharegpt_unknown_from_value(tmp_path):
    rows = [
        {"conversations": [{"from": "robot", "value": "Q"}, {"from": "gpt", "value": "A"}]},
        {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]},
    ]
    report = load_records(write_jsonl(tmp_path / "s.jsonl", rows))
    assert str(report.skipped[0]).startswith(
        "line 1: message 1 has unknown role 'robot'; accepted 'from' values: system, human, gpt"
    )


def test_alpaca_and_csv_row_numbers(tmp_path):
    path = write_csv(
        tmp_path / "a.csv",
        ["instruction", "input", "output"],
        [["Q1", "", "A1"], ["Q2", "", ""], ["Q3", "extra", "A3", "oops"], ["", "x", "A4"]],
    )
    report = load_records(path)
    assert report.kept_rows == 1
    assert [str(i) for i in report.skipped] == [
        "row 2: 'output' is empty",
        "row 3: has 4 values but the header names 3 columns",
        "row 4: 'instruction' is empty",
    ]


def test_parquet_row_numbers(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b", None], "completion": ["x", None, "z"]}), path)
    report = load_records(path)
    assert report.rows == [{"prompt": "a", "completion": "x"}]
    assert [str(i) for i in report.skipped] == [
        "row 2: 'completion' is empty (null)",
        "row 3: 'prompt' is empty (null)",
    ]


def test_json_array_row_numbers(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"text": "ok"}, {"text": 5}, "str"]), encoding="utf-8")
    report = load_records(path)
    assert [str(i) for i in report.skipped] == [
        "row 2: 'text' is a number (5), not text",
        "row 3: is a JSON string, not an object with named fields",
    ]


def test_every_row_bad_summarizes_first_reasons(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"Q{i}"}]} for i in range(8)]
    with pytest.raises(DataError) as info:
        load_records(write_jsonl(tmp_path / "bad.jsonl", rows))
    message = str(info.value)
    assert "none of the 8 rows" in message and "line 1: no assistant turn" in message and "and 3 more" in message
    assert len(info.value.report.skipped) == 8  # the whole list stays available for a download
    (tmp_path / "junk.jsonl").write_text("nope\n{also bad\n")
    with pytest.raises(DataError, match="line 2: bad JSON"):
        load_records(tmp_path / "junk.jsonl")


def test_huge_single_line_is_parsed_once(tmp_path, monkeypatch):
    """Two lines of millions of characters: each parsed once (no re-parse per character or per chunk),
    and a cut line is refused with a short message, not one that quotes it."""
    from finetune.data import readers

    parses = []
    original = readers.json.loads
    monkeypatch.setattr(
        readers.json, "loads", lambda text, *a, **k: parses.append(len(text)) or original(text, *a, **k)
    )
    path = write_jsonl(tmp_path / "big.jsonl", [{"text": "word " * 2_000_000}, {"text": "x" * 3_000_000}])
    report = load_records(path)
    assert report.kept_rows == 2
    assert sum(parses) <= 3 * path.stat().st_size  # a few passes over the file, never one per character
    path.write_text('{"text": "' + "y" * 3_000_000 + "\n", encoding="utf-8")  # unterminated
    parses.clear()
    with pytest.raises(DataError) as info:
        load_records(path)
    assert len(str(info.value)) < 1000 and sum(parses) <= 3 * path.stat().st_size


# --- split -----------------------------------------------------------------------------------------
def test_split_is_seeded_and_sized():
    rows = [{"text": str(i)} for i in range(100)]
    train, val = split_train_val(rows, 0.1, seed=1)
    assert (len(train), len(val)) == (90, 10)
    assert split_train_val(rows, 0.1, seed=1) == (train, val)
    assert split_train_val(rows, 0.1, seed=2)[1] != val
    assert sorted(r["text"] for r in train + val) == sorted(r["text"] for r in rows)
    assert split_train_val(rows, 0.0) == (rows, [])
    assert [len(part) for part in split_train_val(rows[:2], 0.01)] == [1, 1]
    assert [len(part) for part in split_train_val(rows[:1], 0.5)] == [1, 0]


# --- token statistics ----------------------------------------------------------------------------
def test_length_stats_on_known_lengths():
    stats = length_stats(list(range(1, 101)), max_length=90)
    assert (stats["count"], stats["min"], stats["max"], stats["mean"]) == (100, 1, 100, 50.5)
    assert (stats["p50"], stats["p90"], stats["p95"], stats["p99"]) == (50.5, 90.1, 95.0, 99.0)
    assert stats["truncated"] == 10 and stats["suggested_max_length"] == 128
    assert stats["lengths"] == list(range(1, 101))
    assert length_stats([10, 20], 512)["suggested_max_length"] == 64
    assert length_stats([3000] * 5, 512, model_max_length=2048)["suggested_max_length"] == 2048
    assert length_stats([3000] * 5, 512, model_max_length=int(1e30))["suggested_max_length"] == 3008
    assert length_stats([], 512)["count"] == 0


def test_token_length_stats_match_the_trainer_tokenization(tokenizer):
    rows = [{"messages": CHAT}, {"prompt": "2+2=", "completion": "4"}, {"text": "hello world " * 30}]
    stats = token_length_stats(rows, tokenizer, max_length=20)
    chat_ids = tokenizer.apply_chat_template(CHAT, tokenize=True)
    chat_len = len(chat_ids["input_ids"] if hasattr(chat_ids, "keys") else chat_ids)
    eos = tokenizer.eos_token
    assert stats["lengths"] == [
        chat_len,
        len(tokenizer("2+2=4" + eos)["input_ids"]),
        len(tokenizer("hello world " * 30 + eos)["input_ids"]),
    ]
    assert stats["truncated"] == sum(n > 20 for n in stats["lengths"]) >= 1
    assert stats["suggested_max_length"] % 64 == 0


def test_one_huge_row_is_measured_and_previewed_in_bounded_time(tokenizer, monkeypatch):
    """A single 20 MB row: token statistics estimate its length from a prefix (within 1%), the preview
    templates a cut copy; both take well under a second where the full work took minutes."""
    from finetune.data.preview import PREVIEW_CHARS
    from finetune.data.stats import LONG_TEXT_CHARS

    words = "lorem ipsum dolor sit amet " * (20_000_000 // 27)
    row = {"messages": [{"role": "user", "content": "Summarize:"}, {"role": "assistant", "content": words}]}
    tokenized = []  # characters handed to the tokenizer, by any path (plain calls and encode)
    cls = type(tokenizer)
    for method in ("__call__", "encode"):
        original = getattr(cls, method)

        def counting(self, text, *args, _original=original, **kwargs):
            texts = text if isinstance(text, (list, tuple)) else [text]
            tokenized.append(sum(len(t) for t in texts if isinstance(t, str)))
            return _original(self, text, *args, **kwargs)

        monkeypatch.setattr(cls, method, counting)
    stats = token_length_stats([row], tokenizer, max_length=1024)
    view = render_example(row, tokenizer)
    assert 0 < sum(tokenized) <= 2 * (LONG_TEXT_CHARS + PREVIEW_CHARS) + 10_000  # never the 20 MB row itself
    assert view["hidden_chars"] == len(words) - PREVIEW_CHARS
    assert len(view["text"]) < PREVIEW_CHARS + 1000 and "more characters not shown" in view["text"]
    assert "".join(piece for piece, _ in view["segments"]) == view["text"]
    assert any(trained for _, trained in view["segments"])  # the (cut) reply still carries the loss
    # the estimate against an exact count on a text just over the threshold
    medium = {"text": words[: 3 * LONG_TEXT_CHARS]}
    exact = len(tokenizer(medium["text"] + tokenizer.eos_token)["input_ids"])
    estimated = token_length_stats([medium], tokenizer, max_length=1024)["max"]
    assert abs(estimated - exact) <= 0.01 * exact
    assert stats["max"] > 10 * exact / 3  # the 20 MB row is measured as long as it is
    short = render_example({"text": "Just text."}, tokenizer)
    assert short["hidden_chars"] == 0


def test_no_chat_template_is_a_clear_error(tokenizer):
    tokenizer.chat_template = None
    with pytest.raises(DataError, match="no chat template"):
        token_length_stats([{"messages": CHAT}], tokenizer, 64)
    assert token_length_stats([{"text": "fine"}], tokenizer, 64)["count"] == 1


# --- preview -----------------------------------------------------------------------------------
def _trained(segments):
    return "".join(piece for piece, trained in segments if trained)


def _untrained(segments):
    return "".join(piece for piece, trained in segments if not trained)


def test_render_messages_masks_all_assistant_turns(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "First question?"},
        {"role": "assistant", "content": "First answer."},
        {"role": "user", "content": "Second question? \u00e9\u00e8"},
        {"role": "assistant", "content": "Second answer \u00fc."},
    ]
    assert has_generation_markers(tokenizer)
    view = render_example({"messages": messages}, tokenizer)
    assert view["chat"] == messages
    assert "".join(piece for piece, _ in view["segments"]) == view["text"]
    assert view["text"] == tokenizer.apply_chat_template(messages, tokenize=False)
    for message in messages:
        target = _trained(view["segments"]) if message["role"] == "assistant" else _untrained(view["segments"])
        assert message["content"] in target
    assert 0 < view["trained_tokens"] < view["num_tokens"]
    everything = render_example({"messages": messages}, tokenizer, train_on_prompt=True)
    assert everything["segments"] == [(view["text"], True)]


def test_render_without_generation_markers_trains_the_last_reply(plain_tokenizer):
    messages = [*CHAT, {"role": "user", "content": "Again?"}, {"role": "assistant", "content": "Last reply."}]
    assert not has_generation_markers(plain_tokenizer)
    view = render_example({"messages": messages}, plain_tokenizer)
    assert "".join(piece for piece, _ in view["segments"]) == view["text"]
    assert "Last reply." in _trained(view["segments"])
    assert "Hello!" in _untrained(view["segments"]) and "Again?" in _untrained(view["segments"])


def test_render_prompt_completion_and_text(tokenizer):
    view = render_example({"prompt": "Question: 2+2?\nAnswer:", "completion": " 4"}, tokenizer)
    assert [m["role"] for m in view["chat"]] == ["user", "assistant"]
    assert view["text"] == "Question: 2+2?\nAnswer: 4" + tokenizer.eos_token
    assert "".join(piece for piece, _ in view["segments"]) == view["text"]
    assert _untrained(view["segments"]).startswith("Question: 2+2?") and "4" in _trained(view["segments"])
    text = render_example({"text": "Just text."}, tokenizer)
    assert text["chat"] == [{"role": "text", "content": "Just text."}]
    assert text["segments"] == [("Just text." + tokenizer.eos_token, True)]


# --- prepare --------------------------------------------------------------------------------------
def test_prepare_data_defaults_to_the_sample(tokenizer):
    config = RunConfig(val_split=0.1, seed=3, max_length=32)
    prepared = prepare_data(config, tokenizer)
    assert prepared.report.source == str(SAMPLE_DATASET) and prepared.eval_report is None
    assert (len(prepared.train_rows), len(prepared.eval_rows)) == (99, 11)
    assert prepared.stats["count"] == 99 and prepared.stats["truncated"] > 0
    summary = prepared.summary
    json.dumps(summary)
    assert summary["train_rows"] == 99 and summary["val_rows"] == 11 and summary["format"] == "messages"
    assert "lengths" not in summary["stats"] and any("truncated" in w for w in summary["warnings"])
    assert prepare_data(config, None).stats is None


def test_prepare_data_with_eval_file(tmp_path, tokenizer):
    train = write_jsonl(tmp_path / "train.jsonl", [{"messages": CHAT}] * 3 + [{"messages": []}] * 250)
    val = write_jsonl(tmp_path / "val.jsonl", [{"instruction": "Q", "output": "A"}] * 2)
    prepared = prepare_data(RunConfig(dataset_path=str(train), eval_dataset_path=str(val)), tokenizer)
    assert (len(prepared.train_rows), len(prepared.eval_rows)) == (3, 2)
    assert prepared.eval_report.format == "alpaca"
    assert prepared.summary["skipped_rows"] == 250 and len(prepared.summary["skipped"]) == 200
    text_val = write_jsonl(tmp_path / "text.jsonl", [{"text": "t"}])
    with pytest.raises(DataError, match=r"train\.jsonl\) is conversational.*text\.jsonl\) is text"):
        prepare_data(RunConfig(dataset_path=str(train), eval_dataset_path=str(text_val)), tokenizer)


def test_report_is_a_dataclass_with_rows():
    report = DatasetReport(source="x", format="text", columns=["text"], total_rows=1, rows=[{"text": "a"}])
    assert report.shape == "text" and report.kept_rows == 1 and report.to_dict()["skipped"] == []


def test_pretty_printed_object_and_semicolon_csv(tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"messages": CHAT}, indent=2), encoding="utf-8")
    assert load_records(path).rows == [{"messages": CHAT}]
    path = tmp_path / "semi.csv"
    path.write_text("prompt;completion\nA, B;C\n", encoding="utf-8")
    assert load_records(path).rows == [{"prompt": "A, B", "completion": "C"}]


def test_hub_dataset_is_read_when_reachable(monkeypatch):
    import datasets

    def fake_load_dataset(dataset_id):
        if dataset_id == "someone/missing":
            raise datasets.exceptions.DatasetNotFoundError("not found")
        return datasets.DatasetDict({"test": datasets.Dataset.from_list([{"question": "Q", "answer": "A"}])})

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    report = load_records("someone/qa", column_mapping={"prompt": "question", "completion": "answer"})
    assert report.rows == [{"prompt": "Q", "completion": "A"}] and report.unit == "row"
    assert any("no 'train' split" in w for w in report.warnings)
    with pytest.raises(DataError, match="no dataset 'someone/missing' on the Hugging Face Hub"):
        load_records("someone/missing")


def test_token_length_stats_on_a_sample(tokenizer):
    rows = [{"text": "word " * n} for n in range(1, 51)]
    full = token_length_stats(rows, tokenizer, 16)
    assert full["sampled"] is False and full["count"] == 50
    sample = token_length_stats(rows, tokenizer, 16, sample_size=10)
    assert sample["sampled"] is True and sample["count"] == 10
    assert sample == token_length_stats(rows, tokenizer, 16, sample_size=10)
    assert set(sample["lengths"]) <= set(full["lengths"])


@pytest.mark.slow
@pytest.mark.parametrize("sample", ["sample_chat.jsonl", "sample_prompt_completion.csv", "sample_text.parquet"])
def test_stats_and_preview_agree_with_trl(demo_path, tokenizer, tmp_path, sample):
    """Our lengths and loss masks are what SFTTrainer actually builds (loads the demo model)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    rows = load_records(SAMPLES_DIR / sample).rows[:8]
    args = SFTConfig(
        output_dir=str(tmp_path), report_to="none", max_length=1024, use_cpu=True, bf16=False, assistant_only_loss=True
    )
    if "messages" not in rows[0]:
        args.assistant_only_loss = False
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(demo_path),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    built = trainer.train_dataset
    assert token_length_stats(rows, tokenizer, 1024)["lengths"] == [len(ids) for ids in built["input_ids"]]
    for row, labels in zip(rows, built["labels"]):
        assert render_example(row, tokenizer)["trained_tokens"] == sum(label != -100 for label in labels)


# --- encoding and number problems name their row (issue 22) --------------------------------------------
def test_a_lone_surrogate_or_an_over_long_number_names_its_row(tmp_path):
    good = json.dumps({"prompt": "Hi", "completion": "Hello"})
    lines = [
        good,
        '{"prompt": "\\ud800", "completion": "x"}',
        '{"prompt": "n", "completion": ' + "9" * 5000 + "}",
        good,
    ]
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    report = load_records(str(jsonl))
    reasons = {issue.row: issue.reason for issue in report.skipped}
    assert len(report.rows) == 2 and set(reasons) == {2, 3}
    assert "a lone UTF-16 surrogate \\ud800" in reasons[2] and "more than 4,300 digits" in reasons[3]
    array = tmp_path / "rows.json"
    array.write_text("[" + ",\n".join([good, '{"prompt": "\\udfff", "completion": "x"}', good]) + "]")
    (issue,) = load_records(str(array)).skipped
    assert issue.row == 2 and "\\udfff" in issue.reason
    huge = tmp_path / "huge.json"
    huge.write_text("[\n" + good + ",\n" + '{"prompt": "n", "completion": ' + "9" * 5000 + "}\n]")
    with pytest.raises(DataError, match=r"huge.json at line 3: holds a number with more than 4,300 digits"):
        load_records(str(huge))


def test_messages_name_an_upload_by_the_name_its_owner_gave_it(tmp_path):
    stored = tmp_path / "b1559b3b08-explicit_prompt.jsonl"
    stored.write_text("")
    with pytest.raises(DataError) as caught:
        load_records(str(stored))
    assert str(caught.value) == "explicit_prompt.jsonl is empty"

"""Prompts with answers (GRPO data): detected, checked row by row like every format, extra columns kept for
the reward functions, refused for objectives that cannot use it, previewed as generation starts from it."""

from __future__ import annotations

import json

import pytest

from finetune.config import RunConfig
from finetune.data import load_records, prepare_data, render_example, token_length_stats
from finetune.demo import SAMPLE_PROMPTS_DATASET
from finetune.errors import DataError


def write(tmp_path, rows, name="prompts.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_the_bundled_sample_is_prompts_with_answers():
    report = load_records(SAMPLE_PROMPTS_DATASET)
    assert report.format == "prompts" and report.shape == "prompts"
    assert report.kept_rows == 110 and not report.skipped and not report.warnings
    row = report.rows[0]
    assert row["prompt"][-1]["role"] == "user" and row["answer"] and row["task"] in ("capital", "sum", "reverse")
    assert row["source_row"] == 1


def test_rows_are_checked_and_named(tmp_path):
    rows = [
        {"prompt": "What is 2 plus 2?", "answer": 4, "level": 1},
        {"prompt": "", "answer": "x"},
        {"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "answer": "a"},
        {"prompt": "Capital of Peru?", "answer": None},
        {"prompt": "Capital of Chile?", "answer": ["Santiago"]},
        {"prompt": [{"role": "system", "content": "be brief"}], "answer": "a"},
        "not json",
        {"prompt": "Capital of Peru?", "answer": "Lima", "level": "hard", "meta": {"k": 1}},
    ]
    report = load_records(write(tmp_path, rows))
    assert report.format == "prompts" and report.kept_rows == 2
    reasons = {issue.row: issue.reason for issue in report.skipped}
    assert reasons[2] == "'prompt' is empty"
    assert "ends with an assistant turn" in reasons[3]
    assert "'answer' is empty (null)" in reasons[4]
    assert "'answer' is a list, not text or a number" in reasons[5]
    assert "no user turn" in reasons[6]
    assert 7 in reasons
    first, last = report.rows
    assert first["answer"] == "4" and first["source_row"] == 1 and last["source_row"] == 8
    # a column mixing numbers and texts (level), and an object (meta), reach the reward functions as text
    assert first["level"] == "1" and last["level"] == "hard" and json.loads(last["meta"]) == {"k": 1}
    assert any("reward functions as text" in w and w.endswith(": level, meta") for w in report.warnings)


def test_answer_column_mapping_and_reserved_names(tmp_path):
    rows = [{"question": "2+2?", "solution": "4", "completions": "x", "prompt": "p"}]
    path = write(tmp_path, rows)
    report = load_records(path, "prompts", {"prompt": "question", "answer": "solution"})
    (row,) = report.rows
    assert row["prompt"] == "2+2?" and row["answer"] == "4"
    assert "solution" not in row and "question" not in row  # the mapped columns arrive under their new names
    assert "completions" not in row and any("TRL uses these names itself): completions" in w for w in report.warnings)
    # a prompt/completion file read as prompts: its completion is the answer
    pc = write(tmp_path, [{"prompt": "Q: 1+1?", "completion": "2"}], "pc.jsonl")
    assert load_records(pc).format == "prompt_completion"
    assert load_records(pc, "prompts", {"answer": "completion"}).rows[0]["answer"] == "2"


def test_objectives_refuse_data_they_cannot_use(tmp_path):
    with pytest.raises(DataError, match="objective grpo samples completions for prompts and needs prompts data"):
        prepare_data(RunConfig(objective="grpo", dataset_path=str(write(tmp_path, [{"text": "hello"}], "t.jsonl"))))
    with pytest.raises(DataError, match="is prompts data .*objective grpo"):
        prepare_data(RunConfig(dataset_path=str(SAMPLE_PROMPTS_DATASET)))
    data = prepare_data(RunConfig(objective="grpo"))  # the default data of grpo: the bundled prompts
    assert data.report.source.endswith("sample_prompts.jsonl") and len(data.eval_rows) == 11


def test_preview_and_lengths_are_the_prompt_as_generation_starts(demo_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_path)
    row = load_records(SAMPLE_PROMPTS_DATASET).rows[1]
    rendered = render_example(row, tokenizer)
    info = rendered["prompt_row"]
    assert info["prompt_text"].endswith("<|im_start|>assistant\n") and info["answer"] == row["answer"]
    assert info["columns"] == {"task": row["task"]} and rendered["trained_tokens"] == 0
    ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, return_dict=True)["input_ids"]
    assert rendered["num_tokens"] == len(ids)
    stats = token_length_stats([row], tokenizer, 256)
    assert stats["lengths"] == [len(ids)]

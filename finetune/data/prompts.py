"""Prompts with answers (GRPO): reading one row, checking it, the row's shape, and how the Data tab shows it.

A normalized prompt row is what TRL's GRPOTrainer samples completions for:
  {"prompt": str | [messages], "answer": str (when the file has an answer column), <other columns>, "source_row": N}
Every other column of the file is kept and reaches the reward functions as a keyword argument (values that
are lists or objects as JSON text, a column mixing kinds of values as text, so a batch can be built);
`source_row` is the row's number in the file (as the problem list counts), for messages naming a row.
"""

from __future__ import annotations

import json
from typing import Any

from finetune.data.formats import RowProblem, kind_of, parse_messages
from finetune.data.templates import chat_ids
from finetune.errors import shown

PROMPT, ANSWER, SOURCE_ROW = "prompt", "answer", "source_row"
# names TRL's GRPOTrainer gives meanings of its own (reward-function arguments, multimodal inputs)
RESERVED = ("completion", "completions", "completion_ids", "prompts", "trainer_state", "log_extra", "log_metric")
RESERVED += ("environments", "image", "images", "video", "videos", SOURCE_ROW)


def is_prompt_row(row: dict) -> bool:
    """A normalized prompts row (only they carry `source_row`)."""
    return SOURCE_ROW in row and PROMPT in row


def _prompt(value: Any) -> str | list[dict]:
    if isinstance(value, str) and not value.lstrip().startswith("[{"):
        if not value.strip():
            raise RowProblem("'prompt' is empty")
        return value
    if value is None:
        raise RowProblem("'prompt' is missing")
    if not isinstance(value, (str, list, tuple)):
        raise RowProblem(f"'prompt' is {kind_of(value)}, not text or a list of messages")
    messages = parse_messages(value, PROMPT)
    if messages[-1]["role"] == "assistant":
        raise RowProblem("'prompt' ends with an assistant turn; GRPO samples the assistant's answer itself")
    if not any(m["role"] == "user" and m["content"].strip() for m in messages):
        raise RowProblem("'prompt' has no user turn with text")
    return messages


def _answer(value: Any) -> str:
    if value is None:
        raise RowProblem("'answer' is empty (null); the answer rewards compare completions with it")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RowProblem(f"'answer' is {kind_of(value)}, not text or a number")
    text = str(value)
    if not text.strip():
        raise RowProblem("'answer' is empty; the answer rewards compare completions with it")
    return text


def normalize_prompt_row(record: dict, number: int, has_answer: bool, mapped_from: set[str] = frozenset()) -> dict:
    """One record of the `prompts` format (already mapped) -> a normalized prompt row, or RowProblem.
    `mapped_from`: the file's columns that column_mapping renamed (kept under their new name only)."""
    row: dict[str, Any] = {PROMPT: _prompt(record.get(PROMPT))}
    if has_answer:
        row[ANSWER] = _answer(record.get(ANSWER))
    for key, value in record.items():
        if key not in (PROMPT, ANSWER) and key not in RESERVED and key not in mapped_from and isinstance(key, str):
            row[key] = value
    row[SOURCE_ROW] = number
    return row


def reserved_columns(columns: list[str]) -> list[str]:
    """The file's columns that do not reach the reward functions (TRL gives those names a meaning)."""
    return [c for c in columns if c in RESERVED]


def uniform_columns(rows: list[dict]) -> list[str]:
    """Make each extra column one kind of value (in place), so the rows form a dataset: lists and objects
    become JSON text, a column mixing texts, numbers and booleans becomes text. Returns the changed columns."""
    changed = []
    extras = dict.fromkeys(k for row in rows for k in row if k not in (PROMPT, ANSWER, SOURCE_ROW))
    for key in extras:
        kinds = {type(row[key]) for row in rows if row.get(key) is not None}
        nested = kinds & {list, tuple, dict}
        if len(kinds) <= 1 and not nested or kinds <= {int, float}:
            continue
        for row in rows:
            value = row.get(key)
            if value is not None and not isinstance(value, str):
                row[key] = (
                    json.dumps(value, ensure_ascii=False) if isinstance(value, (list, tuple, dict)) else str(value)
                )
        changed.append(key)
    return changed


def prompt_text_of(row: dict) -> str:
    """The prompt for display: the text, or the last user turn."""
    prompt = row[PROMPT]
    if isinstance(prompt, list):
        return next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
    return prompt


def render_prompt_row(row: dict, tokenizer: Any) -> dict[str, Any]:
    """A prompt row as GRPO sees it: the prompt exactly as generation starts from it (chat template with the
    assistant's opening for messages, plain text otherwise), its tokens, the answer and the other columns.
    Nothing of the row is trained on: the completions are sampled during training."""

    prompt = row[PROMPT]
    if isinstance(prompt, list):
        ids = chat_ids(tokenizer, list(prompt), add_generation_prompt=True)["input_ids"]
        chat = [{"role": m["role"], "content": m["content"]} for m in prompt]
    else:
        ids = list(tokenizer(prompt)["input_ids"])
        chat = [{"role": "user", "content": prompt}]
    text = tokenizer.decode(ids)
    columns = {k: v for k, v in row.items() if k not in (PROMPT, ANSWER, SOURCE_ROW)}
    return {
        "chat": chat,
        "text": text,
        "segments": [(text, False)],
        "num_tokens": len(ids),
        "trained_tokens": 0,
        "hidden_chars": 0,
        "prompt_row": {
            "prompt_text": text,
            "prompt_tokens": len(ids),
            "answer": row.get(ANSWER),
            "columns": columns,
            "source_row": row.get(SOURCE_ROW),
        },
    }


def prompt_lengths(rows: list[dict], tokenizer: Any) -> list[int]:
    """Tokens of each prompt as generation starts from it (the completions come on top, up to max_completion_length)."""

    lengths = []
    for row in rows:
        prompt = row[PROMPT]
        if isinstance(prompt, list):
            lengths.append(len(chat_ids(tokenizer, list(prompt), add_generation_prompt=True)["input_ids"]))
        else:
            lengths.append(len(tokenizer(prompt[:400_000])["input_ids"]))
    return lengths


def describe_row_problem(row: dict) -> str:
    return f"row {row.get(SOURCE_ROW, '?')} (prompt {shown(prompt_text_of(row), 60)})"

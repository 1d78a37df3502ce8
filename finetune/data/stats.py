"""Token-length statistics of normalized rows, measured the way the trainer tokenizes them."""

from __future__ import annotations

import math
import random
from typing import Any

from finetune.data.preference import answers_of, is_preference_row
from finetune.data.prompts import is_prompt_row, prompt_lengths
from finetune.data.templates import conversation_of, plain_text, render_chat, with_eos
from finetune.errors import DataError

_BATCH = 512
LENGTH_MULTIPLE = 64
_SANE_MODEL_MAX = 1_000_000  # tokenizers without a limit report ~1e30
# a text longer than this is measured on its first LONG_TEXT_CHARS characters and scaled up: it is far
# over any max_length anyway, and tokenizing hundreds of MB of one row would hold a thread for minutes
LONG_TEXT_CHARS = 400_000


def token_lengths(rows: list[dict], tokenizer: Any) -> list[int]:
    """Tokens per row: chat template for conversations, plain text (+EOS) otherwise; a GRPO prompt row: its prompt."""
    if rows and is_prompt_row(rows[0]):
        return prompt_lengths(rows, tokenizer)
    if rows and is_preference_row(rows[0]):
        return preference_lengths(rows, tokenizer)
    texts: list[str] = []
    plain: list[bool] = []
    for number, row in enumerate(rows, start=1):
        messages = conversation_of(row)
        try:
            if messages is not None:
                texts.append(render_chat(tokenizer, messages))
                plain.append(False)
            else:
                texts.append(plain_text(row, tokenizer)[1])
                plain.append(True)
        except DataError as exc:
            raise DataError(f"example {number}: {exc}") from None
    lengths = [0] * len(texts)
    # apply_chat_template tokenizes its text without special tokens; TRL tokenizes plain text with them
    for add_special in (False, True):
        indices = [i for i, is_plain in enumerate(plain) if is_plain == add_special]
        for start in range(0, len(indices), _BATCH):
            chunk = indices[start : start + _BATCH]
            encoded = tokenizer([texts[i][:LONG_TEXT_CHARS] for i in chunk], add_special_tokens=add_special)
            for i, ids in zip(chunk, encoded["input_ids"]):
                scale = len(texts[i]) / LONG_TEXT_CHARS if len(texts[i]) > LONG_TEXT_CHARS else 1.0
                lengths[i] = math.ceil(len(ids) * scale)  # an estimate for the rare very long text
    return lengths


def preference_lengths(rows: list[dict], tokenizer: Any) -> list[int]:
    """Tokens per preference row as the trainer sees its longest sequence: prompt + the longer answer
    (chat template for conversations, plain text + EOS otherwise)."""
    texts: list[str] = []
    owners: list[int] = []
    plain = not isinstance(rows[0]["prompt"], list)
    for number, row in enumerate(rows, start=1):
        for answer in answers_of(row):
            try:
                if plain:
                    texts.append(with_eos(tokenizer, row["prompt"] + answer))
                else:
                    texts.append(render_chat(tokenizer, list(row["prompt"]) + list(answer)))
            except DataError as exc:
                raise DataError(f"example {number}: {exc}") from None
            owners.append(number - 1)
    lengths = [0] * len(rows)
    for start in range(0, len(texts), _BATCH):
        chunk = [text[:LONG_TEXT_CHARS] for text in texts[start : start + _BATCH]]
        encoded = tokenizer(chunk, add_special_tokens=plain)["input_ids"]
        for offset, ids in enumerate(encoded):
            i = start + offset
            scale = len(texts[i]) / LONG_TEXT_CHARS if len(texts[i]) > LONG_TEXT_CHARS else 1.0
            owner = owners[i]
            lengths[owner] = max(lengths[owner], math.ceil(len(ids) * scale))
    return lengths


def _percentile(ordered: list[int], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if len(ordered) == 1:
        return float(ordered[0])
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def suggest_max_length(p95: float, model_max_length: Any = None) -> int:
    """p95 rounded up to a multiple of 64 (at least 64), capped by a sane model limit."""
    suggestion = max(LENGTH_MULTIPLE, math.ceil(p95 / LENGTH_MULTIPLE) * LENGTH_MULTIPLE)
    if isinstance(model_max_length, (int, float)) and 0 < model_max_length < _SANE_MODEL_MAX:
        suggestion = min(suggestion, int(model_max_length))
    return suggestion


def length_stats(lengths: list[int], max_length: int, model_max_length: Any = None) -> dict[str, Any]:
    """Summary of known lengths: count, min, mean, percentiles, max, truncated, suggestion, lengths."""
    if not lengths:
        return {
            "count": 0,
            "min": 0,
            "mean": 0.0,
            "p50": 0.0,
            "p90": 0.0,
            "p95": 0.0,
            "p99": 0.0,
            "max": 0,
            "truncated": 0,
            "max_length": max_length,
            "suggested_max_length": suggest_max_length(0, model_max_length),
            "lengths": [],
        }
    ordered = sorted(lengths)
    p95 = _percentile(ordered, 95)
    return {
        "count": len(ordered),
        "min": ordered[0],
        "mean": round(sum(ordered) / len(ordered), 1),
        "p50": round(_percentile(ordered, 50), 1),
        "p90": round(_percentile(ordered, 90), 1),
        "p95": round(p95, 1),
        "p99": round(_percentile(ordered, 99), 1),
        "max": ordered[-1],
        "truncated": sum(1 for n in ordered if n > max_length),
        "max_length": max_length,
        "suggested_max_length": suggest_max_length(p95, model_max_length),
        "lengths": list(lengths),
    }


MAX_MEASURED_ROWS = 50_000  # beyond this many rows the statistics measure a seeded random sample of them


def token_length_stats(
    rows: list[dict], tokenizer: Any, max_length: int, sample_size: int | None = MAX_MEASURED_ROWS, seed: int = 0
) -> dict[str, Any]:
    """Token-length statistics of `rows`; `truncated` counts examples longer than `max_length`.

    Only `sample_size` rows (a seeded random sample, in file order) are measured when there are more:
    `sampled` then says so, `count` and `truncated` refer to the sample and `rows` is how many there are.
    `rows` may be a list or finetune.data.stream.StreamedRows (read from its file, sample only).
    """
    total = len(rows)
    sampled = sample_size is not None and total > sample_size
    if sampled:
        picked = sorted(random.Random(seed).sample(range(total), sample_size))
        rows = rows.take(picked) if hasattr(rows, "take") else [rows[i] for i in picked]
    stats = length_stats(token_lengths(rows, tokenizer), max_length, getattr(tokenizer, "model_max_length", None))
    stats["sampled"] = sampled
    stats["rows"] = total
    return stats

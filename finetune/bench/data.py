"""A deterministic variable-length chat dataset for the benchmark.

Rows are conversations built from the bundled sample chat (`finetune/samples/sample_chat.jsonl`):
user/assistant exchanges are appended until the chat-templated length reaches a target drawn
uniformly from [min_tokens, max_tokens] (the same seed and tokenizer give the same rows).
Uniform lengths are the conservative choice: real chat data is usually more skewed towards
short rows, which wastes even more of a batch padded to max_length.
"""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path
from typing import Any

from finetune.demo import SAMPLE_DATASET


def _exchanges() -> list[list[dict[str, str]]]:
    """(user, assistant) message pairs from the bundled sample chat, in file order."""
    pairs = []
    for line in Path(SAMPLE_DATASET).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        messages = [m for m in json.loads(line)["messages"] if m["role"] != "system"]
        for i in range(0, len(messages) - 1, 2):
            if messages[i]["role"] == "user" and messages[i + 1]["role"] == "assistant":
                pairs.append([messages[i], messages[i + 1]])
    return pairs


def _chat_len(tokenizer: Any, messages: list[dict]) -> int:
    return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


def make_rows(
    tokenizer: Any, n_rows: int = 400, min_tokens: int = 20, max_tokens: int = 500, seed: int = 0
) -> list[dict]:
    """`n_rows` conversations of about min_tokens..max_tokens tokens (chat template applied)."""
    if not 0 < min_tokens <= max_tokens:
        raise ValueError(f"need 0 < min_tokens <= max_tokens, got {min_tokens}..{max_tokens}")
    pairs = _exchanges()
    sizes = [_chat_len(tokenizer, pair) for pair in pairs]  # chat templates like ChatML add up per turn
    rng = random.Random(seed)
    rows = []
    for _ in range(n_rows):
        target = rng.randint(min_tokens, max_tokens)
        messages: list[dict] = []
        total = 0
        while True:
            i = rng.randrange(len(pairs))
            if messages and total + sizes[i] > target:
                break
            messages += pairs[i]
            total += sizes[i]
        rows.append({"messages": messages})
    return rows


def write_rows(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def length_stats(rows: list[dict], tokenizer: Any) -> dict[str, float]:
    """min/mean/median/max tokens per row with the chat template applied."""
    lengths = sorted(_chat_len(tokenizer, row["messages"]) for row in rows)
    return {
        "rows": len(lengths),
        "min": lengths[0],
        "mean": round(statistics.fmean(lengths), 1),
        "median": statistics.median(lengths),
        "max": lengths[-1],
    }


def make_pairs(rows: list[dict]) -> list[dict]:
    """Generated chat rows as DPO pairs: the reply chosen, the same words in reverse order rejected (the same
    length, so the two sequences of a pair cost the same)."""
    pairs = []
    for row in rows:
        messages = row["messages"]
        reply = messages[-1]["content"]
        rejected = " ".join(reversed(reply.split())) or "no"
        if rejected == reply:
            rejected = reply + " no"
        pairs.append(
            {
                "prompt": messages[:-1],
                "chosen": [{"role": "assistant", "content": reply}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
        )
    return pairs

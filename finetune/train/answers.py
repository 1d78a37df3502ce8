"""Reading a completion for the ready reward functions: its text, its final answer, its last number, its
JSON; and the one-completion scores of exact_answer, contains_answer, number_match, format_regex, length
and json_valid (finetune.train.rewards makes them the batch callables TRL calls).

Answers are compared normalized (SQuAD's rule in finetune.data.answer_text: case, punctuation, articles,
spaces), after reasoning blocks (`<think>...</think>`) are removed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from finetune.data.answer_text import normalize_answer, strip_think
from finetune.errors import shown

_BOXED = re.compile(r"\\boxed\s*\{")
_ANSWER_LINE = re.compile(r"(?:final\s+answer|answer)\s*[:：]\s*(.*)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n")
_IS_SPLIT = re.compile(r"\s(?:is|are|was|equals|=)\s|\s=|=\s", re.IGNORECASE)
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?%?|[-+]?\.\d+%?")
_JSON_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.IGNORECASE | re.DOTALL)


def completion_text(completion: Any) -> str:
    """A completion as TRL passes it (a text, or a list of messages for chat prompts) -> its text."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return "" if completion is None else str(completion)


def _last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...}, braces balanced (\\boxed{\\frac{1}{2}})."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    depth, start = 1, starts[-1]
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    return text[start:]


def final_answer(text: str) -> tuple[str, bool]:
    """(the completion's final answer, whether it was marked by \\boxed{} or an Answer: line)."""
    text = strip_think(text)
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip(), True
    lines = [m.group(1) for m in _ANSWER_LINE.finditer(text)]
    if lines:
        last = lines[-1].strip()
        if not last:  # "Answer:" on its own line: the answer is the next line
            tail = text[text.lower().rfind("answer") :].split("\n", 2)
            last = tail[1].strip() if len(tail) > 1 else ""
        return last, True
    first = next((part for part in _SENTENCE_END.split(text.strip()) if part.strip()), "")
    parts = _IS_SPLIT.split(first)
    return (parts[-1] if len(parts) > 1 else first).strip(), False


def _normal(text: str) -> str:
    return normalize_answer(text)


def _contains_words(haystack: str, needle: str) -> bool:
    return bool(needle) and f" {needle} " in f" {haystack} "


def parse_number(text: str) -> float | None:
    """The last number in `text` (1,234 and 50% read as 1234 and 50), or None."""
    found = _NUMBER.findall(text or "")
    if not found:
        return None
    token = found[-1].replace(",", "").rstrip("%")
    try:
        return float(token)
    except ValueError:
        return None


def parse_json(text: str) -> Any:
    fenced = _JSON_FENCE.search(text)
    candidates = [fenced.group(1)] if fenced else []
    candidates.append(text)
    for candidate in candidates:
        try:
            return json.loads(candidate.strip())
        except (ValueError, RecursionError):
            continue
    raise ValueError("not JSON")


# --- the ready functions, one completion each ----------------------------------------------------------------
def exact_answer(text: str, answer: Any) -> float:
    return float(bool(_normal(str(answer))) and _normal(final_answer(text)[0]) == _normal(str(answer)))


def contains_answer(text: str, answer: Any) -> float:
    final, marked = final_answer(text)
    return float(_contains_words(_normal(final if marked else text), _normal(str(answer))))


def number_match(text: str, answer: Any, tolerance: float) -> float:
    expected = (
        answer if isinstance(answer, (int, float)) and not isinstance(answer, bool) else parse_number(str(answer))
    )
    if expected is None:
        raise ValueError(f"the answer {shown(str(answer))} holds no number")
    got = parse_number(final_answer(text)[0]) if final_answer(text)[1] else parse_number(text)
    return float(got is not None and abs(got - float(expected)) <= tolerance + 1e-12)


def format_match(text: str, pattern: re.Pattern) -> float:
    return float(pattern.search(text) is not None)


def length_closeness(tokens: int, target: int) -> float:
    return max(0.0, 1.0 - abs(tokens - target) / target)


def json_score(text: str, keys: list[str]) -> float:
    try:
        value = parse_json(strip_think(text))
    except ValueError:
        return 0.0
    if not keys:
        return 1.0
    if not isinstance(value, dict):
        return 0.0
    return sum(key in value for key in keys) / len(keys)


def json_keys(spec: str) -> list[str]:
    return [k.strip() for k in re.split(r"[,\s]+", spec or "") if k.strip()]

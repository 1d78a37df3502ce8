"""How an answer is read before it is compared: reasoning blocks removed (`strip_think`) and SQuAD's
normalization (`normalize_answer`). The one rule for the batch metrics (finetune.evaluation.metrics) and
the answer rewards of GRPO (finetune.train.answers)."""

from __future__ import annotations

import re
import string

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_THINK_OPEN = re.compile(r"^\s*<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def strip_think(text: str) -> str:
    """The answer without reasoning: drops `<think>...</think>` blocks, everything before a
    stray `</think>` (templates that open the block in the prompt, e.g. DeepSeek-R1), and an
    unclosed `<think>` at the start together with everything after it (reasoning cut off by
    max_new_tokens: there is no answer yet, so it scores as empty)."""
    text = _THINK_BLOCK.sub("", text or "")
    if _THINK_OPEN.match(text):
        return ""
    close = _THINK_CLOSE.search(text)
    if close:
        text = text[close.end() :]
    return text.strip()


def normalize_answer(text: str) -> str:
    """SQuAD normalization: lowercase, punctuation to spaces, no articles, single spaces."""
    text = (text or "").lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())

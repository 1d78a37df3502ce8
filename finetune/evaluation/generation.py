"""Decoding settings shared by both sides of a comparison, and what a generation returns."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from finetune.errors import ConfigError, shown

MAX_SEED = 2**32 - 1  # what numpy and torch accept as a seed


@dataclass
class GenerationSettings:
    """Decoding settings shared by both sides of a comparison (temperature 0 = greedy)."""

    system_prompt: str = ""
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int = 0
    repetition_penalty: float = 1.0

    def validate(self) -> list[str]:
        """Every problem at once, as `name: reason` lines."""
        p: list[str] = []
        if not _finite(self.temperature) or not 0 <= self.temperature <= 5:
            p.append(f"temperature: must be between 0 (greedy) and 5, got {self.temperature}")
        if not _finite(self.top_p) or not 0 < self.top_p <= 1:
            p.append(f"top_p: must be in (0, 1], got {self.top_p}")
        if not _is_int(self.max_new_tokens) or not 1 <= self.max_new_tokens <= 8192:
            p.append(f"max_new_tokens: must be a whole number from 1 to 8192, got {self.max_new_tokens}")
        if not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED:
            p.append(f"seed: must be a whole number from 0 to {MAX_SEED:,}, got {shown(self.seed)}")
        if not _finite(self.repetition_penalty) or not 0 < self.repetition_penalty <= 10:
            p.append(f"repetition_penalty: must be in (0, 10] (1 = off), got {self.repetition_penalty}")
        if not isinstance(self.system_prompt, str):
            p.append("system_prompt: must be text")
        return p

    def check(self) -> GenerationSettings:
        problems = self.validate()
        if problems:
            raise ConfigError(problems)
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generate_kwargs(self) -> dict[str, Any]:
        """`model.generate` kwargs. Greedy clears sampling knobs so a model's own defaults
        (e.g. Qwen's temperature 0.7) cannot leak in or warn."""
        kw: dict[str, Any] = {
            "max_new_tokens": int(self.max_new_tokens),
            "repetition_penalty": float(self.repetition_penalty),
            "do_sample": not self.greedy,
        }
        if self.greedy:
            kw.update(temperature=None, top_p=None, top_k=None)
        else:
            kw.update(temperature=float(self.temperature), top_p=float(self.top_p))
        return kw


@dataclass
class Generation:
    """One answer: text of the generated tokens only (never the prompt)."""

    text: str
    tokens: int
    seconds: float

    def __str__(self) -> str:
        return self.text


class StreamedText(str):
    """The answer so far, as `Comparer.stream` yields it. `tokens` is the number of tokens the
    model generated (special tokens such as the end of turn included, as in `Generation.tokens`):
    None while streaming, set on the last item, which repeats the final text once generation ended."""

    tokens: int | None = None

    def __new__(cls, text: str, tokens: int | None = None) -> StreamedText:
        obj = super().__new__(cls, text)
        obj.tokens = tokens
        return obj


@dataclass
class CompareResult:
    base: str
    finetuned: str
    base_tokens: int
    finetuned_tokens: int
    base_seconds: float
    finetuned_seconds: float


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    """Whole numbers, including 128.0 as UI number widgets send them."""
    return _finite(x) and float(x).is_integer()

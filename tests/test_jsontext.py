"""Strict JSON out: NaN and infinities become null, so every JSON reader takes what the CLI prints."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from finetune.jsontext import dumps, strict


@dataclass
class _Row:
    loss: float
    where: Path


def test_non_finite_numbers_become_null_everywhere():
    value = {"loss": math.nan, "rows": [1.5, math.inf, -math.inf], "nested": {"row": _Row(math.nan, Path("/x"))}}
    assert strict(value) == {"loss": None, "rows": [1.5, None, None], "nested": {"row": {"loss": None, "where": "/x"}}}

    def refuse(constant):
        raise AssertionError(constant)

    text = dumps(value)
    assert json.loads(text, parse_constant=refuse)["rows"] == [1.5, None, None]
    assert "NaN" not in text and "Infinity" not in text

"""Strict JSON for everything the engine prints or hands over: NaN and infinities (a loss that became
NaN, an unknown figure) become null, which every JSON reader takes; Python's json module would write the
`NaN`/`Infinity` literals that strict parsers (JavaScript's JSON.parse, jq, Go, Rust) refuse."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any


def strict(value: Any) -> Any:
    """`value` with every non-finite float replaced by None, recursively (dicts, lists, tuples,
    dataclasses); paths and other objects as text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [strict(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return strict(dataclasses.asdict(value))
    if isinstance(value, Path):
        return str(value)
    try:  # numpy and torch scalars
        return strict(value.item())
    except (AttributeError, TypeError, ValueError):
        return str(value)


def dumps(value: Any, indent: int | None = 2) -> str:
    """Strict JSON text of `value` (never NaN or Infinity)."""
    return json.dumps(strict(value), indent=indent, allow_nan=False, ensure_ascii=False)

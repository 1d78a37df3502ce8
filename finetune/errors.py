"""Errors that carry a message meant for the user: what is wrong, where, and what to change.

A message quotes what the user gave, never all of it: `shown(value)` is the one way to echo a value
(control characters escaped, cut to a few dozen characters with the length said), and every message
is capped at MAX_MESSAGE_CHARS (`bounded`), so a 5 MB name or a YAML of 76,000 unknown keys gives a
short answer, built in linear time.
"""

from __future__ import annotations

import re
from typing import Any

MAX_MESSAGE_CHARS = 4000  # a whole message
MAX_SHOWN_CHARS = 80  # one value quoted in a message
MAX_PROBLEMS = 20  # problems listed one by one in a ConfigError; the rest are counted
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]")


def shown(value: Any, limit: int = MAX_SHOWN_CHARS) -> str:
    """`value` as a message quotes it: in quotes, control characters (NUL, newline, tab...) escaped,
    at most `limit` characters with the full length said when cut."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return f"a number of {value.bit_length()} bits"  # str() of a huge int is slow, or refused
    text = value if isinstance(value, str) else str(value) if isinstance(value, (int, float)) else repr(value)
    cut = len(text) > limit
    head = text[:limit]
    head = head.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    head = _CONTROL.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}", head
    )
    return f"'{head}'" + (f"… ({len(text):,} characters)" if cut else "")


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """A whole message cut to `limit` characters (the end says how much was left out); NUL removed."""
    text = str(text).replace("\x00", "\\x00")
    if len(text) <= limit:
        return text
    return text[:limit].rstrip() + f" … [{len(text) - limit:,} more characters not shown]"


class FinetuneError(Exception):
    """Base class: str(error) is a complete, user-facing explanation (never a traceback), at most
    MAX_MESSAGE_CHARS long."""

    def __str__(self) -> str:
        return bounded(super().__str__())


class ConfigError(FinetuneError):
    """One or more settings are invalid; `problems` lists every one of them."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        # listed while they fit the message with room for the count of the rest (long paths in each
        # problem once cut that count off the end)
        lines, used = [], 0
        for problem in self.problems[:MAX_PROBLEMS]:
            line = f"  - {bounded(problem, 600)}"
            if lines and used + len(line) > MAX_MESSAGE_CHARS - 200:
                break
            lines.append(line)
            used += len(line) + 1
        more = len(self.problems) - len(lines)
        tail = [f"  ... and {more:,} more problems"] if more > 0 else []
        super().__init__("Invalid settings:\n" + "\n".join(lines + tail))


class DataError(FinetuneError):
    """A dataset cannot be used at all (unreadable, empty, no usable rows, unknown columns...)."""


class ModelError(FinetuneError):
    """A model cannot be found, loaded or run on this hardware."""


class BusyError(FinetuneError):
    """Another training job is already running in this process."""


class RunError(FinetuneError):
    """A run folder is missing, unsafe, or not in a state that allows the action."""

"""A multi-turn chat with two models side by side, sharing one history.

The user's turns go to both sides; each side keeps its own answers, so side X at turn n sees the user's
turns 1..n and its OWN answers 1..n-1 (never the other side's), through the run's chat template after
the system prompt. The system prompt is the one given, else the run's: the system turn most of its
training rows carry (`run_system_prompt`). Sides are answered one after the other on the one model the
Comparer holds (sides.py names them), each streamed.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from finetune.data import prepare_data
from finetune.evaluation.common import EvaluationError, as_run
from finetune.evaluation.sides import DEFAULT_SIDES, adapter_for

MAX_TURNS = 50
SYSTEM_SHARE = 0.25  # a system turn is "the run's" when at least this share of its training rows carry it
_system_cache: dict[tuple, str] = {}
_system_lock = threading.Lock()


@dataclass
class ChatHistory:
    """User turns and, per side, that side's answers (one per user turn once answered)."""

    sides: tuple[str, ...] = DEFAULT_SIDES
    user: list[str] = field(default_factory=list)
    answers: dict[str, list[str]] = field(default_factory=dict)
    system: str = ""

    def __post_init__(self):
        self.sides = tuple(self.sides)
        for side in self.sides:
            self.answers.setdefault(side, [])

    def messages(self, side: str) -> list[dict[str, str]]:
        """What `side` is asked: the system turn, then each user turn with this side's own answer to it."""
        out = [{"role": "system", "content": self.system}] if self.system.strip() else []
        own = self.answers[side]
        for i, text in enumerate(self.user):
            out.append({"role": "user", "content": text})
            if i < len(own):
                out.append({"role": "assistant", "content": own[i]})
        return out

    def pane(self, side: str) -> list[dict[str, str]]:
        """The side's conversation as a chat pane shows it (messages format, no system turn)."""
        return [m for m in self.messages(side) if m["role"] != "system"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "sides": list(self.sides),
            "user": list(self.user),
            "answers": dict(self.answers),
            "system": self.system,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ChatHistory:
        data = data or {}
        answers = {k: list(v) for k, v in (data.get("answers") or {}).items()}
        return cls(tuple(data.get("sides") or DEFAULT_SIDES), list(data.get("user") or []), answers,
                   str(data.get("system") or ""))  # fmt: skip


def run_system_prompt(run: Any) -> str:
    """The system turn most of the run's training rows carry (when at least SYSTEM_SHARE of them do), else ""."""

    run = as_run(run)
    try:
        key = (str(run.path), run.config_path.stat().st_mtime_ns)
    except OSError:
        return ""
    with _system_lock:
        if key in _system_cache:
            return _system_cache[key]
    try:
        rows = prepare_data(run.config()).train_rows[:2000]
    except Exception:  # noqa: BLE001 - the data moved or changed: chat without a system turn
        rows = []
    systems = Counter(
        m.get("content", "")
        for row in rows
        for m in (row.get("messages") or [])[:1]
        if isinstance(m, dict) and m.get("role") == "system" and str(m.get("content", "")).strip()
    )
    text, count = systems.most_common(1)[0] if systems else ("", 0)
    found = text if rows and count >= SYSTEM_SHARE * len(rows) else ""
    with _system_lock:
        _system_cache[key] = found
    return found


def chat_turn(comparer: Any, history: ChatHistory, text: str, settings: Any) -> Iterator[ChatHistory]:
    """Add the user's turn and stream each side's answer to it, one side after the other; yields the
    history as it grows (the last yield has every side's answer)."""
    run = as_run(comparer)
    if not isinstance(text, str) or not text.strip():
        raise EvaluationError("Type a message first.")
    if len(history.user) >= MAX_TURNS:
        raise EvaluationError(f"This chat has {MAX_TURNS} turns, the most it keeps: clear it to start a new one.")
    settings = settings.check()
    sides = [(side, *adapter_for(comparer, run, side)) for side in history.sides]  # all checked before a turn
    history.user.append(text.strip())
    turn = len(history.user)
    try:
        for side, use_adapter, adapter in sides:
            prompt = history.messages(side)  # the new user turn last, this side's own answers before it
            answers = history.answers[side]
            answers.append("")
            for partial in comparer.stream(prompt, use_adapter, settings, adapter=adapter):
                answers[-1] = str(partial)
                yield history
    except BaseException:  # failed or cancelled: the turn is taken back, so both sides stay in step
        del history.user[turn - 1 :]
        for side in history.sides:
            del history.answers[side][turn - 1 :]
        raise
    yield history

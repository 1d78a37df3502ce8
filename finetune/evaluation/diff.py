"""Word-level differences between two answers, so a reader sees what the fine-tune changed
instead of hunting for it in two paragraphs."""

from __future__ import annotations

import difflib
import re
from html import escape

_WORD = re.compile(r"\s+|[^\s]+")  # words and the whitespace between them, so joining restores the text


def _split(text: str) -> list[str]:
    return _WORD.findall(text or "")


def word_diff(a: str, b: str) -> list[tuple[str, str]]:
    """How to turn `a` into `b`, as (op, text) pieces with op in equal / insert / delete.

    Concatenating the equal+delete pieces gives `a` exactly; equal+insert gives `b`.
    Whitespace is kept; a lone space between two changed words joins the change, so
    "the big cat" -> "a small dog" reads as one deletion and one insertion, not six pieces."""
    left, right = _split(a), _split(b)
    matcher = difflib.SequenceMatcher(a=left, b=right, autojunk=False)
    raw: list[tuple[str, str, str]] = []  # (op, text from a, text from b)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        raw.append(("equal" if tag == "equal" else "change", "".join(left[i1:i2]), "".join(right[j1:j2])))
    for i in range(1, len(raw) - 1):  # whitespace-only equal between two changes joins them
        op, text, _ = raw[i]
        if op == "equal" and not text.strip() and raw[i - 1][0] == raw[i + 1][0] == "change":
            raw[i] = ("change", text, text)
    out: list[tuple[str, str]] = []
    deleted, inserted = "", ""
    for op, a_text, b_text in [*raw, ("equal", "", "")]:
        if op == "change":
            deleted, inserted = deleted + a_text, inserted + b_text
            continue
        _add(out, "delete", deleted)
        _add(out, "insert", inserted)
        deleted, inserted = "", ""
        _add(out, "equal", a_text)
    return out


def _add(out: list[tuple[str, str]], op: str, text: str) -> None:
    if not text:
        return
    if out and out[-1][0] == op:
        out[-1] = (op, out[-1][1] + text)
    else:
        out.append((op, text))


def word_diff_html(a: str, b: str) -> str:
    """The diff as escaped HTML with <del> (only in `a`) and <ins> (only in `b`) spans, inside a
    <div class="word-diff"> that keeps line breaks (white-space: pre-wrap)."""
    pieces = []
    for op, text in word_diff(a, b):
        text = escape(text)
        if op == "insert":
            pieces.append(f'<ins style="background:#d4f8d4;text-decoration:none">{text}</ins>')
        elif op == "delete":
            pieces.append(f'<del style="background:#fbd6d6">{text}</del>')
        else:
            pieces.append(text)
    return f'<div class="word-diff" style="white-space:pre-wrap">{"".join(pieces)}</div>'

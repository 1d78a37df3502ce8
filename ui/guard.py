"""One funnel for every event handler of the page: an exception a handler did not turn into a message
itself never reaches the browser as a traceback or a bare "Error". An engine error (FinetuneError) is
shown as it is, its text being the whole explanation; anything else is a bug: its traceback goes to the
error log and the page shows one line naming it and where the details are (finetune.incidents).

`guard(blocks)` wraps the handlers once the page is wired; generators (streamed answers) and coroutines
keep their kind, and their signatures, which Gradio reads for gr.Progress and gr.Request.
"""

from __future__ import annotations

import functools
import html
import inspect
from collections.abc import Callable
from typing import Any

import gradio as gr

from finetune.errors import FinetuneError
from finetune.studio import describe_unexpected

GUARDED = "__finetune_guarded__"


def message(exc: BaseException, action: str) -> gr.Error:
    """The gr.Error the page shows for `exc` raised while `action` ran (escaped: Gradio renders it as HTML,
    and a message quotes what the user typed)."""
    text = str(exc) if isinstance(exc, FinetuneError) else describe_unexpected(exc, action)
    return gr.Error(html.escape(text), print_exception=False)


def guarded(fn: Callable, action: str) -> Callable:
    """`fn` with its unexpected exceptions turned into one clear gr.Error (gr.Error itself passes)."""
    if getattr(fn, GUARDED, False):
        return fn
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any):
            try:
                async for item in fn(*args, **kwargs):
                    yield item
            except gr.Error:
                raise
            except Exception as exc:
                raise message(exc, action) from None

    elif inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:
                raise message(exc, action) from None

    elif inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any):
            try:
                return await fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:
                raise message(exc, action) from None

    else:

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any):
            try:
                return fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:
                raise message(exc, action) from None

    setattr(wrapper, GUARDED, True)
    return wrapper


def guard(blocks: gr.Blocks) -> int:
    """Wrap every handler of `blocks` (call it once the page is wired); returns how many were wrapped."""
    count = 0
    for block_fn in blocks.fns.values():
        if block_fn.fn is None or getattr(block_fn.fn, GUARDED, False):
            continue
        action = block_fn.api_name or getattr(block_fn.fn, "__name__", "") or "a page action"
        block_fn.fn = guarded(block_fn.fn, f"the page ran {action}")
        count += 1
    return count

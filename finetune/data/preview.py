"""What the model sees for one example, and which parts of it carry loss (for the Data tab).

Bounded by the length of the example: one huge row (the upload limit is 500 MB) must not hold a
server thread for minutes. Texts longer than PREVIEW_CHARS are cut before the example is templated
(and conversations to PREVIEW_MESSAGES turns); the Data tab's token statistics measure the whole rows.
"""

from __future__ import annotations

from typing import Any

from finetune.data.preference import is_preference_row
from finetune.data.prompts import is_prompt_row, render_prompt_row
from finetune.data.templates import (
    chat_ids,
    common_prefix_length,
    conversation_of,
    has_generation_markers,
    plain_text,
    render_chat,
    with_eos,
)

PREVIEW_CHARS = 20_000  # characters of one text shown; a page cannot usefully show more
PREVIEW_MESSAGES = 100  # turns of one conversation shown (the first ones and the last)


def render_example(row: dict, tokenizer: Any, train_on_prompt: bool = False) -> dict[str, Any]:
    """A normalized row as the trainer will see it.

    Returns `chat` (messages to display), `text` (the exact string after the chat template / EOS),
    `segments` (consecutive (piece, trained) pairs that concatenate to `text`), `num_tokens`,
    `trained_tokens`, and `hidden_chars` (characters of long texts cut before templating: the
    counts are then those of the cut example).
    """
    if is_prompt_row(row):  # GRPO: nothing of the row is trained, the completions are sampled
        return render_prompt_row(_shortened(row)[0], tokenizer)
    if is_preference_row(row):
        return render_pair(row, tokenizer)
    row, hidden = _shortened(row)
    messages = conversation_of(row)
    if messages is not None:
        chat = [{"role": m["role"], "content": m["content"]} for m in messages]
        body = render_chat(tokenizer, messages)
        ids, mask = _conversation_mask(row, messages, tokenizer)
        add_special = False
    else:
        prompt, body = plain_text(row, tokenizer)
        if "prompt" in row:
            chat = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]
        else:
            chat = [{"role": "text", "content": row["text"]}]
        ids = list(tokenizer(body)["input_ids"])
        prompt_len = common_prefix_length(list(tokenizer(prompt)["input_ids"]), ids) if prompt else 0
        mask = [0] * prompt_len + [1] * (len(ids) - prompt_len)
        add_special = True
    if train_on_prompt:
        mask = [1] * len(ids)
    text, segments = _segments(tokenizer, body, ids, mask, add_special)
    return {
        "chat": chat,
        "text": text,
        "segments": segments,
        "num_tokens": len(ids),
        "trained_tokens": sum(mask),
        "hidden_chars": hidden,
    }


def first_trained_token(row: dict, tokenizer: Any) -> int | None:
    """Where the loss starts in a (non-preference) row as the trainer masks it: the index of its first
    trained token, None when no token carries loss. A truncation to max_length <= this index leaves the
    example without an answer token (TRL then drops it)."""
    row, _ = _shortened(row)
    messages = conversation_of(row)
    if messages is not None:
        _, mask = _conversation_mask(row, messages, tokenizer)
    else:
        prompt, body = plain_text(row, tokenizer)
        if not prompt:
            return 0
        ids = list(tokenizer(body)["input_ids"])
        prompt_len = common_prefix_length(list(tokenizer(prompt)["input_ids"]), ids)
        mask = [0] * prompt_len + [1] * (len(ids) - prompt_len)
    return next((i for i, trained in enumerate(mask) if trained), None)


def _answer_text(answer) -> str:
    return "\n".join(m["content"] for m in answer) if isinstance(answer, list) else answer


def render_pair(row: dict, tokenizer: Any) -> dict[str, Any]:
    """A preference row as the trainer sees it: the shared prompt, and each answer (chosen and rejected,
    or KTO's one completion with its label) as text after the prompt, with token counts.

    Returns `pair` = {prompt_text, prompt_tokens, answers: [{name, text, tokens}], label}, plus the keys
    of `render_example` (`chat` is the prompt, then each answer as an assistant turn with its `title`:
    chosen / rejected, or good / bad; `segments` the prompt then each answer, `num_tokens` the
    prompt + the longer answer, as the length audit counts)."""
    row, hidden = _shortened(row)
    names = ["chosen", "rejected"] if "chosen" in row else ["good" if row["label"] else "bad"]
    answers = [row[k] for k in (("chosen", "rejected") if "chosen" in row else ("completion",))]
    if isinstance(row["prompt"], list):
        prompt_ids = chat_ids(tokenizer, list(row["prompt"]), add_generation_prompt=True)["input_ids"]
        fulls = [chat_ids(tokenizer, list(row["prompt"]) + list(a))["input_ids"] for a in answers]
        chat = [{"role": m["role"], "content": m["content"]} for m in row["prompt"]]
    else:
        prompt_ids = list(tokenizer(row["prompt"])["input_ids"])
        fulls = [list(tokenizer(row["prompt"] + with_eos(tokenizer, a))["input_ids"]) for a in answers]
        chat = [{"role": "user", "content": row["prompt"]}]
    shared = min(common_prefix_length(prompt_ids, ids) for ids in fulls)
    prompt_text = tokenizer.decode(prompt_ids[:shared])
    rendered = [
        {"name": name, "text": tokenizer.decode(ids[shared:]), "content": _answer_text(a), "tokens": len(ids) - shared}
        for name, a, ids in zip(names, answers, fulls)
    ]
    segments = [(prompt_text, False)] + [(f"\n[{a['name']}] " + a["text"], True) for a in rendered]
    chat += [{"role": "assistant", "content": a["content"], "title": a["name"]} for a in rendered]
    return {
        "chat": chat,
        "text": "".join(piece for piece, _ in segments),
        "segments": segments,
        "num_tokens": max(len(ids) for ids in fulls),
        "trained_tokens": max(a["tokens"] for a in rendered),
        "hidden_chars": hidden,
        "pair": {
            "prompt_text": prompt_text,
            "prompt_tokens": shared,
            "answers": rendered,
            "label": row.get("label"),
        },
    }


def _cut_text(value: Any) -> tuple[Any, int]:
    if isinstance(value, str) and len(value) > PREVIEW_CHARS:
        hidden = len(value) - PREVIEW_CHARS
        return value[:PREVIEW_CHARS] + f" … [{hidden:,} more characters not shown]", hidden
    return value, 0


def _cut_messages(messages: Any) -> tuple[Any, int]:
    if not isinstance(messages, list):
        return messages, 0
    hidden = 0
    if len(messages) > PREVIEW_MESSAGES:  # the first turns and the last one (what is trained on)
        messages = messages[: PREVIEW_MESSAGES - 1] + messages[-1:]
    out = []
    for message in messages:
        if isinstance(message, dict) and "content" in message:
            content, cut = _cut_text(message["content"])
            hidden += cut
            message = {**message, "content": content}
        out.append(message)
    return out, hidden


def _shortened(row: dict) -> tuple[dict, int]:
    """The row with every text over PREVIEW_CHARS cut (and long conversations thinned), and how many
    characters were cut: templating and tokenizing stay bounded whatever one row holds."""
    out, hidden = dict(row), 0
    for key in ("messages", "prompt", "completion", "text", "chosen", "rejected"):
        if key in out:
            value = out[key]
            out[key], cut = _cut_messages(value) if isinstance(value, list) else _cut_text(value)
            hidden += cut
    return out, hidden


def _conversation_mask(row: dict, messages: list[dict], tokenizer: Any) -> tuple[list[int], list[int]]:
    """Ids and loss mask: every assistant turn when the template has generation markers (TRL's
    assistant_only_loss), else only the final assistant turn (conversational prompt-completion)."""
    if "messages" in row and has_generation_markers(tokenizer):
        out = chat_ids(tokenizer, messages, return_assistant_tokens_mask=True)
        if any(out.get("assistant_masks", [])):
            return out["input_ids"], list(out["assistant_masks"])
    prompt_ids = chat_ids(tokenizer, messages[:-1], add_generation_prompt=True)["input_ids"]
    ids = chat_ids(tokenizer, messages)["input_ids"]
    prompt_len = common_prefix_length(prompt_ids, ids)
    return ids, [0] * prompt_len + [1] * (len(ids) - prompt_len)


def _segments(
    tokenizer: Any, body: str, ids: list[int], mask: list[int], add_special: bool
) -> tuple[str, list[tuple[str, bool]]]:
    """Cut `body` at token boundaries into runs of equal mask; tokens the tokenizer added (BOS)
    appear as their own text. Falls back to decoding runs of tokens without offset support."""
    try:
        encoded = tokenizer(body, add_special_tokens=add_special, return_offsets_mapping=True)
        offsets = [tuple(o) for o in encoded["offset_mapping"]]
        aligned = list(encoded["input_ids"]) == list(ids)
    except (NotImplementedError, ValueError, TypeError, KeyError):
        aligned = False
    if not aligned:
        return _decoded_segments(tokenizer, ids, mask)
    pieces: list[tuple[str, bool]] = []
    position = 0
    for token_id, (start, end), trained in zip(ids, offsets, mask):
        if end <= start:  # an added special token: no characters of `body`
            pieces.append((tokenizer.decode([token_id]), bool(trained)))
        elif end > position:  # several byte-level tokens may share one character
            pieces.append((body[position:end], bool(trained)))
            position = end
    if position < len(body):
        pieces.append((body[position:], bool(mask[-1]) if mask else False))
    segments = _merge(pieces)
    return "".join(piece for piece, _ in segments), segments


def _decoded_segments(tokenizer: Any, ids: list[int], mask: list[int]) -> tuple[str, list[tuple[str, bool]]]:
    runs: list[tuple[list[int], bool]] = []
    for token_id, trained in zip(ids, mask):
        if runs and runs[-1][1] == bool(trained):
            runs[-1][0].append(token_id)
        else:
            runs.append(([token_id], bool(trained)))
    segments = _merge([(tokenizer.decode(run), trained) for run, trained in runs])
    return "".join(piece for piece, _ in segments), segments


def _merge(pieces: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """Adjacent pieces with the same mask joined: collected in lists and joined once (appending to
    a string piece by piece copied it every time, quadratic in the length of the example)."""
    runs: list[tuple[list[str], bool]] = []
    for piece, trained in pieces:
        if not piece:
            continue
        if runs and runs[-1][1] == trained:
            runs[-1][0].append(piece)
        else:
            runs.append(([piece], trained))
    return [("".join(parts), trained) for parts, trained in runs]

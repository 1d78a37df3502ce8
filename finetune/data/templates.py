"""How a tokenizer turns a normalized row into tokens, the way TRL's SFTTrainer does it.

- conversational rows: the chat template, tokenized without extra special tokens;
- prompt-completion and text rows: plain tokenization (with the tokenizer's special tokens)
  after TRL appends the EOS token when the text does not already end with it.
"""

from __future__ import annotations

import re
from typing import Any

from finetune.errors import DataError

_GENERATION_RE = re.compile(r"\{%-?\s*generation\s*-?%\}")


def has_generation_markers(tokenizer: Any) -> bool:
    """True when the chat template marks assistant text with {% generation %}, so TRL's
    `assistant_only_loss` can mask every other token without converting the data."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one is used
        template = template.get("default")
    return bool(template) and bool(_GENERATION_RE.search(template))


def require_chat_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            "this model's tokenizer has no chat template, so conversational data (messages, sharegpt, alpaca) "
            "cannot be formatted for it: choose a chat/instruct model, or use prompt_completion or text data"
        )


def conversation_of(row: dict) -> list[dict] | None:
    """The message list of a conversational row (including TRL's conversational prompt-completion)."""
    if "messages" in row:
        return row["messages"]
    if isinstance(row.get("prompt"), list):
        return list(row["prompt"]) + list(row["completion"])
    return None


def render_chat(tokenizer: Any, messages: list[dict], **kwargs: Any) -> str:
    """The chat template applied to `messages` as text; template errors become DataError."""
    require_chat_template(tokenizer)
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    except Exception as exc:  # jinja raises e.g. "roles must alternate user/assistant"
        raise DataError(f"the model's chat template rejects this conversation: {exc}") from None


def chat_ids(tokenizer: Any, messages: list[dict], **kwargs: Any) -> dict[str, list[int]]:
    """Token ids (and `assistant_masks` when asked) of a templated conversation, as plain lists.

    transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True) by default,
    older versions a list of ids: both are accepted.
    """
    require_chat_template(tokenizer)
    try:
        out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)
    except Exception as exc:
        raise DataError(f"the model's chat template rejects this conversation: {exc}") from None
    if isinstance(out, (list, tuple)):
        return {"input_ids": list(out)}
    return {key: list(out[key]) for key in ("input_ids", "assistant_masks") if key in out}


def with_eos(tokenizer: Any, text: str) -> str:
    eos = getattr(tokenizer, "eos_token", None)
    return text + eos if eos and not text.endswith(eos) else text


def plain_text(row: dict, tokenizer: Any) -> tuple[str, str]:
    """(prompt, prompt + completion + EOS) of a prompt-completion row, or ("", text + EOS) of a text row."""
    if "prompt" in row:
        return row["prompt"], row["prompt"] + with_eos(tokenizer, row["completion"])
    return "", with_eos(tokenizer, row["text"])


def common_prefix_length(ids: list[int], other: list[int]) -> int:
    """Where TRL starts the completion: the tokens the prompt and prompt+completion share."""
    length = 0
    for a, b in zip(ids, other):
        if a != b:
            break
        length += 1
    return length


def pair_token_ids(tokenizer: Any, row: dict, max_length: int | None = None) -> tuple[list[int], list[list[int]]]:
    """(prompt ids, [chosen ids, rejected ids]) as TRL's DPO trainer tokenizes a pair: the chat template
    (generation prompt on the prompt) for conversations, plain text + EOS otherwise; each answer starts
    where the prompt and prompt + answer stop sharing tokens, and is cut where prompt + answer reach
    `max_length` (TRL's keep_start truncation)."""
    answers = [row["chosen"], row["rejected"]]
    if isinstance(row["prompt"], list):
        prompt_ids = chat_ids(tokenizer, list(row["prompt"]), add_generation_prompt=True)["input_ids"]
        full = [chat_ids(tokenizer, list(row["prompt"]) + list(a))["input_ids"] for a in answers]
    else:
        prompt_ids = list(tokenizer(row["prompt"])["input_ids"])
        full = [list(tokenizer(row["prompt"] + with_eos(tokenizer, a))["input_ids"]) for a in answers]
    shared = min(common_prefix_length(prompt_ids, ids) for ids in full)
    shared = max(shared, 1)  # the first answer token is scored from at least one prompt token
    end = max_length if max_length else None
    return prompt_ids[:shared], [ids[shared:end] for ids in full]

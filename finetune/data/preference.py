"""Preference data (DPO, ORPO, KTO): reading one row, checking it, and the shapes TRL trains on.

Normalized preference rows always carry an explicit prompt (TRL's "explicit prompt" form):
  {"prompt": str, "chosen": str, "rejected": str}                    standard, paired
  {"prompt": [messages], "chosen": [messages], "rejected": [messages]} conversational, paired
  {"prompt": str | [messages], "completion": str | [messages], "label": bool}  unpaired (KTO)
An implicit prompt (chosen and rejected conversations, or texts, that share a beginning) is split
with TRL's own `extract_prompt`, after checking that the two really share everything up to their
final answer.
"""

from __future__ import annotations

from typing import Any

from finetune.data.formats import RowProblem, kind_of, parse_messages

PAIRED_COLUMNS = {"required": ("chosen", "rejected"), "optional": ("prompt",)}
UNPAIRED_COLUMNS = {"required": ("prompt", "completion", "label"), "optional": ()}
LABEL_TEXT = {"true": True, "false": False}


def _is_messages(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or (isinstance(value, str) and value.lstrip().startswith("[{"))


def _text(record: dict, name: str) -> str:
    value = record.get(name)
    if value is None:
        raise RowProblem(f"'{name}' is missing" if name not in record else f"'{name}' is empty (null)")
    if not isinstance(value, str):
        raise RowProblem(f"'{name}' is {kind_of(value)}, not text")
    if not value.strip():
        raise RowProblem(f"'{name}' is empty")
    return value


def _answer(messages: list[dict], name: str) -> list[dict]:
    """The completion part of a conversation: assistant turns with text."""
    if not messages:
        raise RowProblem(f"'{name}' has no answer after the prompt")
    for number, message in enumerate(messages, start=1):
        if message["role"] != "assistant":
            raise RowProblem(
                f"'{name}' message {number} is a {message['role']} turn; the answer must be assistant turns"
            )
        if not message["content"].strip():
            raise RowProblem(f"'{name}' message {number} is an empty assistant turn")
    return messages


def _prompt_messages(value: Any) -> list[dict]:
    if isinstance(value, str) and not value.lstrip().startswith("["):
        if not value.strip():
            raise RowProblem("'prompt' is empty")
        return [{"role": "user", "content": value}]
    messages = parse_messages(value, "prompt")
    if messages[-1]["role"] == "assistant":
        raise RowProblem("'prompt' ends with an assistant turn; the answers belong in chosen/rejected")
    return messages


def _implicit_conversations(chosen: list[dict], rejected: list[dict]) -> dict:
    """Chosen and rejected conversations that repeat the prompt: they must be equal up to their last
    assistant turn(s). TRL's extract_prompt then takes the shared turns as the prompt."""
    from trl.data_utils import extract_prompt

    split = extract_prompt({"chosen": chosen, "rejected": rejected})
    shared = len(split["prompt"])
    for messages in (chosen, rejected):
        rest = messages[shared:]
        if any(m["role"] != "assistant" for m in rest):
            first = shared + 1
            raise RowProblem(
                f"the prompt differs between chosen and rejected (message {first}: "
                f"{chosen[shared]['role'] if shared < len(chosen) else 'missing'} vs "
                f"{rejected[shared]['role'] if shared < len(rejected) else 'missing'} turn); "
                "both must repeat the same prompt and differ only in the final answer"
            )
    if shared == 0 or all(m["role"] == "system" for m in split["prompt"]):
        raise RowProblem("chosen and rejected share no prompt (no user turn before the answers)")
    return {
        "prompt": split["prompt"],
        "chosen": _answer(split["chosen"], "chosen"),
        "rejected": _answer(split["rejected"], "rejected"),
    }


def normalize_paired(record: dict) -> dict:
    """One chosen/rejected record (explicit or implicit prompt, text or conversations) -> a row with
    an explicit prompt, or RowProblem naming the field."""
    for name in ("chosen", "rejected"):
        value = record.get(name)
        if value is None or (isinstance(value, str) and not value.strip()) or value == []:
            missing = name not in record
            raise RowProblem(f"'{name}' is missing" if missing else f"'{name}' is empty")
    conversational = _is_messages(record["chosen"]) or _is_messages(record["rejected"])
    prompt = record.get("prompt")
    has_prompt = prompt is not None and not (isinstance(prompt, str) and not prompt.strip())
    if conversational:
        chosen = parse_messages(record["chosen"], "chosen")
        rejected = parse_messages(record["rejected"], "rejected")
        if any(m["role"] != "assistant" for m in chosen + rejected) or not has_prompt:
            row = _implicit_conversations(chosen, rejected)  # the conversations carry the prompt
        else:
            row = {
                "prompt": _prompt_messages(prompt),
                "chosen": _answer(chosen, "chosen"),
                "rejected": _answer(rejected, "rejected"),
            }
    else:
        chosen, rejected = _text(record, "chosen"), _text(record, "rejected")
        if has_prompt:
            row = {"prompt": _text(record, "prompt"), "chosen": chosen, "rejected": rejected}
        else:  # implicit prompt in plain text: the shared beginning
            from trl.data_utils import extract_prompt

            row = extract_prompt({"chosen": chosen, "rejected": rejected})
            if not row["prompt"].strip():
                raise RowProblem("there is no 'prompt' column and chosen and rejected share no beginning to use as one")
            if not row["chosen"].strip() or not row["rejected"].strip():
                raise RowProblem("one answer is only the shared prompt: chosen and rejected must each add an answer")
    if row["chosen"] == row["rejected"]:
        raise RowProblem("chosen is identical to rejected (nothing to prefer)")
    return row


def parse_label(value: Any) -> bool:
    """KTO's label: true (a good answer) or false; the text true/false is accepted (CSV has no booleans)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in LABEL_TEXT:
        return LABEL_TEXT[value.strip().lower()]
    if value is None:
        raise RowProblem("'label' is missing")
    shown = repr(value)[:40] if isinstance(value, (str, int, float)) else kind_of(value)
    raise RowProblem(f"'label' is {shown}, not a boolean (true for a good answer, false for a bad one)")


def normalize_unpaired(record: dict) -> dict:
    """One KTO record -> {"prompt", "completion", "label": bool}, or RowProblem."""
    label = parse_label(record.get("label"))
    if _is_messages(record.get("completion")):
        prompt = _prompt_messages(record.get("prompt"))
        completion = _answer(parse_messages(record.get("completion"), "completion"), "completion")
    else:
        prompt, completion = _text(record, "prompt"), _text(record, "completion")
    return {"prompt": prompt, "completion": completion, "label": label}


def normalize_preference(fmt: str, record: dict) -> dict:
    """A record of the `preference` or `unpaired_preference` format -> a normalized row, or RowProblem."""
    return normalize_paired(record) if fmt == "preference" else normalize_unpaired(record)


def is_paired(row: dict) -> bool:
    return "chosen" in row


def is_preference_row(row: dict) -> bool:
    return "chosen" in row or "label" in row


def answers_of(row: dict) -> list[Any]:
    """The completions of a preference row (chosen and rejected, or the one KTO completion)."""
    return [row["chosen"], row["rejected"]] if is_paired(row) else [row["completion"]]

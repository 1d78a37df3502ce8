"""Detect a dataset's format from its columns and normalize each row to one of TRL's shapes.

Normalized rows hold exactly one of:
  {"messages": [{"role", "content"}, ...]}   conversational (messages, sharegpt, alpaca)
  {"prompt": str, "completion": str}           prompt-completion
  {"text": str}                                language modeling
"""

from __future__ import annotations

import json
from typing import Any

from finetune.errors import DataError, shown

# What each format reads, in the order auto-detection tries them: a file with both
# `instruction`/`output` and a pre-rendered `text` column is better used as alpaca.
# Preference formats come first: their columns are a superset of prompt_completion's.
FORMAT_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "messages": {"required": ("messages",), "optional": ()},
    "sharegpt": {"required": ("conversations",), "optional": ()},
    "preference": {"required": ("chosen", "rejected"), "optional": ("prompt",)},
    "unpaired_preference": {"required": ("prompt", "completion", "label"), "optional": ()},
    "prompt_completion": {"required": ("prompt", "completion"), "optional": ()},
    "alpaca": {"required": ("instruction", "output"), "optional": ("input", "system")},
    "text": {"required": ("text",), "optional": ()},
    "prompts": {"required": ("prompt",), "optional": ("answer",)},  # GRPO; other columns go to the rewards
}
FORMAT_HINTS = {
    "messages": "a list of {role, content} with roles system/user/assistant",
    "sharegpt": "a list of {from, value} with from human/gpt/system",
    "prompt_completion": "two text columns",
    "alpaca": "text columns",
    "text": "one text column",
    "preference": "text or message lists; without prompt, chosen and rejected conversations repeat the prompt",
    "unpaired_preference": "KTO: label is true for a good completion, false for a bad one",
    "prompts": "GRPO: a prompt (text or messages), the answer to reward, any other columns for the reward functions",
}
PREFERENCE_FORMATS = ("preference", "unpaired_preference")
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "gpt": "assistant", "user": "user", "assistant": "assistant"}
EXPECTED_COLUMNS = tuple(
    dict.fromkeys(c for spec in FORMAT_COLUMNS.values() for c in spec["required"] + spec["optional"])
)


class RowProblem(Exception):
    """Why one row cannot be used (the message names the field, without the row number)."""


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def describe_formats() -> str:
    """One line per format: the columns it needs, for error messages."""
    lines = []
    for name, spec in FORMAT_COLUMNS.items():
        line = f"  - {name}: {', '.join(spec['required'])}"
        if spec["optional"]:
            line += f" (optional: {', '.join(spec['optional'])})"
        lines.append(f"{line} - {FORMAT_HINTS[name]}")
    return "\n".join(lines)


# --- columns ------------------------------------------------------------------
def resolve_mapping(columns: list[str], mapping: dict | None) -> dict[str, str]:
    """Check a {expected_name: your_column} mapping against the columns found; empty entries are ignored."""
    problems = []
    resolved: dict[str, str] = {}
    for expected, actual in (mapping or {}).items():
        if actual in (None, ""):
            continue
        if not isinstance(expected, str) or not isinstance(actual, str):
            problems.append(f"column_mapping entries must be text, got {expected!r}: {actual!r}")
        elif expected not in EXPECTED_COLUMNS:
            hint = ""
            if actual in EXPECTED_COLUMNS and expected in columns:
                hint = (
                    f' (the mapping reads {{expected_name: your_column}}: did you mean {{"{actual}": "{expected}"}}?)'
                )
            problems.append(
                f"column_mapping: {shown(expected)} is not a column any format expects ({', '.join(EXPECTED_COLUMNS)}){hint}"
            )
        elif actual not in columns:
            problems.append(
                f"column_mapping: {shown(expected)} -> {shown(actual)}, but the data has no column {shown(actual)} "
                f"(columns: {', '.join(columns) or 'none'})"
            )
        else:
            resolved[expected] = actual
    if problems:
        raise DataError("\n".join(problems))
    return resolved


def mapped_columns(columns: list[str], mapping: dict[str, str]) -> list[str]:
    renamed = set(mapping.values())
    return [c for c in columns if c not in renamed] + list(mapping)


def apply_mapping(record: dict, mapping: dict[str, str]) -> dict:
    if not mapping:
        return record
    out = dict(record)
    for expected, actual in mapping.items():
        out[expected] = record.get(actual)
    return out


def detect_format(columns: list[str], requested: str = "auto", mapping_keys: tuple[str, ...] = ()) -> str:
    """The format to read `columns` (already mapped) as; DataError when none fits."""
    present = set(columns)
    if requested != "auto":
        if requested not in FORMAT_COLUMNS:
            raise DataError(f"unknown dataset format {shown(requested)}; choose auto, {', '.join(FORMAT_COLUMNS)}")
        missing = [c for c in FORMAT_COLUMNS[requested]["required"] if c not in present]
        if missing:
            raise DataError(
                f"format {shown(requested)} needs the column(s) {', '.join(missing)}, but the data has: "
                f"{', '.join(columns) or 'no columns'}.\nRename your columns or set column_mapping, "
                f'e.g. {{"{missing[0]}": "your_column"}}'
            )
        return requested
    order = list(FORMAT_COLUMNS)
    if mapping_keys:  # a mapping says which format the user means
        wanted = [
            f for f in order if set(mapping_keys) & set(FORMAT_COLUMNS[f]["required"] + FORMAT_COLUMNS[f]["optional"])
        ]
        order = wanted + [f for f in order if f not in wanted]
    for name in order:
        if all(c in present for c in FORMAT_COLUMNS[name]["required"]):
            return name
    raise DataError(no_format_message(columns))


def no_format_message(columns: list[str]) -> str:
    partial = []
    for name, spec in FORMAT_COLUMNS.items():
        have = [c for c in spec["required"] if c in columns]
        if have:
            missing = [c for c in spec["required"] if c not in columns]
            partial.append(f"looks like {name} but has no {', '.join(missing)} column")
    example = '{"instruction": "question", "output": "answer"}'
    return (
        f"no known format matches the columns found: {', '.join(columns) or 'none'}"
        + (f" ({'; '.join(partial)})" if partial else "")
        + f".\nEach format expects:\n{describe_formats()}\n"
        f"Rename your columns, or set column_mapping (e.g. {example}) and/or dataset_format."
    )


# --- rows ---------------------------------------------------------------------
def normalize_row(fmt: str, record: dict, conversational_prompts: bool = False) -> dict:
    """One raw (already mapped) record -> a normalized row, or RowProblem saying what is wrong
    (preference formats: finetune.data.preference.normalize_preference)."""
    if fmt == "messages":
        return {"messages": check_conversation(parse_messages(record.get("messages"), "messages"))}
    if fmt == "sharegpt":
        return {"messages": check_conversation(parse_messages(record.get("conversations"), "conversations"))}
    if fmt == "alpaca":
        return _alpaca(record)
    if fmt == "prompt_completion":
        if conversational_prompts:  # TRL's conversational prompt-completion: keep it as one conversation
            prompt = parse_messages(record.get("prompt"), "prompt")
            completion = parse_messages(record.get("completion"), "completion")
            return {"messages": check_conversation(prompt + completion)}
        return {"prompt": _text(record, "prompt"), "completion": _text(record, "completion")}
    if fmt == "text":
        return {"text": _text(record, "text")}
    raise ValueError(f"unknown format {fmt}")


def _text(record: dict, name: str, required: bool = True) -> str:
    value = record.get(name)
    if value is None:
        if required:
            raise RowProblem(f"'{name}' is missing" if name not in record else f"'{name}' is empty (null)")
        return ""
    if not isinstance(value, str):
        raise RowProblem(f"'{name}' is {kind_of(value)}, not text")
    if required and not value.strip():
        raise RowProblem(f"'{name}' is empty")
    return value


def _alpaca(record: dict) -> dict:
    instruction = _text(record, "instruction")
    extra = _text(record, "input", required=False)
    output = _text(record, "output")
    system = _text(record, "system", required=False)
    user = instruction + ("\n\n" + extra if extra.strip() else "")
    messages = [{"role": "system", "content": system}] if system.strip() else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return {"messages": messages}


def parse_messages(value: Any, field: str) -> list[dict]:
    """A list of {role, content} or ShareGPT {from, value} items -> [{role, content}]."""
    if isinstance(value, str) and value.lstrip().startswith("["):  # a JSON list stored in a CSV cell
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            raise RowProblem(f"'{field}' is text that is not a valid JSON list of messages") from None
    if value is None:
        raise RowProblem(f"'{field}' is missing")
    if not isinstance(value, (list, tuple)):
        raise RowProblem(f"'{field}' must be a list of messages, got {kind_of(value)}")
    if not value:
        raise RowProblem(f"'{field}' is an empty list")
    return [_message(item, number) for number, item in enumerate(value, start=1)]


def _message(item: Any, number: int) -> dict:
    if not isinstance(item, dict):
        raise RowProblem(f"message {number} is {kind_of(item)}, not an object with role and content")
    if "role" in item:
        raw_role, content_key, aliases = item["role"], "content", {r: r for r in ROLES}
        accepted = f"accepted roles: {', '.join(ROLES)}"
    elif "from" in item:
        raw_role, content_key, aliases = item["from"], "value", SHAREGPT_ROLES
        accepted = f"accepted 'from' values: {', '.join(SHAREGPT_ROLES)}"
    else:
        raise RowProblem(f"message {number} has no 'role' (or ShareGPT 'from')")
    role = aliases.get(raw_role.strip().lower()) if isinstance(raw_role, str) else None
    if role is None:
        quoted = shown(raw_role, 40) if isinstance(raw_role, str) else f"'{kind_of(raw_role)}'"
        raise RowProblem(f"message {number} has unknown role {quoted}; {accepted}")
    if content_key not in item:
        content_key = "value" if content_key == "content" else "content"  # tolerate mixed styles
        if content_key not in item:
            raise RowProblem(f"message {number} ({role}) has no content")
    content = item[content_key]
    if not isinstance(content, str):
        raise RowProblem(f"message {number} ({role}) content is {kind_of(content)}, not text")
    return {"role": role, "content": content}


def check_conversation(messages: list[dict]) -> list[dict]:
    """Refuse conversations that would teach nothing or break TRL's prompt/completion split."""
    roles = [m["role"] for m in messages]
    if "assistant" not in roles:
        raise RowProblem("no assistant turn (nothing to learn from)")
    for number, message in enumerate(messages, start=1):
        if message["role"] == "assistant" and not message["content"].strip():
            raise RowProblem(f"message {number} is an empty assistant turn")
    if roles[-1] != "assistant":
        raise RowProblem(
            f"the conversation ends with a {roles[-1]} turn after the last assistant reply (nothing to learn from it)"
        )
    if len(messages) == 1:
        raise RowProblem("the conversation is only an assistant turn; there is no prompt before it")
    return messages

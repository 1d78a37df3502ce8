"""Serving a merged export with Ollama: a Modelfile built from the model's own chat template.

Ollama does not run the Hugging Face (Jinja) chat template; it needs a Go template. We only write
one for the two families whose turn format we know exactly (ChatML, as in Qwen, and Llama 3),
and prove the match first: the saved template is rendered with transformers and compared, turn
by turn, with what the Go template will produce. Anything else raises ValueError, and the
TEMPLATE has to be written by hand (docs/serving.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PROBE_USER = "PROBE-USER-7f3a"
_PROBE_SYSTEM = "PROBE-SYSTEM-7f3a"
_PROBE_ASSISTANT = "PROBE-ASSISTANT-7f3a"


@dataclass(frozen=True)
class _Family:
    name: str
    markers: tuple[str, ...]  # all present in the Jinja template -> this family
    turn: str  # one message, with {role} and {content}
    generation_prompt: str
    go_template: str
    stop: tuple[str, ...]


# Both Go templates follow Ollama's own library templates: every message in order, then the
# assistant header when the last message is not the assistant's. Ollama puts the Modelfile's
# SYSTEM in .Messages as a system message when the request has none.
_CHATML = _Family(
    name="ChatML",
    markers=("<|im_start|>", "<|im_end|>"),
    turn="<|im_start|>{role}\n{content}<|im_end|>\n",
    generation_prompt="<|im_start|>assistant\n",
    go_template=(
        "{{- range $i, $_ := .Messages }}\n"
        "{{- $last := eq (len (slice $.Messages $i)) 1 -}}\n"
        "<|im_start|>{{ .Role }}\n"
        "{{ .Content }}<|im_end|>\n"
        '{{ if and $last (ne .Role "assistant") }}<|im_start|>assistant\n'
        "{{ end }}\n"
        "{{- end }}"
    ),
    stop=("<|im_end|>", "<|im_start|>"),
)
_LLAMA3 = _Family(
    name="Llama 3",
    markers=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    turn="<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
    generation_prompt="<|start_header_id|>assistant<|end_header_id|>\n\n",
    go_template=(
        "{{- range $i, $_ := .Messages }}\n"
        "{{- $last := eq (len (slice $.Messages $i)) 1 -}}\n"
        "<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
        "{{ .Content }}<|eot_id|>\n"
        '{{- if and $last (ne .Role "assistant") }}<|start_header_id|>assistant<|end_header_id|>\n\n'
        "{{ end }}\n"
        "{{- end }}"
    ),
    stop=("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"),
)
FAMILIES = (_CHATML, _LLAMA3)


def ollama_modelfile(merged_dir: str | Path, gguf_name: str = "model.gguf", system: str | None = None) -> str:
    """A Modelfile for `ollama create NAME -f Modelfile`, next to `gguf_name` (converted from merged_dir).
    `system` (the system prompt the run trained with) replaces the template's default system prompt.

    Raises ValueError when the folder has no chat template, or one we cannot reproduce exactly."""
    merged_dir = Path(merged_dir)
    tokenizer = _load_tokenizer(merged_dir)
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    if not template:
        raise ValueError(f"{merged_dir} has no chat template (chat_template.jinja / tokenizer_config.json)")
    family = next((f for f in FAMILIES if all(m in template for m in f.markers)), None)
    if family is None:
        raise ValueError(
            "the chat template is neither ChatML nor Llama 3; write the Modelfile's TEMPLATE by hand "
            "(see docs/serving.md)"
        )
    default_system = _check_and_default_system(tokenizer, family)
    system = default_system if system is None else system
    if '"""' in system:
        raise ValueError('the system prompt contains """, which a Modelfile cannot quote')

    lines = [f"FROM ./{gguf_name}", "", f'TEMPLATE """{family.go_template}"""', ""]
    if system:
        lines += [f'SYSTEM """{system}"""', ""]
    lines += [f'PARAMETER stop "{s}"' for s in family.stop]
    lines += [f"PARAMETER {k} {v}" for k, v in _sampling_parameters(merged_dir).items()]
    return "\n".join(lines) + "\n"


def _load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the tokenizer in {folder}: {str(exc).splitlines()[0][:200]}") from None


def _render(tokenizer, messages: list[dict[str, str]]) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token
    # the BOS token is added again by llama.cpp/Ollama when tokenizing: it is no part of the template
    return text[len(bos) :] if bos and text.startswith(bos) else text


def _check_and_default_system(tokenizer, family: _Family) -> str:
    """Render probe conversations with the real template; return its default system prompt ("" if none).

    A template that adds its own preamble to a given system message (Llama 3.1's date lines) is
    accepted: the Go template then shows the system message without that preamble."""
    user = family.turn.format(role="user", content=_PROBE_USER)

    # 1) a lone user message: [default system turn] + user turn + generation prompt
    rendered = _render(tokenizer, [{"role": "user", "content": _PROBE_USER}])
    tail = user + family.generation_prompt
    head = rendered[: -len(tail)] if rendered.endswith(tail) else None
    system = _system_content(head, family) if head else ""
    if system is None:
        raise _mismatch(family, rendered, tail)
    if '"""' in system:
        raise ValueError('the default system prompt contains """, which a Modelfile cannot quote')

    # 2) system, user, assistant, user: every turn in the standard format, in order
    messages = [
        {"role": "system", "content": _PROBE_SYSTEM},
        {"role": "user", "content": _PROBE_USER},
        {"role": "assistant", "content": _PROBE_ASSISTANT},
        {"role": "user", "content": _PROBE_USER},
    ]
    rendered = _render(tokenizer, messages)
    tail = user + family.turn.format(role="assistant", content=_PROBE_ASSISTANT) + user + family.generation_prompt
    head = rendered[: -len(tail)] if rendered.endswith(tail) else None
    given = _system_content(head, family) if head else None
    if given is None or not given.endswith(_PROBE_SYSTEM):
        raise _mismatch(family, rendered, tail)
    return system


def _system_content(text: str | None, family: _Family) -> str | None:
    """The content when `text` is exactly one system turn of this family, else None."""
    before, after = family.turn.format(role="system", content="\0").split("\0")
    if text and text.startswith(before) and text.endswith(after) and len(text) >= len(before) + len(after):
        return text[len(before) : len(text) - len(after)]
    return None


def _mismatch(family: _Family, rendered: str, expected: str) -> ValueError:
    return ValueError(
        f"the chat template looks like {family.name} but renders differently from the standard "
        f"{family.name} turns (got {rendered[-200:]!r}, expected it to end with {expected!r}); "
        "write the Modelfile's TEMPLATE by hand (see docs/serving.md)"
    )


def _sampling_parameters(folder: Path) -> dict[str, Any]:
    """The model's own sampling defaults from generation_config.json, as Ollama PARAMETERs.

    Hugging Face applies temperature/top_p/top_k only when do_sample is true; without it the
    model card's behaviour is greedy, and we leave Ollama's defaults alone."""
    try:
        config = json.loads((folder / "generation_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    params: dict[str, Any] = {}
    if config.get("do_sample"):
        for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k")):
            if isinstance(config.get(ours), (int, float)):
                params[theirs] = config[ours]
    penalty = config.get("repetition_penalty")
    if isinstance(penalty, (int, float)) and penalty != 1.0:
        params["repeat_penalty"] = penalty
    return params

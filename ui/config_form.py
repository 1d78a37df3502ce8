"""The Advanced form: one component per RunConfig field, generated from `field_help()`.

The form is the single source of truth for the config a run starts from: the Data and
Model tabs write into it, presets and YAML files fill it, and Start reads it.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr
import yaml

from finetune.config import RunConfig, field_help
from finetune.errors import ConfigError

GROUPS = [
    ("model", "Model"),
    ("data", "Data"),
    ("method", "Method"),
    ("lora", "LoRA"),
    ("training", "Training"),
    ("logging", "Logging & checkpoints"),
    ("grpo", "GRPO"),
    ("output", "Output"),
]
FLOAT_STEPS = {"learning_rate": 1e-5, "early_stopping_threshold": 1e-3}
PER_ROW = 3


def field_names() -> list[str]:
    return list(field_help())


def field_type(name: str) -> str:
    """The declared type of a field: bool, int, float, dict, str or Any."""
    import dataclasses

    for f in dataclasses.fields(RunConfig):
        if f.name == name:
            return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "Any")
    raise KeyError(name)


def _choice_str(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def to_ui(name: str, value: Any) -> Any:
    """A config value as its component shows it."""
    meta = field_help()[name]
    if meta.get("choices"):
        return _choice_str(value)
    if isinstance(meta["default"], dict):
        return json.dumps(value, ensure_ascii=False) if value else ""
    return value


def values_from_config(cfg: RunConfig) -> list[Any]:
    """Component values for every field, in form order (what tests pass to the Start endpoint)."""
    data = cfg.to_dict()
    return [to_ui(name, data[name]) for name in field_names()]


def config_from_values(values: list[Any] | tuple[Any, ...]) -> RunConfig:
    """The RunConfig the form describes; ConfigError lists every unusable value."""
    names = field_names()
    if len(values) != len(names):
        raise ConfigError([f"expected {len(names)} settings, got {len(values)}"])
    data: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in zip(names, values):
        meta = field_help()[name]
        if isinstance(meta["default"], dict):
            text = (value or "").strip() if isinstance(value, str) else value
            if not text:
                data[name] = {}
                continue
            if isinstance(text, dict):
                data[name] = text
                continue
            try:
                parsed = yaml.safe_load(text)
            except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: a number of 5,000 digits
                problems.append(f'{name}: write it as {{expected: your_column}}, e.g. {{"instruction": "question"}}')
                continue
            data[name] = parsed
        elif value is None and not isinstance(meta["default"], str):
            problems.append(f"{name}: is empty; enter a value (default {meta['default']})")
        else:
            data[name] = value
    if problems:  # with the problems of the other fields: one round
        try:
            problems += RunConfig.from_dict(data).validate()
        except ConfigError as exc:
            problems += exc.problems
        raise ConfigError(problems)
    return RunConfig.from_dict(data)


def build_form(base: RunConfig) -> dict[str, gr.components.Component]:
    """Render every field (grouped in tabs) and return name -> component, in field order."""
    meta_all = field_help()
    values = base.to_dict()
    by_group: dict[str, list[str]] = {}
    for name, meta in meta_all.items():
        by_group.setdefault(meta.get("group", "training"), []).append(name)
    known = [g for g, _ in GROUPS]
    groups = GROUPS + [(g, g.title()) for g in by_group if g not in known]
    comps: dict[str, gr.components.Component] = {}
    with gr.Tabs(elem_id="advanced-groups"):
        for group, label in groups:
            names = by_group.get(group, [])
            if not names:
                continue
            with gr.Tab(f"{label} ({len(names)})", elem_id=f"adv-tab-{group}"):
                for start in range(0, len(names), PER_ROW):
                    with gr.Row(equal_height=False):
                        for name in names[start : start + PER_ROW]:
                            comps[name] = _component(name, meta_all[name], values[name])
    return {name: comps[name] for name in meta_all}


def _component(name: str, meta: dict, value: Any) -> gr.components.Component:
    info = meta.get("help", "")
    label = name
    elem_id = f"cfg-{name}"
    choices = meta.get("choices")
    if choices:
        return gr.Dropdown(
            choices=[_choice_str(c) for c in choices],
            value=_choice_str(value),
            label=label,
            info=info,
            elem_id=elem_id,
            allow_custom_value=False,
        )
    kind = field_type(name)
    if kind == "bool":
        return gr.Checkbox(value=bool(value), label=label, info=info, elem_id=elem_id)
    if kind == "int":
        # no precision: a typed 1.5 reaches the engine, which refuses it as the CLI does (never rounded to 2)
        return gr.Number(value=value, label=label, info=info, step=1, elem_id=elem_id)
    if kind == "float":
        step = FLOAT_STEPS.get(name, 0.01)
        return gr.Number(value=value, label=label, info=info, step=step, elem_id=elem_id)
    if kind == "dict":
        return gr.Textbox(
            value=to_ui(name, value),
            label=label,
            info=info,
            elem_id=elem_id,
            placeholder='{"instruction": "question", "output": "answer"}',
        )
    return gr.Textbox(value="" if value is None else str(value), label=label, info=info, elem_id=elem_id)

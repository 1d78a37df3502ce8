"""Reading settings: YAML read strictly (a key given twice is named with its lines) and each value coerced
to its field's type, or a ValueError naming the field; problems_after_coercion adds the range problems of
the fields that did coerce, so every problem comes in one round."""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from finetune.config.choices import PRECISION_CHOICES
from finetune.errors import shown


def problems_after_coercion(cls: type, values: dict[str, Any], coercion: list[str]) -> list[str]:
    """The range and consistency problems of the fields that did coerce, so every problem comes in one
    round (the fields that did not keep their earlier value meanwhile and are not judged twice)."""
    failed = {problem.split(":", 1)[0].strip() for problem in coercion}
    try:
        problems = cls(**values).validate()
    except Exception:  # noqa: BLE001 - only a courtesy: the coercion problems are what must be said
        return []
    return [problem for problem in problems if problem.split(":", 1)[0].strip() not in failed]


class DuplicateKeyError(yaml.YAMLError):
    """A YAML mapping names a key twice (YAML's loaders would silently keep the last value)."""


class StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """yaml.safe_load's loader (libyaml's when present) that refuses duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise DuplicateKeyError(
                    f"line {line}: the setting {brief(key)} is given twice (first on line {seen[key]}); "
                    "keep one of them"
                )
            if isinstance(key, (str, int, float, bool)):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_constructor("tag:yaml.org,2002:map", StrictLoader.construct_yaml_map)


def load_yaml_strict(text: str) -> Any:
    """yaml.safe_load, but a key given twice in one mapping raises DuplicateKeyError naming it and its lines."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass


def brief(value: Any) -> str:
    """repr() cut short: a hostile YAML (deep nesting, billion laughs) must not build a huge message."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, 80, 80
    try:
        return short.repr(value)
    except RecursionError:
        return f"a nested {type(value).__name__}"


def coerce(key: str, raw: Any, f: dataclasses.Field) -> Any:
    """Coerce a YAML/UI value to the field's type, or raise ValueError naming the field."""
    if f.metadata.get("choices") == PRECISION_CHOICES:
        if isinstance(raw, str) and raw.lower() in ("true", "false", "auto"):
            return {"true": True, "false": False, "auto": "auto"}[raw.lower()]
        if raw in PRECISION_CHOICES:
            return raw
        raise ValueError(f"{key}: expected auto, true or false, got {brief(raw)}")
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false", "yes", "no", "1", "0"):
            return raw.lower() in ("true", "yes", "1")
        raise ValueError(f"{key}: expected true or false, got {brief(raw)}")
    if kind == "int":
        if isinstance(raw, bool):
            raise ValueError(f"{key}: expected a whole number, got {brief(raw)}")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        if isinstance(raw, str):
            try:
                return int(raw.strip())
            except ValueError:
                pass
        raise ValueError(f"{key}: expected a whole number, got {brief(raw)}")
    if kind == "float":
        if isinstance(raw, str):
            try:
                raw = float(raw.strip())
            except ValueError:
                pass
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            # step intervals keep whole numbers whole: TrainingArguments wants ints above 1
            if isinstance(raw, float) and raw.is_integer() and f.name.endswith("_steps"):
                return int(raw)
            try:
                return raw if f.name.endswith("_steps") else float(raw)
            except OverflowError:  # an integer beyond any float (a 5,000-digit number typed in a form)
                raise ValueError(f"{key}: {shown(raw)} is out of range for a number") from None
        raise ValueError(f"{key}: expected a number, got {brief(raw)}")
    if kind == "dict":
        if raw in (None, ""):
            return {}
        if isinstance(raw, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
            return dict(raw)
        raise ValueError(f"{key}: expected a mapping of column names to column names, got {brief(raw)}")
    if kind == "str":
        if raw is None:
            return ""
        if f.metadata.get("list_ok") and isinstance(raw, (list, tuple)) and all(isinstance(v, str) for v in raw):
            return ",".join(raw)
        if isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
            return str(raw)
        raise ValueError(f"{key}: expected text, got {brief(raw)}")
    return raw

"""Reward functions for GRPO without code: the ready ones, each with its help text, and the custom file.

`RunConfig.reward_functions` names them with weights (`contains_answer, format_regex:0.5`); their own
knobs are the `reward_*` fields (pattern, target length, JSON keys, number tolerance, custom file).
`build_reward_functions(config)` makes the callables TRL's GRPOTrainer calls (keyword arguments
`prompts`, `completions` (texts, or one-message lists for chat prompts), `completion_ids` and every
data column, `answer` among them); the batch evaluation scores base and fine-tuned answers with the
same callables (`score_completions`).

Answers are compared normalized (SQuAD's rule in finetune.data.answer_text: case, punctuation,
articles, spaces), after reasoning blocks (`<think>...</think>`) are removed. A completion's final
answer (`final_answer`) is the content of its last `\\boxed{...}`, else the text after its last
`Answer:` / `Final answer:`, else its first sentence, cut after a final "is" / "=" when it has one
("The capital of France is Paris." -> "Paris.").

A custom reward file runs Python code: the CLI allows it, the web app only when its host started it
with `python app.py --allow-custom-rewards` (`CUSTOM_FLAG`; the Studio enforces it). An error inside
any reward function stops the run with the function's name and the row (`RewardError`).

Importing this module loads no torch: the config's validation and the UI read the registry.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from finetune.errors import ConfigError, shown
from finetune.reward_spec import (
    ANSWER_COLUMN,
    CUSTOM,
    ROW_COLUMN,
    RewardError,
    needs_answer,
    parse_reward_functions,
)
from finetune.train.answers import (
    completion_text,
    contains_answer,
    exact_answer,
    format_match,
    json_keys,
    json_score,
    length_closeness,
    number_match,
)


# --- the callables TRL calls ------------------------------------------------------------------------------
class RewardFunction:
    """One named reward as GRPOTrainer calls it: a list of numbers for a batch of completions. Any error (or an
    unusable result) becomes a RewardError naming the function and the row (its `source_row`, its prompt)."""

    def __init__(self, name: str, score: Callable[..., list[float]], label: str | None = None):
        self.__name__ = name  # TRL names the logged metrics rewards/<name>/mean after it
        self.label = label or name
        self._score = score

    def __call__(self, prompts=None, completions=None, completion_ids=None, **columns) -> list[float]:
        texts = [completion_text(c) for c in completions or []]
        data = {k: v for k, v in columns.items() if k not in _TRL_EXTRAS}
        try:
            values = self._score(texts, prompts=prompts, completion_ids=completion_ids, **data)
            values = _checked(values, len(texts))
        except RewardError:
            raise
        except _RowFailure as failure:
            raise RewardError(self._where(failure.index, prompts, data, failure.error)) from None
        except Exception as exc:  # noqa: BLE001 - user code: any exception stops the run with its name
            index, error = self._failing_row(texts, prompts, completion_ids, data, exc)
            raise RewardError(self._where(index, prompts, data, error)) from None
        return values

    def _failing_row(self, texts, prompts, completion_ids, data, error):
        """(row index, its error) of the first completion the function fails on alone, else (None, `error`):
        a batch function's exception says nothing of the row, so each is tried on its own (only on failure)."""

        def one(values, i):
            return values[i : i + 1] if isinstance(values, (list, tuple)) else values

        for i in range(len(texts)):
            try:
                self._score(
                    texts[i : i + 1],
                    prompts=one(prompts, i),
                    completion_ids=one(completion_ids, i),
                    **{k: one(v, i) for k, v in data.items()},
                )
            except Exception as row_error:  # noqa: BLE001 - the row that fails
                return i, row_error
        return None, error

    def _where(self, index: int | None, prompts, data: dict, error: BaseException) -> str:
        where = "on a batch of completions"
        if index is not None:
            rows = data.get(ROW_COLUMN) or []
            row = rows[index] if index < len(rows) else None
            prompt = prompts[index] if prompts and index < len(prompts) else ""
            prompt_text = prompt[-1].get("content", "") if isinstance(prompt, list) and prompt else str(prompt)
            where = (f"on row {row}" if row is not None else "on a row") + f" (prompt {shown(prompt_text, 60)})"
        message = f"{type(error).__name__}: {error}" if not isinstance(error, _Unusable) else str(error)
        return (
            f"The reward function '{self.label}' failed {where}: {message}. The run stopped; fix the function or "
            "the data and start again."
        )


_TRL_EXTRAS = ("trainer_state", "log_extra", "log_metric", "environments")


class _Unusable(ValueError):
    pass


class _RowFailure(Exception):
    def __init__(self, index: int, error: BaseException):
        self.index, self.error = index, error


def _checked(values: Any, expected: int) -> list[float]:
    """A reward function's result: exactly one finite number per completion."""
    if not isinstance(values, (list, tuple)):
        raise _Unusable(f"it returned {type(values).__name__}, not a list of numbers")
    if len(values) != expected:
        raise _Unusable(f"it returned {len(values)} numbers for {expected} completions")
    out = []
    for index, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _RowFailure(index, _Unusable(f"it returned {shown(value, 40)}, not a finite number"))
        out.append(float(value))
    return out


def _per_row(score: Callable[..., float], column: str | None = None) -> Callable[..., list[float]]:
    """A batch scorer from a one-completion scorer; `column` (e.g. answer) is passed per row."""

    def batch(texts: list[str], **data) -> list[float]:
        values = data.get(column) if column else None
        if column and values is None:
            raise _Unusable(f"the data has no '{column}' column")
        out = []
        for index, text in enumerate(texts):
            try:
                out.append(score(text, values[index]) if column else score(text, index, data))
            except Exception as exc:  # noqa: BLE001 - named with its row
                raise _RowFailure(index, exc) from None
        return out

    return batch


def load_custom_reward(path: str | Path) -> Callable[..., Any]:
    """The `reward` function of a Python file (this runs the file's code). ConfigError names the problem."""
    import importlib.util

    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError([f"reward_custom_file: {shown(str(path))} is not a file"])
    if file.suffix != ".py":
        raise ConfigError([f"reward_custom_file: {file.name} must be a Python file (.py)"])
    spec = importlib.util.spec_from_file_location(f"finetune_custom_reward_{abs(hash(str(file)))}", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's code
        raise ConfigError([f"reward_custom_file: {file.name} failed to load: {type(exc).__name__}: {exc}"]) from None
    function = getattr(module, "reward", None)
    if not callable(function):
        raise ConfigError(
            [f"reward_custom_file: {file.name} defines no function `reward(completions, **columns) -> list[float]`"]
        )
    return function


def check_rewards(config: Any, report: Any) -> None:
    """Before a run folder is made: the reward functions can be built and the data has the columns they read."""

    missing = needs_answer(config)
    if missing and ANSWER_COLUMN not in (report.rows[0] if report.rows else {}):
        raise ConfigError(
            [
                f"reward_functions: {', '.join(missing)} compare with the '{ANSWER_COLUMN}' column, but "
                f"{Path(str(report.source)).name} has none (columns: {', '.join(report.columns)}); add one, map yours "
                'with column_mapping (e.g. {"answer": "solution"}), or choose format_regex, length or json_valid'
            ]
        )
    build_reward_functions(config)


def build_reward_functions(config: Any) -> tuple[list[RewardFunction], list[float]]:
    """The reward callables of `config.reward_functions` and their weights, for GRPOTrainer (and evaluation)."""
    items, problems = parse_reward_functions(config.reward_functions)
    if problems:
        raise ConfigError(problems)
    functions = []
    for name, _ in items:
        if name == "exact_answer":
            score = _per_row(exact_answer, ANSWER_COLUMN)
        elif name == "contains_answer":
            score = _per_row(contains_answer, ANSWER_COLUMN)
        elif name == "number_match":
            tolerance = float(config.reward_number_tolerance)
            score = _per_row(lambda text, answer, t=tolerance: number_match(text, answer, t), ANSWER_COLUMN)
        elif name == "format_regex":
            pattern = re.compile(config.reward_format_regex, re.DOTALL)
            score = _per_row(lambda text, i, data, p=pattern: format_match(text, p))
        elif name == "length":
            score = _length_scorer(int(config.reward_length_target))
        elif name == "json_valid":
            keys = json_keys(config.reward_json_keys)
            score = _per_row(lambda text, i, data, k=keys: json_score(text, k))
        else:
            score = _custom_scorer(load_custom_reward(config.reward_custom_file))
        label = f"custom ({Path(config.reward_custom_file).name})" if name == CUSTOM else name
        functions.append(RewardFunction(name, score, label))
    return functions, [weight for _, weight in items]


def _length_scorer(target: int) -> Callable[..., list[float]]:
    def batch(texts: list[str], completion_ids=None, **_) -> list[float]:
        if completion_ids is None:  # evaluation passes token counts the same way
            raise _Unusable("no token ids were given")
        return [length_closeness(len(ids), target) for ids in completion_ids]

    return batch


def _custom_scorer(function: Callable[..., Any]) -> Callable[..., list[float]]:
    def batch(texts: list[str], prompts=None, completion_ids=None, **data) -> list[float]:
        return function(texts, prompts=prompts, **data)

    return batch


def score_completions(
    functions: list[RewardFunction], weights: list[float], rows: list[dict], texts: list[str], token_counts: list[int]
) -> list[dict[str, float]]:
    """Each reward function's value and the weighted total ("reward") for completions of `rows` (one per row),
    called exactly as in training: the batch evaluation's mean-reward metric."""
    columns = {key: [row.get(key) for row in rows] for key in dict.fromkeys(k for row in rows for k in row)}
    prompts = columns.pop("prompt", [None] * len(rows))
    ids = [[0] * n for n in token_counts]  # the length reward counts tokens
    per_function = {f.__name__: f(prompts=prompts, completions=texts, completion_ids=ids, **columns) for f in functions}
    out = []
    for index in range(len(rows)):
        values = {name: values[index] for name, values in per_function.items()}
        values["reward"] = sum(w * values[f.__name__] for f, w in zip(functions, weights))
        out.append(values)
    return out

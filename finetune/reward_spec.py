"""The reward functions a GRPO run can name (the registry, each with its help text) and the rules of the
`reward_functions` knob: parsing `contains_answer, format_regex:0.5` and every problem RunConfig.validate
reports for it. Light (no torch, no model code): the config, the planner and the UI read it;
finetune.train.rewards makes the callables TRL calls from these names.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from finetune.errors import FinetuneError, shown

CUSTOM = "custom"
CUSTOM_FLAG = "--allow-custom-rewards"
CUSTOM_REFUSED = (
    "reward_functions: a custom reward file runs Python code on the server, and this app's host did not allow "
    f"it: start the app with `python app.py {CUSTOM_FLAG}`, or train from the command line (`finetune train`)"
)
ANSWER_COLUMN = "answer"
ROW_COLUMN = "source_row"  # the file's row number, added to every prompt row (for messages naming a row)
MAX_WEIGHT = 1000.0
MAX_REGEX_CHARS = 2000


class RewardError(FinetuneError):
    """A reward function failed (or returned something unusable) on a completion: names the function and the row."""


@dataclass(frozen=True)
class RewardSpec:
    """A ready reward function: what it rewards (help) and what it needs."""

    name: str
    help: str
    needs_answer: bool = False


READY: dict[str, RewardSpec] = {
    spec.name: spec
    for spec in (
        RewardSpec(
            "exact_answer",
            "1 when the completion's final answer equals the row's answer (case, spaces and punctuation ignored): "
            "the last \\boxed{...}, else the text after the last 'Answer:' line, else the first sentence cut after "
            "its final 'is' or '='. 0 otherwise.",
            needs_answer=True,
        ),
        RewardSpec(
            "contains_answer",
            "1 when the row's answer appears as whole words in the completion (in its final answer when it has a "
            "\\boxed{...} or an 'Answer:' line; case, spaces and punctuation ignored). 0 otherwise.",
            needs_answer=True,
        ),
        RewardSpec(
            "number_match",
            "1 when the last number in the completion's final answer equals the answer's number within "
            "reward_number_tolerance (commas and a trailing % are read as in 1,234 and 50%). 0 otherwise.",
            needs_answer=True,
        ),
        RewardSpec(
            "format_regex",
            "1 when the completion matches the regular expression reward_format_regex (searched anywhere, `.` also "
            "matches newlines; anchor it with ^ and $ to require the whole completion), e.g. a reasoning/answer "
            "layout. 0 otherwise.",
        ),
        RewardSpec(
            "length",
            "Closeness to reward_length_target tokens: 1 at the target, falling linearly to 0 at zero tokens or at "
            "twice the target (penalizes rambling and empty answers).",
        ),
        RewardSpec(
            "json_valid",
            "1 when the completion (or a ```json block in it) parses as JSON; with reward_json_keys, the share of "
            "those keys the parsed object has (1 only with all of them).",
        ),
        RewardSpec(
            CUSTOM,
            "Your Python file (reward_custom_file) with `def reward(completions, **columns) -> list[float]`: one "
            "number per completion (texts); columns are prompts, answer and every other data column, one value per "
            f"completion. It runs code: allowed from the CLI, in the app only when started with {CUSTOM_FLAG}.",
        ),
    )
}


# --- the reward_functions knob ----------------------------------------------------------------------
def parse_reward_functions(spec: str) -> tuple[list[tuple[str, float]], list[str]]:
    """`contains_answer, format_regex:0.5` -> ([(name, weight)], problems). Weight 1 when not given."""
    items, problems = [], []
    for part in re.split(r"[,\s]+", (spec or "").strip().strip("[]")):
        part = part.strip().strip("'\"")
        if not part:
            continue
        name, sep, weight_text = part.partition(":")
        name = name.strip().lower()
        weight = 1.0
        if sep:
            try:
                weight = float(weight_text)
            except ValueError:
                problems.append(f"reward_functions: the weight of {name} must be a number, got {shown(weight_text)}")
                continue
            if not math.isfinite(weight) or abs(weight) > MAX_WEIGHT:
                problems.append(f"reward_functions: the weight of {name} must be a number within ±{MAX_WEIGHT:g}")
                continue
        if name not in READY:
            import difflib

            hint = difflib.get_close_matches(name, list(READY), n=1)
            problems.append(
                f"reward_functions: {shown(name)} is not a reward function"
                + (f" (did you mean '{hint[0]}'?)" if hint else "")
                + f"; choose from {', '.join(READY)}"
            )
            continue
        if any(existing == name for existing, _ in items):
            problems.append(f"reward_functions: {name} is named twice")
            continue
        items.append((name, weight))
    return items, problems


def reward_problems(config: Any) -> list[str]:
    """What is wrong with a GRPO config's reward settings (called by RunConfig.validate for objective grpo)."""
    items, problems = parse_reward_functions(config.reward_functions)
    names = [name for name, _ in items]
    if not items and not problems:
        problems.append(f"reward_functions: name at least one reward function for grpo ({', '.join(READY)})")
    if items and all(weight == 0 for _, weight in items):
        problems.append("reward_functions: every weight is 0, so nothing is rewarded")
    if "format_regex" in names:
        pattern = config.reward_format_regex
        if not pattern.strip():
            problems.append("reward_format_regex: format_regex needs a pattern, e.g. ^<think>.*</think>\\s*\\S")
        elif len(pattern) > MAX_REGEX_CHARS:
            problems.append(f"reward_format_regex: at most {MAX_REGEX_CHARS} characters")
        else:
            try:
                re.compile(pattern)
            except re.error as exc:
                problems.append(f"reward_format_regex: {shown(pattern)} is not a valid regular expression ({exc})")
    if "length" in names and config.reward_length_target < 1:
        problems.append(f"reward_length_target: must be at least 1 token, got {config.reward_length_target}")
    if config.reward_number_tolerance < 0:
        problems.append(f"reward_number_tolerance: must not be negative, got {config.reward_number_tolerance}")
    custom_file = config.reward_custom_file.strip()
    if CUSTOM in names and not custom_file:
        problems.append(
            "reward_custom_file: the custom reward needs a Python file with def reward(completions, **columns)"
        )
    if custom_file and CUSTOM not in names:
        problems.append("reward_custom_file: set, but reward_functions does not name custom: add custom to use it")
    return problems


def uses_custom_code(config: Any) -> bool:
    """True when the config would run a custom reward file (what the app refuses without its host's flag)."""
    return config.objective == "grpo" and (
        bool(config.reward_custom_file.strip())
        or CUSTOM in [n for n, _ in parse_reward_functions(config.reward_functions)[0]]
    )


def needs_answer(config: Any) -> list[str]:
    """The chosen reward functions that compare against the `answer` column."""
    return [name for name, _ in parse_reward_functions(config.reward_functions)[0] if READY[name].needs_answer]

"""The ready GRPO reward functions, the reward_functions knob and the custom reward file: what each rewards,
and that a failing reward function names itself and the row."""

from __future__ import annotations

import pytest

from finetune.config import RunConfig
from finetune.errors import ConfigError
from finetune.reward_spec import RewardError, parse_reward_functions
from finetune.train.answers import final_answer, parse_number
from finetune.train.rewards import build_reward_functions, score_completions


def grpo(**changes) -> RunConfig:
    return RunConfig(objective="grpo", per_device_train_batch_size=8, gradient_accumulation_steps=1, **changes)


def rewards(config: RunConfig, completions: list, **columns) -> dict[str, list[float]]:
    functions, _ = build_reward_functions(config)
    n = len(completions)
    columns.setdefault("source_row", list(range(1, n + 1)))
    ids = columns.pop("completion_ids", [[0] * 5] * n)
    return {f.__name__: f(prompts=["q"] * n, completions=completions, completion_ids=ids, **columns) for f in functions}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The capital of France is Paris.", "Paris."),
        ("17 plus 4 is 21. And then 5.", "21."),
        ("Let me think. \\boxed{\\frac{1}{2}} done", "\\frac{1}{2}"),
        ("steps...\nAnswer: 42\nmore", "42"),
        ("reasoning\nFinal answer:\nLima", "Lima"),
        ("<think>the answer is 7</think>8", "8"),
        ("Paris", "Paris"),
    ],
)
def test_final_answer(text, expected):
    assert final_answer(text)[0] == expected


def test_exact_and_contains_answer_normalize_case_spaces_and_punctuation():
    config = grpo(reward_functions="exact_answer, contains_answer")
    completions = ["The capital of France is  PARIS!", "Paris is lovely", "Parisian food", "Answer: Rome (not Paris)"]
    got = rewards(config, completions, answer=["Paris"] * 4)
    assert got["exact_answer"] == [1.0, 0.0, 0.0, 0.0]
    # whole words only, and an Answer: line is where the answer is looked for
    assert got["contains_answer"] == [1.0, 1.0, 0.0, 1.0]
    chat = [[{"role": "assistant", "content": "it is Lima."}]]  # chat prompts give one-message completions
    assert rewards(config, chat, answer=["lima"]) == {"exact_answer": [1.0], "contains_answer": [1.0]}


def test_number_match_reads_the_last_number_within_the_tolerance():
    config = grpo(reward_functions="number_match", reward_number_tolerance=0.01)
    completions = ["3 apples and 1,234 pears", "about 1234.005", "\\boxed{1233}", "no number", "Answer: 50%"]
    got = rewards(config, completions, answer=["1234", "1,234", "1234", "1234", "50"])
    assert got["number_match"] == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert parse_number("-2.5e3 or .5") == 0.5 and parse_number("none") is None


def test_format_regex_length_and_json():
    config = grpo(
        reward_functions="format_regex, length, json_valid",
        reward_format_regex=r"^<think>.*</think>\s*\S",
        reward_length_target=10,
        reward_json_keys="name, age",
    )
    completions = ["<think>a\nb</think> 42", 'x ```json\n{"name": "A", "age": 3}\n```', '{"name": "B"}', "[1, 2]"]
    ids = [[0] * 10, [0] * 5, [0] * 20, [0] * 0]
    got = rewards(config, completions, completion_ids=ids)
    assert got["format_regex"] == [1.0, 0.0, 0.0, 0.0]
    assert got["length"] == [1.0, 0.5, 0.0, 0.0]
    assert got["json_valid"] == [0.0, 1.0, 0.5, 0.0]


def test_weights_make_the_total_as_in_training():
    config = grpo(reward_functions="contains_answer:2, length:0.5", reward_length_target=4)
    functions, weights = build_reward_functions(config)
    rows = [{"prompt": "q", "answer": "Lima", "source_row": 3}]
    (scores,) = score_completions(functions, weights, rows, ["Lima"], [4])
    assert scores == {"contains_answer": 1.0, "length": 1.0, "reward": 2.5}


def test_reward_functions_knob_problems_are_named():
    items, problems = parse_reward_functions("contains_answer, format_regex:0.5, length:2")
    assert items == [("contains_answer", 1.0), ("format_regex", 0.5), ("length", 2.0)] and not problems
    problems = grpo(reward_functions="contain_answer, length:x, length", reward_format_regex="(").validate()
    text = "\n".join(problems)
    assert "did you mean 'contains_answer'" in text and "weight of length must be a number" in text
    assert "reward_format_regex" not in text  # not chosen: its pattern is not checked
    problems = grpo(reward_functions="format_regex", reward_format_regex="(").validate()
    assert any("reward_format_regex" in p and "not a valid regular expression" in p for p in problems)
    assert any("custom reward needs" in p for p in grpo(reward_functions="custom").validate())
    assert any("does not name custom" in p for p in grpo(reward_custom_file="r.py").validate())
    assert RunConfig(reward_functions="nonsense").validate() == []  # only checked for objective grpo


def test_custom_reward_file(tmp_path):
    file = tmp_path / "my_reward.py"
    file.write_text(
        "def reward(completions, answer, task, **columns):\n"
        "    return [float(len(c) < 10) + (task[i] == 'sum') for i, c in enumerate(completions)]\n"
    )
    config = grpo(reward_functions="custom", reward_custom_file=str(file))
    got = rewards(config, ["short", "a much longer completion"], answer=["1", "2"], task=["sum", "capital"])
    assert got["custom"] == [2.0, 0.0]
    bad = tmp_path / "none.py"
    bad.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="defines no function `reward"):
        build_reward_functions(grpo(reward_functions="custom", reward_custom_file=str(bad)))
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_here\n")
    with pytest.raises(ConfigError, match="broken.py failed to load: ModuleNotFoundError"):
        build_reward_functions(grpo(reward_functions="custom", reward_custom_file=str(broken)))


def test_an_error_inside_a_reward_function_names_the_function_and_the_row(tmp_path):
    file = tmp_path / "picky.py"
    file.write_text(
        "def reward(completions, answer, **columns):\n"
        "    return [1.0 / (a != 'Lima') for a in answer]\n"  # ZeroDivisionError on the Lima row
    )
    config = grpo(reward_functions="custom", reward_custom_file=str(file))
    with pytest.raises(RewardError) as info:
        rewards(config, ["x", "y"], answer=["Paris", "Lima"], source_row=[7, 12])
    message = str(info.value)
    assert "'custom (picky.py)' failed" in message and "ZeroDivisionError" in message
    nan = tmp_path / "nan.py"
    nan.write_text("def reward(completions, **columns):\n    return [0.0, float('nan')]\n")
    config = grpo(reward_functions="custom", reward_custom_file=str(nan))
    with pytest.raises(RewardError, match=r"on row 12 \(prompt 'q'\): it returned 'nan', not a finite number"):
        rewards(config, ["x", "y"], source_row=[7, 12])
    # a ready function whose answer holds no number says which row
    with pytest.raises(RewardError, match="'number_match' failed on row 12 .*holds no number"):
        rewards(grpo(reward_functions="number_match"), ["1", "2"], answer=["3", "three"], source_row=[7, 12])

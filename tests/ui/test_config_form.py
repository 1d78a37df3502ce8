"""The Advanced form hands the engine what was typed: a rank of 1.5 is refused as the CLI refuses it (never
rounded to 2), and a 5,000-digit number in any field is a message naming the field, never a crash of the
form, its command line or the config's checks."""

from __future__ import annotations

import pytest

import ui.config_form as form
from finetune.config import RunConfig
from finetune.errors import ConfigError
from finetune.launch_commands import train_command_lines


def _values(**typed) -> list:
    values = list(form.values_from_config(RunConfig()))
    names = form.field_names()
    for name, value in typed.items():
        values[names.index(name)] = value
    return values


def test_a_fractional_rank_is_refused_like_the_cli_refuses_it():
    with pytest.raises(ConfigError) as caught:
        form.config_from_values(_values(lora_r=1.5))
    assert caught.value.problems == ["lora_r: expected a whole number, got 1.5"]
    with pytest.raises(ConfigError, match="lora_r: expected a whole number, got 1.5"):
        RunConfig().with_overrides(["lora_r=1.5"])
    assert form.config_from_values(_values(lora_r=16.0)).lora_r == 16  # a whole number typed as 16.0 is 16
    component = form._component("lora_r", form.field_help()["lora_r"], 16)
    assert component.precision is None  # the browser sends what was typed: no rounding before the engine


@pytest.mark.parametrize(
    "name", [n for n in form.field_names() if form.field_type(n) in ("int", "float", "str", "dict")]
)
def test_a_five_thousand_digit_number_in_any_field_is_a_message(name):
    typed = 10**5000 if form.field_type(name) in ("int", "float") else "9" * 5000
    try:
        config = form.config_from_values(_values(**{name: typed}))
    except ConfigError as exc:
        assert any(problem.startswith(name) for problem in exc.problems), exc.problems
        return
    train_command_lines(config, None)  # the equivalent command line is drawn without a crash
    problems = config.validate()
    if form.field_type(name) in ("int", "float"):
        assert any(problem.startswith(f"{name}:") for problem in problems), problems

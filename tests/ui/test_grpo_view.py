"""The GRPO views' pure parts: weights <-> the reward_functions field, the completions table, the charts."""

from __future__ import annotations

from ui import charts
from ui.grpo_view import samples_table, spec_from_weights, weights_from_spec

NAMES = ["exact_answer", "contains_answer", "format_regex", "custom"]


def test_weights_and_the_reward_functions_field_round_trip():
    assert weights_from_spec("contains_answer, format_regex:0.5", NAMES) == [0.0, 1.0, 0.5, 0.0]
    assert spec_from_weights(NAMES, [0, 1, 0.5, None]) == "contains_answer, format_regex:0.5"
    assert spec_from_weights(NAMES, [2, 0, 0, 1]) == "exact_answer:2, custom"
    assert weights_from_spec(spec_from_weights(NAMES, [1, 0, 3, 0]), NAMES) == [1.0, 0.0, 3.0, 0.0]


def test_samples_table_shows_each_function_when_there_are_several():
    records = [
        {
            "row": 3,
            "prompt": "q",
            "completion": "c",
            "answer": "a",
            "rewards": {"contains_answer": 1.0, "length": 0.25},
            "reward": 1.25,
        },
    ]
    table = samples_table(records)
    assert list(table.columns) == ["row", "prompt", "completion", "answer", "reward", "contains_answer", "length"]
    assert table.iloc[0]["reward"] == 1.25
    assert list(samples_table([]).columns) == ["row", "prompt", "completion", "answer", "reward"]


def test_grpo_runs_get_reward_charts():
    metrics = [
        {"step": s, "reward": 0.1 * s, "reward_std": 0.4, "frac_reward_zero_std": 0.2, "rewards/contains_answer/mean": 0.1 * s,
         "rewards/length/mean": 0.5, "completions/mean_length": 20.0, "completions/clipped_ratio": 0.9,
         "clip_ratio/region_mean": 0.0, "kl": 0.01 * s}
        for s in (1, 2, 3)
    ]  # fmt: skip
    figs = charts.training_figures(metrics, "run")
    assert figs["loss"].layout.title.text == "Mean reward and each function's"
    assert {t.name for t in figs["loss"].data} == {"mean reward", "contains_answer", "length"}
    assert figs["lr"].layout.title.text.startswith("Reward std")
    assert figs["grad"].layout.title.text == "Completion length"
    assert figs["acc"].layout.title.text == "KL and clipped ratio"
    no_kl = [{k: v for k, v in m.items() if k != "kl"} for m in metrics]
    assert charts.training_figures(no_kl)["acc"].layout.title.text.startswith("Clipped ratio (no KL term")
    assert charts.reward_functions_of(metrics) == ["contains_answer", "length"]
    # an SFT run keeps its charts
    assert charts.training_figures([{"step": 1, "loss": 2.0}])["grad"].layout.title.text == "Gradient norm"


def test_a_prompt_row_shows_its_prompt_answer_and_columns():
    from ui.grpo_view import prompt_row_html

    rendered = {
        "prompt_row": {
            "prompt_text": "<|im_start|>user\nWhat is 2 plus 2?<|im_end|>\n<|im_start|>assistant\n",
            "prompt_tokens": 14,
            "answer": "4",
            "columns": {"task": "sum <b>"},
            "source_row": 3,
        }
    }
    html = prompt_row_html(rendered)
    assert "prompt 14 tokens" in html and "nothing of this row carries loss" in html
    assert "&lt;|im_start|&gt;user" in html and ">4</pre>" in html and "sum &lt;b&gt;" in html
    rendered["prompt_row"]["answer"] = None
    assert "(no answer column)" in prompt_row_html(rendered)

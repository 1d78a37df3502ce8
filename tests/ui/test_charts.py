"""UI helpers without a server: figures, the Train tab's poll, the config form, Markdown safety."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ui import charts  # noqa: E402

METRICS = [
    {"step": 2, "loss": 3.0, "learning_rate": 1e-4, "grad_norm": 1.5, "mean_token_accuracy": 0.1},
    {"step": 4, "loss": 2.5, "learning_rate": 2e-4, "grad_norm": 1.2, "mean_token_accuracy": 0.2},
    {"step": 4, "eval_loss": 2.7, "eval_mean_token_accuracy": 0.15},
    {"step": 6, "loss": 2.0, "learning_rate": 1e-4, "grad_norm": 0.9, "mean_token_accuracy": 0.3},
]


def test_ema_is_debiased_and_smooth():
    assert charts.ema([5.0]) == [5.0]
    smoothed = charts.ema([1.0, 3.0, 1.0, 3.0])
    assert smoothed[0] == 1.0 and 1.0 < smoothed[-1] < 3.0


def test_loss_figure_has_raw_smoothed_eval_and_constant_uirevision():
    fig = charts.loss_figure(METRICS, "run-a")
    names = [t.name for t in fig.data]
    assert names == ["train (raw)", "train (smoothed)", "eval"]
    assert list(fig.data[0].x) == [2, 4, 6] and list(fig.data[2].y) == [2.7]
    assert fig.layout.uirevision == "run-a-loss"
    assert charts.loss_figure(METRICS + [{"step": 8, "loss": 1.0}], "run-a").layout.uirevision == "run-a-loss"


def test_training_figures_skip_gpu_memory_on_cpu():
    figs = charts.training_figures(METRICS, "r")
    assert figs["mem"] is None
    gpu = charts.training_figures([{**m, "cuda_mem_allocated_gb": 1.5} for m in METRICS], "r")
    assert gpu["mem"] is not None and gpu["mem"].data[0].name == "allocated"
    assert [t.name for t in figs["acc"].data] == ["train", "eval"]


def test_series_ignores_nan_and_missing():
    xs, ys = charts.series([{"step": 1, "loss": float("nan")}, {"step": 2, "loss": 1.0}, {"step": 3}], "loss")
    assert (xs, ys) == ([2], [1.0])


def test_histogram_marks_percentiles_and_max_length():
    from finetune.data import length_stats

    stats = length_stats([10, 20, 30, 40, 200], 64)
    fig = charts.length_histogram(stats, 64)
    labels = [t.name for t in fig.data if t.showlegend is not False]
    assert [label.split()[0] for label in labels] == ["p50", "p95", "p99", "max_length"]
    assert "max_length 64" in labels and len(fig.layout.shapes) == 4  # four lines drawn
    far = charts.length_histogram(stats, 100_000)  # off the chart: named in the legend, axis not squashed
    assert any("beyond the longest example" in t.name for t in far.data if t.name)
    assert len(far.layout.shapes) == 3 and far.layout.xaxis.range[1] < 1000


def test_overlay_and_memory_breakdown():
    fig = charts.overlay_figure({"a": METRICS, "b": METRICS})
    assert [t.name for t in fig.data] == ["a", "a (eval)", "b", "b (eval)"]
    bars = charts.memory_breakdown_figure({"base_weights": 1.0, "activations": 0.5}, 1.5, 8.0)
    assert len(bars.data) == 2 and bars.layout.barmode == "stack"


def test_config_form_roundtrip_and_problems():
    from finetune.config import RunConfig, field_help
    from finetune.errors import ConfigError
    from finetune.launch_commands import train_command_lines
    from ui.config_form import config_from_values, field_names, values_from_config

    cfg = RunConfig(max_steps=30, bf16=False, column_mapping={"instruction": "q"}, logging_steps=0.5)
    assert config_from_values(values_from_config(cfg)) == cfg
    assert field_names() == list(field_help())
    values = values_from_config(cfg)
    values[field_names().index("max_steps")] = None
    values[field_names().index("column_mapping")] = "{not: [valid"
    with pytest.raises(ConfigError) as err:
        config_from_values(values)
    assert "max_steps" in str(err.value) and "column_mapping" in str(err.value)
    text = train_command_lines(cfg)
    assert "finetune train --config" in text and "--set max_steps=30" in text and "--set bf16=false" in text


def test_markdown_escape():
    from ui.state import md_error, md_escape

    assert md_escape("<script>x</script>") == "&lt;script&gt;x&lt;/script&gt;"
    assert md_escape("a_b*c*[l](u)") == "a\\_b\\*c\\*\\[l\\](u)"
    text = md_error("Invalid settings:\n  - lr: bad\n  - x: <b>", "Nope")
    assert "**Nope:**" in text and "- lr: bad" in text and "<b>" not in text


def test_segments_html_escapes_everything():
    from ui.data_view import segments_html

    html = segments_html(
        {
            "segments": [("<|im_start|>user\n<b>hi</b>", False), ("ok & done", True)],
            "num_tokens": 5,
            "trained_tokens": 2,
        }
    )
    assert "<b>hi</b>" not in html and "&lt;b&gt;hi&lt;/b&gt;" in html
    assert '<span class="seg-trained">ok &amp; done</span>' in html
    assert '<span class="seg-masked">&lt;|im_start|&gt;user' in html


def test_poll_sends_nothing_when_nothing_changed(workspace):
    """The Train tab's 1 s poll: full curve on (re)attach, then gr.skip() for everything until new points."""
    from finetune.config import RunConfig
    from finetune.runs import create_run
    from finetune.studio import Studio
    from ui.state import Ctx, Selection
    from ui.train_tab import tick

    run = create_run(RunConfig(run_name="polled"), workspace)
    for m in METRICS:
        run.append_metrics(m)
    run.write_status("done", "Finished", step=6, total_steps=6)
    ctx = Ctx(studio=Studio(workspace))
    first = tick(ctx, Selection("polled"), 0, "")
    assert first["drawn"] == len(METRICS)
    assert first["plot_loss"].layout.uirevision == "polled-loss"
    assert "done" in first["train_status"]
    assert tick(ctx, Selection("polled"), first["drawn"], first["sig"]) == {}  # nothing is sent
    # a new point (e.g. a resumed run) is drawn again, with the whole curve
    run.append_metrics({"step": 8, "loss": 1.5})
    run.write_status("training", "Training", step=8, total_steps=10, pid=None)
    later = tick(ctx, Selection("polled"), first["drawn"], first["sig"])
    assert later["drawn"] == len(METRICS) + 1
    assert list(later["plot_loss"].data[0].x) == [2, 4, 6, 8]


def test_histogram_labels_sit_in_the_legend_below_the_chart_and_the_title_names_what_was_measured():
    from ui.charts import length_histogram

    stats = {"lengths": [30, 35, 40, 45, 50, 52], "p50": 42.5, "p95": 51.5, "p99": 51.9}
    for max_length in (48, 256):  # inside the data, and far beyond it
        fig = length_histogram(stats, max_length, "text")
        assert not fig.layout.annotations  # no label inside the plot, where it could cover another or the bars
        assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0
        assert len([t for t in fig.data if t.showlegend is not False]) == 4
    assert "plain text" in fig.layout.title.text and "chat template" not in fig.layout.title.text
    assert "chat template applied" in length_histogram(stats, 256, "conversational").layout.title.text


PREFERENCE_METRICS = [
    {"step": 1, "loss": 0.69, "learning_rate": 1e-4, "rewards/chosen": 0.0, "rewards/rejected": 0.0,
     "rewards/margins": 0.0, "rewards/accuracies": 0.0},
    {"step": 2, "loss": 0.5, "learning_rate": 1e-4, "rewards/chosen": 0.2, "rewards/rejected": -0.5,
     "rewards/margins": 0.7, "rewards/accuracies": 0.75},
    {"step": 2, "eval_loss": 0.55, "eval_rewards/chosen": 0.1, "eval_rewards/rejected": -0.4,
     "eval_rewards/margins": 0.5, "eval_rewards/accuracies": 0.7},
]  # fmt: skip


def test_preference_runs_chart_rewards_margins_and_reward_accuracy():
    figs = charts.training_figures(PREFERENCE_METRICS, "dpo-run")
    rewards, margins = figs["grad"], figs["acc"]
    assert rewards.layout.title.text == "Rewards: chosen vs rejected"
    assert [t.name for t in rewards.data] == ["chosen", "eval chosen", "rejected", "eval rejected"]
    assert list(rewards.data[2].y) == [0.0, -0.5] and list(rewards.data[3].y) == [-0.4]
    assert margins.layout.title.text == "Reward margin and accuracy"
    names = [t.name for t in margins.data]
    assert names == ["margin", "eval margin", "reward accuracy", "eval reward accuracy"]
    assert margins.data[2].yaxis == "y2" and margins.layout.yaxis2.tickformat == ".0%"
    # an SFT run keeps gradient norm and token accuracy; a KTO run (no accuracy) draws its margins only
    assert charts.training_figures(METRICS)["grad"].layout.title.text == "Gradient norm"
    kto = [{k: v for k, v in m.items() if "accuracies" not in k} for m in PREFERENCE_METRICS]
    assert [t.name for t in charts.training_figures(kto)["acc"].data] == ["margin", "eval margin"]


def test_pair_preview_shows_prompt_and_both_answers_escaped():
    from ui.data_view import pair_html

    rendered = {
        "num_tokens": 12,
        "pair": {
            "prompt_text": "<|im_start|>user\nQ<|im_end|>",
            "prompt_tokens": 5,
            "answers": [
                {"name": "chosen", "text": "<b>A</b>", "tokens": 3},
                {"name": "rejected", "text": "B", "tokens": 7},
            ],
            "label": None,
        },
    }
    out = pair_html(rendered)
    assert 'id="data-pair"' in out and "chosen · 3 tokens" in out and "rejected · 7 tokens" in out
    assert "&lt;b&gt;A&lt;/b&gt;" in out and "&lt;|im_start|&gt;user" in out and "<b>A" not in out
    assert "prompt + the longer answer: 12 tokens" in out


GRPO_METRICS = [
    {"step": 1, "loss": 0.0, "reward": 0.4, "reward_std": 0.2, "rewards/contains_answer/mean": 0.4,
     "completions/mean_length": 20.0, "completions/clipped_ratio": 0.5, "kl": 0.0, "learning_rate": 1e-3,
     "tokens_per_s": 50.0},
    {"step": 2, "loss": 0.0, "reward": 0.6, "reward_std": 0.1, "rewards/contains_answer/mean": 0.6,
     "completions/mean_length": 18.0, "completions/clipped_ratio": 0.25, "kl": 0.01, "learning_rate": 1e-3,
     "tokens_per_s": 55.0},
]  # fmt: skip


@pytest.mark.parametrize("metrics", [METRICS, PREFERENCE_METRICS, GRPO_METRICS], ids=["sft", "dpo", "grpo"])
def test_every_objective_draws_every_chart_of_the_train_tab(metrics, workspace):
    """The Train tab's poll draws all its plots for any objective (a GRPO run once lacked the speed chart,
    and every poll of a training GRPO run failed)."""
    from helpers_runs import make_run

    from ui.train_tab import PLOT_KEYS, figures

    run = make_run(workspace, run_name="charted", with_adapter=False)
    for record in metrics:
        run.append_metrics(record)
    assert set(figures(run, run.name)) == set(PLOT_KEYS)

"""The Train tab's poll (ui/train_tab.py) on real run folders: charts follow the run shown,
the history follows a training run, and only a run with a checkpoint is offered Resume."""

from __future__ import annotations

from helpers_runs import make_run

from finetune.studio import Studio
from ui.history_view import STATE_COLUMN, history_rows
from ui.state import Ctx, Selection
from ui.train_tab import status_md, tick


def _tick(ctx, watched, drawn, sig) -> dict:
    return tick(ctx, Selection(watched), drawn, sig, 0.0)


def test_charts_follow_a_new_run_even_after_a_stale_poll(workspace):
    old = make_run(workspace, run_name="old", with_adapter=False)
    for step in range(3, 9):  # the old run has more points than the new one
        old.append_metrics({"step": step, "epoch": 1.0, "loss": 2.0})
    new = make_run(workspace, run_name="new", with_adapter=False)
    ctx = Ctx(studio=Studio(workspace))
    # a poll in flight when Start was pressed answers for the old run: its count and signature win the race
    stale = _tick(ctx, "old", 0, "")
    assert stale["drawn"] == old.metrics_count() > new.metrics_count()
    out = _tick(ctx, "new", stale["drawn"], stale["sig"])
    assert "plot_loss" in out, "the charts kept the previous run"
    assert out["drawn"] == new.metrics_count()
    assert out["sig"].startswith("new|")


def test_history_shows_the_live_progress_of_a_training_run(workspace):
    make_run(workspace, run_name="live", with_adapter=False)  # status.json: training, step 2
    ctx = Ctx(studio=Studio(workspace))
    rows = history_rows(ctx, live={"run": "live", "state": "training", "step": 50, "total_steps": 156})
    assert rows[0][0] == "live" and rows[0][STATE_COLUMN] == "training" and rows[0][STATE_COLUMN + 1] == "50/156"
    assert history_rows(ctx)[0][STATE_COLUMN + 1] == "2/2"
    assert history_rows(ctx, query="live training")[0][0] == "live"
    assert history_rows(ctx, query="no-such-word") == []


def test_resume_is_offered_only_with_a_checkpoint():
    failed = {"state": "failed", "message": "no usable rows"}
    assert "Resume" in status_md("r", failed, resumable=True)
    text = status_md("r", failed, resumable=False)
    assert "Resume" not in text and "Start training" in text


def test_rename_and_delete_are_offered_only_for_a_run_that_is_not_training(workspace):
    from ui.train_tab import buttons

    ctx = Ctx(studio=Studio(workspace))
    _, idle = buttons(ctx, "r", {"state": "done", "resumable": False}, {})
    assert idle["rename_btn"].interactive and idle["delete_btn"].interactive
    _, busy = buttons(ctx, "r", {"state": "training"}, {})
    assert not busy["rename_btn"].interactive and not busy["delete_btn"].interactive
    _, none = buttons(ctx, None, None, {})
    assert not none["rename_btn"].interactive and none["start_btn"].interactive


def test_the_bar_and_its_text_agree_and_a_finished_run_shows_its_total_time():
    from ui.train_tab import progress_html

    html = progress_html({"state": "training", "step": 0, "total_steps": 156, "fraction": 0.6, "elapsed": 5})
    assert 'data-fraction="0.0000"' in html and "width:0.0%" in html and "step 0 / 156 · 0%" in html
    done = progress_html({"state": "done", "step": 156, "total_steps": 156, "elapsed": 3725})
    assert "total time 1:02:05" in done and "width:100.0%" in done


def test_a_pick_and_the_run_lists_follow_one_selection(workspace):
    from ui import selection

    make_run(workspace, run_name="with-adapter")
    make_run(workspace, run_name="without", with_adapter=False)
    ctx = Ctx(studio=Studio(workspace))
    assert selection.pick(ctx, "without")["selected"] == Selection("without")
    shown = selection.show(ctx, Selection("without"), "with-adapter", None)
    assert shown["watch"].value == "without"
    assert shown["test_run"].value == "with-adapter"  # Test keeps a run it can judge
    assert [name for name, _ in shown["export_run"].choices] == ["with-adapter"]
    assert selection.show(ctx, Selection("with-adapter"), None, None)["test_run"].value == "with-adapter"

"""The Train tab's poll (ui/train_tab.py) on real run folders: charts follow the run shown,
the history follows a training run, and only a run with a checkpoint is offered Resume."""

from __future__ import annotations

from helpers_runs import make_run

from finetune.studio import Studio
from ui.history_view import STATE_COLUMN, history_rows
from ui.state import Ctx
from ui.train_tab import TICK_KEYS, status_md, tick


def _tick(ctx, watched, drawn, sig) -> dict:
    return dict(zip(TICK_KEYS, tick(ctx, watched, drawn, sig, 0.0)))


def _skipped(value) -> bool:
    return isinstance(value, dict) and value.get("__type__") == "update" and len(value) == 1


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
    assert not _skipped(out["plot_loss"]), "the charts kept the previous run"
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

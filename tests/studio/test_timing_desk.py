"""The timing desk: token lengths split as the run splits them, predictions that never raise, the
Space price presets, run records and tracker links."""

from __future__ import annotations

import pytest

from finetune.config import RunConfig
from finetune.studio import Studio


@pytest.fixture
def studio(workspace):
    return Studio.open(workspace, restrict_paths=False)


def test_token_lengths_follow_the_runs_split_and_objective(studio):
    train, held, label, pairs = studio.timing.token_lengths(RunConfig())
    assert len(train) == 99 and len(held) == 11 and "bundled sample" in label and not pairs
    train, held, label, pairs = studio.timing.token_lengths(RunConfig(objective="dpo"))
    assert "preference sample" in label and len(train) + len(held) > 0
    assert studio.timing.token_lengths(RunConfig(objective="kto"))[3]  # KTO on pairs: two completions each


def test_a_prediction_never_raises_and_says_why(studio, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{}\n")
    prediction = studio.timing.predict(RunConfig(dataset_path=str(bad)))
    assert prediction.estimate is None and "bad.jsonl" in prediction.why_not
    unknown = studio.timing.predict(RunConfig(model_name_or_path="/nowhere/model"))
    assert unknown.estimate is None and unknown.why_not


def test_an_uncalibrated_cpu_is_not_measured_when_asked_not_to(studio, monkeypatch):
    from finetune.plan import calibration
    from finetune.studio import timing

    # as if this CPU had never been measured (the session's tests share one calibration cache)
    for module in (calibration, timing):
        monkeypatch.setattr(module, "cached", lambda *a, **k: None)
    prediction = studio.timing.predict(RunConfig(), calibrate=False)
    assert prediction.estimate is None and "not calibrated" in prediction.why_not


def test_price_presets_only_on_a_space(studio, monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert studio.timing.price_presets() == []
    monkeypatch.setenv("SPACE_ID", "someone/finetune-studio")
    presets = studio.timing.price_presets()
    assert presets[0].flavor == "cpu-basic"  # this CPU machine looks like the basic CPU Space first
    four_l4 = next(p for p in presets if p.flavor == "l4x4")
    assert four_l4.price_per_hour == pytest.approx(3.80 / 4)  # per GPU hour


@pytest.mark.slow
def test_a_cpu_prediction_and_the_record_of_a_run(studio, trained_sft_run, copy_run):
    prediction = studio.timing.predict(RunConfig(max_steps=20))
    est = prediction.estimate
    assert est is not None and est.steps == 20 and est.throughput.measured and est.tokens > 0
    run = copy_run(trained_sft_run)
    record = studio.timing.record(run.name)
    assert record["predicted"]["predicted_steps"] == 30 and record["actual"]["steps"] == 30
    assert studio.timing.records()[run.name] == record
    assert studio.timing.tracker_links(run.name) == ("none", [])

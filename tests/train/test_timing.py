"""Predicted against actual in a real run (prediction.json, train.log), the live hardware use in
metrics.jsonl, and the record helpers."""

from __future__ import annotations

import json

import pytest

from finetune.train.timing import HardwareMeter, actual_record, comparison, read_record


@pytest.mark.slow
def test_a_finished_run_records_its_prediction_and_what_it_measured(trained_sft_run):
    record = read_record(trained_sft_run.path)
    predicted, actual = record["predicted"], record["actual"]
    assert predicted["predicted_steps"] == actual["steps"] == 30
    # the token count comes from the data's audit: the trainer counted the same tokens (within the last log's steps)
    assert actual["tokens"] == pytest.approx(predicted["predicted_tokens"], rel=0.1)
    assert predicted["predicted_seconds"] > 0 and actual["seconds"] > 0 and actual["cpu_seconds"] > 0
    assert predicted["throughput"]["measured"] and "measured on this CPU" in predicted["throughput"]["source"]
    assert actual["mean_achieved_gflops"] > 0 and "mean_mfu" not in actual  # CPU: GFLOP/s, no MFU
    log = trained_sft_run.log_path.read_text()
    assert "predicted: 30 steps" in log and "measured: 30 steps in" in log
    metrics = [m for m in trained_sft_run.metrics() if "tokens_per_s" in m]
    assert metrics and all(m["achieved_gflops"] > 0 and "mfu" not in m for m in metrics)


def test_meter_and_records():
    meter = HardwareMeter(flops_per_token=1e9, peak_flops_per_s=100e12, devices=2)
    assert meter.fields(1000) == {"achieved_gflops": 500.0, "mfu": 0.005}
    assert "mfu" not in HardwareMeter(1e9, None).fields(10)
    actual = actual_record(seconds=3600, cpu_seconds=3000, steps=10, tokens=7200, meter=meter, price=2.0)
    assert actual["tokens_per_s"] == 2.0 and actual["cost"] == 4.0 and actual["mean_mfu"] == pytest.approx(1e-5)
    assert comparison({"predicted": {"predicted_seconds": 10}, "actual": {"seconds": 12}})["error"] == pytest.approx(
        0.2
    )
    assert comparison({})["error"] is None


def test_unreadable_record_reads_as_none(tmp_path):
    (tmp_path / "prediction.json").write_text("{not json")
    assert read_record(tmp_path) == {}
    (tmp_path / "prediction.json").write_text(json.dumps([1, 2]))
    assert read_record(tmp_path) == {}

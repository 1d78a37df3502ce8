"""`finetune estimate --data FILE`: steps, tokens, predicted time and cost, as a table and as JSON."""

from __future__ import annotations

import json

import pytest

from finetune.cli.main import main
from finetune.demo import SAMPLES_DIR

SAMPLE = str(SAMPLES_DIR / "sample_chat.jsonl")


def estimate(capsys, *argv):
    code = main(["estimate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow  # the first call on a machine calibrates the CPU (seconds), then it is cached
def test_estimate_with_data_predicts_steps_tokens_time_and_cost(workspace, capsys):
    code, out, err = estimate(
        capsys, "--model", "demo", "--data", SAMPLE, "--device", "cpu", "--preset", "cpu", "--json",
        "--price-per-hour", "3.6",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["predicted_steps"] == 156  # 99 training rows (10% held out), batch 8, 12 epochs
    assert data["predicted_tokens"] > 0 and data["predicted_seconds"] > 0
    assert data["predicted_cost"] == pytest.approx(data["predicted_seconds"] / 3600 * 3.6, rel=2e-3)  # both 4 digits
    assert data["time"]["throughput"]["measured"] and "measured on this CPU" in data["time"]["throughput"]["source"]

    code, out, _ = estimate(capsys, "--model", "demo", "--data", SAMPLE, "--device", "cpu", "--preset", "cpu")
    assert code == 0
    assert "Time (99 training rows" in out and "156 steps" in out and "throughput: measured on this CPU" in out
    code, out, _ = estimate(capsys, "--model", "demo", "--data", SAMPLE, "--device", "cpu", "--json")
    assert json.loads(out)["predicted_cost"] is None  # no price, no cost


def test_estimate_for_a_named_gpu_says_its_efficiency_is_unmeasured(workspace, capsys):
    code, out, err = estimate(
        capsys, "--model", "demo", "--data", SAMPLE, "--device", "cuda", "--gpu", "A10G", "--gpu-gb", "24", "--json",
        "--price-per-hour", "36000",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)  # the demo trains in well under a second on a GPU: a high price shows the cost
    assert data["predicted_steps"] > 0
    assert data["predicted_cost"] == pytest.approx(data["time"]["predicted_seconds"] * 10, rel=0.05, abs=1e-3)
    assert "not yet measured on this GPU" in data["time"]["throughput"]["source"]
    assert data["time"]["predicted_mfu"] is not None


def test_estimate_with_unusable_data_names_the_file(workspace, capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    code, out, err = estimate(capsys, "--model", "demo", "--data", str(bad), "--device", "cpu")
    assert code == 0  # the memory estimate stands; the time says why there is none
    assert "Time: no prediction" in out and "bad.jsonl" in out
    code, _, err = estimate(capsys, "--model", "demo", "--device", "cpu", "--price-per-hour", "-1")
    assert code == 1 and "price_per_hour" in err

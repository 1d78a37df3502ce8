"""The CPU calibration run: the demo trained through the engine's builders, fitted and cached."""

from __future__ import annotations

import pytest

from finetune.config import RunConfig
from finetune.plan import calibration, detect_machine, load_shape, make_plan
from finetune.train import calibrate


@pytest.mark.slow
def test_calibration_measures_once_and_is_cached(workspace, demo_path, monkeypatch, tmp_path):
    config = RunConfig(method="dora")  # a kind of run no other test calibrates: measured here
    plan = make_plan(config, detect_machine(), model=str(demo_path))
    found = calibrate.cpu_throughput(tmp_path, config, plan, load_shape(str(demo_path)))
    assert found.flops_per_s > 1e8 and found.pass_s >= 0 and found.step_s >= 0 and found.measured
    entry = calibration.cached(tmp_path, config, plan)
    assert entry["took_s"] > 0 and entry["steps"]["long"] > entry["steps"]["short"] > 0
    assert "dora" in entry["kind"]

    def refuse(*_args, **_kwargs):
        raise AssertionError("measured again although cached")

    monkeypatch.setattr(calibrate, "measure", refuse)
    assert calibrate.cpu_throughput(tmp_path, config, plan, load_shape(str(demo_path))).flops_per_s == found.flops_per_s
    assert calibrate.cpu_throughput(tmp_path, config.replace(method="full", quantization="none"), plan, None,
                                    measure_missing=False) is None  # fmt: skip

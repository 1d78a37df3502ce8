"""The CPU calibration's fit, its cache key and how a stored calibration becomes a Throughput."""

from __future__ import annotations

import pytest

from finetune.config import RunConfig
from finetune.plan import Machine, calibration, load_shape, make_plan


def plan_for(config, threads=1):
    machine = Machine.virtual("cpu", cpu_count=2, load_average=2.0 if threads == 1 else 0.0)
    return make_plan(config, machine, model="qwen2.5-0.5b")


def test_fit_recovers_the_three_numbers():
    rate, pass_s, step_s = 12e9, 0.02, 0.01

    def seconds(flops, passes):
        return step_s + passes * pass_s + flops / rate

    phases = {
        "short": {"flops": 1e8, "passes": 1},
        "long": {"flops": 1.2e9, "passes": 1},
        "split": {"flops": 1e8, "passes": 2},
    }
    for phase in phases.values():
        phase["seconds"] = seconds(phase["flops"], phase["passes"])
    fitted = calibration.fit(phases)
    assert fitted["flops_per_s"] == pytest.approx(rate)
    assert fitted["pass_s"] == pytest.approx(pass_s)
    assert fitted["step_s"] == pytest.approx(step_s)
    phases["long"]["seconds"] = phases["short"]["seconds"]  # noise hid the difference: never a negative rate
    assert calibration.fit(phases)["flops_per_s"] > 0


def test_the_cache_is_per_machine_and_kind_of_run(tmp_path, monkeypatch):
    config = RunConfig()
    plan = plan_for(config)
    entry = {"flops_per_s": 1e10, "pass_s": 0.01, "step_s": 0.02, "cpu": "x", "threads": 1, "measured_at": 0}
    calibration.store(tmp_path, config, plan, entry)
    assert calibration.cached(tmp_path, config, plan)["flops_per_s"] == 1e10
    assert calibration.cached(tmp_path, config.replace(method="dora"), plan) is None  # another kind of run
    monkeypatch.setattr(calibration, "cpu_model", lambda: "another CPU")
    assert calibration.cached(tmp_path, config, plan) is None  # the machine changed: measured again


def test_a_calibration_scales_its_fixed_costs_to_the_model_and_says_so():
    entry = {"flops_per_s": 1e10, "pass_s": 0.01, "step_s": 0.02, "eval_pass_s": 0.005, "cpu": "x", "threads": 1}
    demo_like = calibration.throughput(entry, type("S", (), {"num_layers": 2})(), RunConfig())
    assert demo_like.pass_s == 0.01 and demo_like.measured and not demo_like.reasons
    big = calibration.throughput(entry, load_shape("qwen2.5-0.5b"), RunConfig())
    assert big.pass_s == pytest.approx(0.01 * 24 / 2) and "unmeasured for this model" in big.reasons[0]
    busy = calibration.throughput({**entry, "load_average": 5.0, "cores": 2}, demo_like, RunConfig())
    assert any("shared" in reason for reason in busy.reasons)

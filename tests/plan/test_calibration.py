"""The CPU calibration's fit, its cache key and how a stored calibration becomes a Throughput."""

from __future__ import annotations

import pytest

from finetune.config import RunConfig
from finetune.plan import Machine, calibration, load_shape, make_plan


def plan_for(config, threads=1):
    machine = Machine.virtual("cpu", cpu_count=2, load_average=2.0 if threads == 1 else 0.0)
    return make_plan(config, machine, model="qwen2.5-0.5b")


def test_fit_recovers_the_rates_and_fixed_costs():
    rate, attention_rate, pass_s, step_s = 12e9, 3e9, 0.02, 0.01

    def seconds(phase):
        return step_s + phase["passes"] * pass_s + phase["flops"] / rate + phase["attention"] / attention_rate

    phases = {
        "short": {"flops": 1e8, "attention": 1e6, "passes": 1},
        "long": {"flops": 1.2e9, "attention": 1e8, "passes": 1},
        "longest": {"flops": 2.4e9, "attention": 4e8, "passes": 1},
        "split": {"flops": 1e8, "attention": 0.5e6, "passes": 2},
    }
    for phase in phases.values():
        phase["seconds"] = seconds(phase)
    fitted = calibration.fit(phases)
    assert fitted["flops_per_s"] == pytest.approx(rate)
    assert fitted["attention_flops_per_s"] == pytest.approx(attention_rate)
    assert fitted["pass_s"] == pytest.approx(pass_s)
    assert fitted["step_s"] == pytest.approx(step_s)
    for phase in ("long", "longest"):  # noise hid the differences: one rate, never a negative one
        phases[phase]["seconds"] = phases["short"]["seconds"]
    fallback = calibration.fit(phases)
    assert fallback["flops_per_s"] > 0 and fallback["attention_flops_per_s"] == fallback["flops_per_s"]


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


def test_finished_runs_refine_a_calibration(tmp_path):
    config = RunConfig()
    plan = plan_for(config)
    entry = {"flops_per_s": 1e10, "pass_s": 0.01, "step_s": 0.02, "cpu": "x", "threads": 1, "measured_at": 0}
    calibration.store(tmp_path, config, plan, entry)
    calibration.refine(tmp_path, config, plan, measured_s=12.0, predicted_s=10.0)
    stored = calibration.cached(tmp_path, config, plan)
    assert stored["correction"] == pytest.approx(1.2)
    refined = calibration.throughput(stored, type("S", (), {"num_layers": 2})(), config)
    assert refined.flops_per_s == pytest.approx(1e10 / 1.2) and refined.pass_s == pytest.approx(0.012)
    assert "refined by 1 finished run" in refined.source
    # the next run was predicted with the refinement: its ratio is taken against the unrefined calibration
    calibration.refine(tmp_path, config, plan, measured_s=12.0, predicted_s=12.0)
    calibration.refine(tmp_path, config, plan, measured_s=100.0, predicted_s=12.0)  # one outlier
    assert calibration.cached(tmp_path, config, plan)["correction"] == pytest.approx(1.2)  # the median

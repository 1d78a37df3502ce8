"""predict_time: the workload priced on a throughput, evaluations, checkpoints and cost."""

from __future__ import annotations

import pytest

from finetune.config import RunConfig
from finetune.plan import Machine, load_shape, make_plan
from finetune.plan.prediction import computed_flops, format_seconds, predict_time, useful_flops
from finetune.plan.throughput import Throughput, flops_model, gpu_throughput
from finetune.plan.workload import plan_workload

SHAPE = "qwen2.5-0.5b"


def setup(machine, **changes):
    config = RunConfig(model_name_or_path=SHAPE, **changes)
    plan = make_plan(config, machine, model=load_shape(SHAPE))
    return config, plan, plan_workload([200] * 64, [200] * 8, config, plan)


def test_seconds_are_flops_over_the_rate_plus_the_fixed_costs():
    config, plan, work = setup(Machine.virtual("cpu", cpu_count=2), max_steps=10, eval_steps=5, save_steps=5)
    rate = Throughput("cpu", flops_per_s=1e11, pass_s=0.1, step_s=0.2, eval_pass_s=0.05, save_s=0.5, measured=True)
    est = predict_time(load_shape(SHAPE), config, plan, work, rate, price_per_hour=3.6)
    fm = flops_model(load_shape(SHAPE), config, plan)
    expected = computed_flops(fm, work.train) / 1e11 + 10 * 0.2 + work.train.micro_batches * 0.1
    assert est.train_seconds == pytest.approx(expected)
    assert work.eval_runs == 2 and est.eval_seconds > 2 * work.eval_per_run.micro_batches * 0.05
    assert work.saves == 2 and est.save_seconds > 2 * 0.5
    assert est.cost == pytest.approx(est.seconds / 3600 * 3.6)
    assert est.flops == pytest.approx(useful_flops(fm, work.train)) and est.mfu is None
    data = est.to_dict()
    assert {"predicted_steps", "predicted_tokens", "predicted_seconds", "predicted_cost"} <= set(data)
    assert data["predicted_steps"] == 10 and data["predicted_tokens"] == round(est.tokens)


def test_a_gpu_prediction_has_an_mfu_and_says_its_efficiency_is_unmeasured():
    machine = Machine.virtual("cuda", 80, gpu_name="NVIDIA H100 80GB HBM3")
    config, plan, work = setup(machine, max_steps=100, eval_steps=0, save_steps=1000, gradient_checkpointing=False)
    est = predict_time(load_shape(SHAPE), config, plan, work, gpu_throughput(machine))
    assert est.mfu == pytest.approx(0.25)  # padding-free, no recompute, no evaluation: the default efficiency
    assert est.cost is None and "not yet measured on this GPU" in dict(est.reasons)["throughput"]


def test_format_seconds():
    assert [format_seconds(s) for s in (4.25, 45, 200, 7800)] == ["4.2 s", "45 s", "3 min 20 s", "2 h 10 min"]

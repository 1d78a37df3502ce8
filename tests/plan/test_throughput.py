"""The FLOPs model of finetune.plan.throughput: the method, checkpointing and objective factors."""

from __future__ import annotations

import pytest

from finetune.config import OBJECTIVES, RunConfig
from finetune.plan import Machine, load_shape, make_plan
from finetune.plan.throughput import OBJECTIVE_COSTS, flops_model, gpu_throughput, objective_cost

SHAPE = "qwen2.5-0.5b"


def model(**changes):
    config = RunConfig(model_name_or_path=SHAPE, **changes)
    plan = make_plan(config, Machine.virtual("cuda", 80, gpu_name="NVIDIA H100 80GB HBM3"), model=load_shape(SHAPE))
    return flops_model(load_shape(SHAPE), config, plan)


def test_full_fine_tuning_is_6n_and_lora_4n_plus_adapters():
    shape = load_shape(SHAPE)
    counts = shape.param_counts()
    n = counts["linear"] + counts["bias"] + shape.vocab_size * shape.hidden_size
    full = model(method="full", quantization="none", gradient_checkpointing=False)
    lora = model(gradient_checkpointing=False)
    assert full.train_token(0) == pytest.approx(6 * n)
    assert 4 * n < lora.train_token(0) < 4.2 * n  # the adapters add a few percent
    assert full.train_token(1024) - full.train_token(0) == pytest.approx(3 * 4 * shape.num_layers * shape.q_dim * 1024)


def test_checkpointing_adds_a_forward_of_the_layers_but_not_to_the_useful_flops():
    off, on = model(gradient_checkpointing=False), model(gradient_checkpointing=True)
    assert on.train_token(512) == off.train_token(512)  # what MFU counts
    assert on.computed_token(512) - off.computed_token(512) == pytest.approx(
        on.layers_fwd + on.attention_fwd_per_ctx * 512
    )


def test_objectives_cost_more_than_sft_and_every_objective_has_a_row():
    assert set(OBJECTIVES) <= set(OBJECTIVE_COSTS)
    sft, dpo = model(gradient_checkpointing=False), model(objective="dpo", gradient_checkpointing=False)
    assert dpo.cost.sequences == 2 and dpo.computed_token(100) > sft.computed_token(100)  # the reference forward
    assert objective_cost(RunConfig(objective="orpo")).no_grad_forwards == 0  # no reference model
    assert model(method="dora", gradient_checkpointing=False).per_pass > 0
    assert model(gradient_checkpointing=False).per_pass == 0


def test_gpu_throughput_is_peak_times_a_stated_unmeasured_default():
    found = gpu_throughput(Machine.virtual("cuda", 24, gpu_name="NVIDIA A10G"))
    assert found.peak_flops_per_s == 70e12 and not found.measured
    assert "not yet measured on this GPU" in found.source and "Baseten" in found.source
    assert found.flops_per_s == pytest.approx(0.25 * 70e12)
    assert gpu_throughput(Machine.virtual("cuda", 24, gpu_name="Some Future GPU")) is None

"""GRPO's part of the plan and the memory estimate: the generation line, the eval batch of whole groups, and
memory that grows with the completions sampled."""

from __future__ import annotations

from finetune.config import RunConfig
from finetune.plan.hardware import Machine
from finetune.plan.planner import estimate, make_plan

GPU = Machine.virtual("cuda", 24)
MODEL = "qwen2.5-0.5b"


def grpo(**changes) -> RunConfig:
    base = dict(objective="grpo", per_device_train_batch_size=8, gradient_accumulation_steps=2, max_length=1024)
    return RunConfig(**{**base, **changes})


def test_the_plan_says_how_completions_are_sampled():
    plan = make_plan(grpo(per_device_eval_batch_size=12, num_generations=8), GPU, model=MODEL)
    decisions = {name: (value, why) for name, value, why in plan.decisions()}
    value, why = decisions["generation"]
    assert value.startswith("2 prompts x 8 completions per step, up to 64 new tokens at temperature 1")
    assert "vLLM" in why and "not installable" in why
    assert plan.eval_batch_size == 8 and "eval batch 8 (whole groups of 8)" in why
    assert "sample a group of 8 completions per prompt" in decisions["objective"][1]
    assert "no KL term" in decisions["objective"][1]
    assert "GRPO" in decisions["batches"][1] and not plan.padding_free and not plan.packing
    kl = {n: w for n, _, w in make_plan(grpo(kl_coef=0.04), GPU, model=MODEL).decisions()}["objective"]
    assert "KL to the base (adapter disabled" in kl
    assert "generation" not in {n for n, _, _ in make_plan(RunConfig(), GPU, model=MODEL).decisions()}


def test_memory_counts_the_sampled_completions():
    _, small = estimate(grpo(max_completion_length=64), GPU, model=MODEL)
    _, long = estimate(grpo(max_completion_length=512), GPU, model=MODEL)
    # one completion per forward pass, 256 sampled per step: sampling peaks above the training pass
    few = grpo(max_completion_length=512, per_device_train_batch_size=1, gradient_accumulation_steps=64)
    _, fewer = estimate(few, GPU, model=MODEL)
    _, many = estimate(few.replace(gradient_accumulation_steps=256), GPU, model=MODEL)
    assert "generation" in small.breakdown and small.inputs["objective"] == "grpo"
    assert long.breakdown["logits_loss"] > small.breakdown["logits_loss"]  # full logits over longer completions
    # a bigger generation batch (more prompts per step) holds a bigger KV cache while sampling
    assert many.breakdown["generation"] > fewer.breakdown["generation"] >= 0
    assert many.total_gb > fewer.total_gb
    assert any("grpo:" in note for note in small.notes)

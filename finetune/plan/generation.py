"""GRPO's part of the plan: how completions are sampled, what one optimizer step holds, the eval batch.

A step trains on per_device_train_batch_size x gradient_accumulation_steps x processes completions: that
many / num_generations prompts, each sampled num_generations times with transformers' `generate`, once
per step (TRL's steps_per_generation = the accumulation). vLLM generation is not offered: the newest vLLM
on the package registry (0.33.0) requires transformers < 5.21, and this project runs transformers 5.2x
(checked with pip's resolver, 2026-12). Evaluation samples num_generations completions per prompt too,
so its batch is rounded to whole groups.
"""

from __future__ import annotations

from dataclasses import replace

from finetune.config import RunConfig
from finetune.reward_spec import parse_reward_functions

VLLM_NOTE = "vLLM 0.33 (the newest) needs transformers < 5.21: not installable with our pins"


def prompts_per_step(config: RunConfig, plan) -> float:
    completions = plan.per_device_train_batch_size * plan.gradient_accumulation_steps * plan.machine.world_size
    return completions / config.num_generations


def grpo_objective_reason(config: RunConfig) -> str:
    """What each GRPO step computes, and where the KL reference comes from."""
    items, _ = parse_reward_functions(config.reward_functions)
    rewards = " + ".join(f"{w:g} x {n}" if w != 1 else n for n, w in items) or "none"
    if config.kl_coef == 0:
        reference = "no KL term (kl_coef 0): no reference pass"
    elif config.start_from_run.strip():
        reference = f"KL to the adapter of {config.start_from_run} (a frozen copy of the adapter only), kl_coef {config.kl_coef:g}"
    else:
        reference = f"KL to the base (adapter disabled, no second copy of the weights), kl_coef {config.kl_coef:g}"
    return (
        f"sample a group of {config.num_generations} completions per prompt, reward them ({rewards}), then one "
        f"policy forward and backward over prompt + completion, each advantage relative to its group; {reference}"
    )


def plan_generation(config: RunConfig, plan):
    """The plan with GRPO's generation line and its eval batch of whole groups."""
    groups = max(1, config.per_device_eval_batch_size // config.num_generations)
    eval_batch = groups * config.num_generations
    prompts = prompts_per_step(config, plan)
    generation = (
        f"{prompts:g} prompts x {config.num_generations} completions per step, up to {config.max_completion_length} "
        f"new tokens at temperature {config.temperature:g}, transformers generate"
    )
    why = f"TRL's GRPO generation; {VLLM_NOTE}"
    if eval_batch != config.per_device_eval_batch_size:
        why += f"; eval batch {eval_batch} (whole groups of {config.num_generations})"
    return replace(
        plan, eval_batch_size=eval_batch, generation=generation, reasons=plan.reasons + (("generation", why),)
    )


def grpo_memory_terms(shape, config: RunConfig, plan, ctx) -> tuple[float, float]:
    """(loss buffers of the training pass, peak of sampling) in bytes, for finetune.plan.memory.

    Training: TRL takes the full logits over each completion (batch x (max_completion_length + 1) x vocab in
    the compute dtype) and their fp32 log-softmax, not SFT's chunked LM head. Sampling (no grad, before the
    training pass): the KV cache of the whole generation batch (per_device_train_batch_size x accumulation
    sequences of max_length tokens), the last position's fp32 logits with their softmax, and one layer's MLP
    over the prompts. Not yet calibrated against a measured peak."""
    b = ctx.compute_bytes
    sequences = plan.per_device_train_batch_size
    completion_tokens = sequences * (config.max_completion_length + 1)
    loss = completion_tokens * shape.vocab_size * (b + 8) + ctx.tokens * shape.hidden_size * (4 + b)
    generating = plan.per_device_train_batch_size * plan.gradient_accumulation_steps
    kv_cache = generating * config.max_length * shape.num_layers * 2 * shape.kv_dim * b
    logits = generating * shape.vocab_size * 4 * 3
    prefill = generating * max(config.max_length - config.max_completion_length, 1) * shape.intermediate_size * b * 3
    return loss, kv_cache + logits + prefill


def prompts_per_step_of(config: RunConfig) -> float:
    """Prompts per optimizer step as configured (before the planner; num_gpus processes)."""
    completions = config.per_device_train_batch_size * config.gradient_accumulation_steps * max(config.num_gpus, 1)
    return completions / config.num_generations

"""The planner: every auto decision for a described machine (no patching), and the proof on CPU that
the GPU fast path (padding-free batches, re-split micro-batches) learns exactly what padded batches do."""

from __future__ import annotations

import json

import pytest

from finetune.config import RunConfig
from finetune.plan.hardware import Machine
from finetune.plan.planner import GC_HEADROOM, estimate, make_plan

CPU = Machine.virtual("cpu", cpu_count=2)
H200 = Machine.virtual("cuda", 139.8, gpu_name="NVIDIA H200", compute_capability=(9, 0))
SMALL_GPU = Machine.virtual("cuda", 0.5, gpu_name="tiny")


# --- decisions --------------------------------------------------------------------------------------


def test_cpu_plan():
    plan = make_plan(RunConfig(gradient_accumulation_steps=4), CPU, model="demo")
    assert plan.device == "cpu" and plan.dtype_name == "float32" and plan.attn_implementation == "sdpa"
    assert not plan.packing and not plan.padding_free and "slower" in plan.reason("batches")
    assert plan.sampler == "rebalance" and plan.train_sampling_strategy == "batch_rebalance"
    assert (plan.per_device_train_batch_size, plan.gradient_accumulation_steps) == (4, 4)
    assert not plan.gradient_checkpointing and not plan.use_liger_kernel
    assert make_plan(RunConfig(gradient_accumulation_steps=1), CPU).sampler == "random"


def test_cpu_threads_follow_the_load():
    busy = make_plan(RunConfig(), Machine.virtual("cpu", cpu_count=2, load_average=3.0))
    assert busy.cpu_threads == 1 and "other work keeps them busy" in busy.reason("threads")
    idle = make_plan(RunConfig(), Machine.virtual("cpu", cpu_count=2, load_average=0.2))
    assert idle.cpu_threads is None and ("threads", "torch's default", idle.reason("threads")) in idle.decisions()
    assert make_plan(RunConfig(), H200, model="demo").cpu_threads is None
    assert "threads" not in [name for name, _, _ in make_plan(RunConfig(), H200, model="demo").decisions()]


def test_gpu_plan_is_padding_free_and_merges_micro_batches():
    plan = make_plan(RunConfig(max_length=1024), H200, model="qwen2.5-0.5b", mean_tokens=515)
    assert plan.device == "cuda" and plan.bf16 and plan.dtype_name == "bfloat16"
    assert plan.padding_free and not plan.packing and plan.sampler == "random"
    assert "measured" in plan.reason("batches")
    assert plan.per_device_train_batch_size == 8 and plan.gradient_accumulation_steps == 2  # 8 x ~515 tokens
    assert plan.effective_batch == 16 and not plan.gradient_checkpointing
    assert not plan.use_liger_kernel and "1.8x slower" in plan.reason("kernels")
    assert plan.memory_gb and plan.memory_gb <= GC_HEADROOM * H200.gpu_gb


def test_explicit_values_win():
    cfg = RunConfig(packing=True, group_by_length=True, gradient_checkpointing=True, resize_micro_batch=False)
    plan = make_plan(cfg, H200, model="demo")
    assert plan.packing and plan.padding_free and plan.sampler == "group" and plan.gradient_checkpointing
    assert plan.per_device_train_batch_size == 4 and plan.reason("gradient checkpointing") == "set in the config"
    off = make_plan(RunConfig(padding_free=False, group_by_length=False, gradient_accumulation_steps=8), H200)
    assert not off.padding_free and off.sampler == "random" and off.per_device_train_batch_size == 4
    on_cpu = make_plan(RunConfig(padding_free=True), CPU)
    assert on_cpu.padding_free and on_cpu.per_device_train_batch_size == 4  # no resize on CPU unless asked


@pytest.mark.parametrize(("machine", "expected"), [(H200, False), (SMALL_GPU, True)])
def test_gradient_checkpointing_auto_follows_the_memory_estimate(machine, expected):
    plan = make_plan(RunConfig(max_length=2048), machine, model="qwen2.5-0.5b")
    assert plan.gradient_checkpointing is expected
    assert "the estimate without it" in plan.reason("gradient checkpointing")


def test_without_a_model_shape_the_plan_stays_memory_safe():
    plan = make_plan(RunConfig(model_name_or_path="/no/such/model"), H200)
    assert plan.gradient_checkpointing and "no memory estimate" in plan.reason("gradient checkpointing")
    assert plan.per_device_train_batch_size == 4 and plan.memory_gb is None


def test_the_plan_says_when_a_figure_could_not_be_read(tmp_path):
    """Never a silent guess: an unreadable shape or a refused estimate is named in the plan's reasons and
    shown in its decisions table (the Model & memory tab, train.log)."""
    plan = make_plan(RunConfig(model_name_or_path="/no/such/model"), H200)
    why = plan.reason("memory estimate")
    assert "the model's shape could not be read (model folder '/no/such/model' does not exist)" in why
    assert "took their memory-safe choice" in why
    assert ("memory estimate", "unknown", why) in plan.decisions()
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"hidden_size": "wide", "num_hidden_layers": 2, "num_attention_heads": 2, '
                                        '"vocab_size": 10}')  # fmt: skip
    assert "holds a size that is not a whole number" in make_plan(RunConfig(), H200, model=str(broken)).reason(
        "memory estimate"
    )
    refused = make_plan(RunConfig(lora_target_modules="nothing_here"), H200, model="demo")
    assert "no estimate for this config (" in refused.reason("memory estimate") and refused.memory_gb is None
    fine = make_plan(RunConfig(), H200, model="demo")
    assert fine.memory_gb is not None and fine.reason("memory estimate").startswith("from the model's shape (demo)")
    assert "memory estimate" not in fine.summary()


def test_preference_tuning_of_a_base_model_hints_that_sft_comes_first():
    dpo = make_plan(RunConfig(objective="dpo"), CPU, model="demo")
    assert "SFT usually comes first" in dpo.reason("objective")
    assert ("objective", "dpo", dpo.reason("objective")) in dpo.decisions()
    orpo = make_plan(RunConfig(objective="orpo", model_name_or_path="meta-llama/Llama-3.2-1B"), CPU, model="demo")
    assert "SFT usually comes first" in orpo.reason("objective")
    tuned = RunConfig(objective="dpo", model_name_or_path="Qwen/Qwen2.5-0.5B-Instruct")
    assert "SFT usually comes first" not in make_plan(tuned, CPU, model="demo").reason("objective")
    after_sft = RunConfig(objective="dpo", start_from_run="my-sft-run")
    assert "SFT usually comes first" not in make_plan(after_sft, CPU, model="demo").reason("objective")
    assert "SFT usually comes first" not in make_plan(RunConfig(), CPU, model="demo").reason("objective")


def test_micro_batch_stays_within_memory():
    small = Machine.virtual("cuda", 8.0)
    plan = make_plan(RunConfig(max_length=1024), small, model="llama-3.1-8b")
    assert plan.memory_gb is not None
    assert plan.per_device_train_batch_size * plan.gradient_accumulation_steps == 16
    big = make_plan(RunConfig(max_length=1024), H200, model="llama-3.1-8b")
    assert big.per_device_train_batch_size >= plan.per_device_train_batch_size


def test_liger_and_flash_only_where_the_machine_has_them():
    with_kernels = Machine.virtual("cuda", 80.0, liger=True, flash_attn=True)
    plan = make_plan(RunConfig(use_liger_kernel=True), with_kernels, model="demo")
    assert plan.use_liger_kernel and plan.attn_implementation == "flash_attention_2"
    assert not make_plan(RunConfig(), with_kernels, model="demo").use_liger_kernel  # auto: measured slower
    missing = make_plan(RunConfig(use_liger_kernel=True), H200, model="demo")
    assert not missing.use_liger_kernel and "not installed" in missing.reason("kernels")
    assert make_plan(RunConfig(attn_implementation="eager"), H200, model="demo").padding_free is False


def test_plan_records_itself():
    plan = make_plan(RunConfig(), H200, model="demo")
    data = json.loads(plan.to_json())
    assert data["dtype"] == "bfloat16" and data["machine"]["gpu_name"] == "NVIDIA H200"
    assert set(data["reasons"]) >= {"batches", "micro-batch", "gradient checkpointing", "kernels", "precision"}
    assert plan.summary().startswith("plan: cuda") and len(plan.lines()) == len(plan.decisions())


# --- the estimate reads the plan --------------------------------------------------------------------


def test_estimate_models_the_planned_micro_batch_and_padding_free():
    cfg = RunConfig(max_length=1024)
    plan, est = estimate(cfg, H200, model="qwen2.5-0.5b")
    assert est.plan is plan and est.inputs["batch_size"] == plan.per_device_train_batch_size
    assert est.inputs["padding_free"] and not est.inputs["gradient_checkpointing"]
    _, as_set = estimate(cfg.replace(resize_micro_batch=False), H200, model="qwen2.5-0.5b")
    assert as_set.inputs["batch_size"] == 4 and as_set.total_gb < est.total_gb
    _, on_cpu = estimate(cfg, CPU, model="qwen2.5-0.5b")
    assert on_cpu.inputs["device"] == "cpu" and not on_cpu.inputs["padding_free"]
    _, liger = estimate(
        cfg.replace(use_liger_kernel=True), Machine.virtual("cuda", 139.8, liger=True), model="qwen2.5-0.5b"
    )
    assert liger.breakdown["activations"] < est.breakdown["activations"]


# --- equivalence on CPU: the fast path learns what padded batches learn --------------------------------


def _train_losses(workspace, **settings) -> tuple[list[float], int, object]:
    """Per-step training losses, trained (label) tokens and the plan of a short real run on `demo`."""
    from finetune.models import release_memory
    from finetune.runs import create_run
    from finetune.train.job import TrainingJob

    cfg = RunConfig(
        max_steps=3,
        logging_steps=1,
        val_split=0.0,
        eval_steps=0,
        save_steps=10**6,
        lora_dropout=0.0,  # dropout masks depend on the batch layout; the gradients must not
        group_by_length=False,
        learning_rate=1e-3,
        max_length=128,
        **settings,
    )
    job = TrainingJob(cfg, create_run(cfg, workspace), workspace, None)
    trainer, model = job.setup()
    collate, batches = trainer.data_collator, []

    def counting(examples):
        batch = collate(examples)
        batches.append((len(examples), int((batch["labels"] != -100).sum())))
        return batch

    trainer.data_collator = counting
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    plan = job.plan
    del trainer, model, job
    release_memory()
    # the label tokens of the examples the 3 steps trained on (the data loader fetches one batch ahead)
    wanted, seen, tokens = 3 * plan.effective_batch, 0, 0
    for size, labelled in batches:
        if seen >= wanted:
            break
        seen, tokens = seen + size, tokens + labelled
    return losses, tokens, plan


def _assert_same(reference: list[float], other: list[float]) -> None:
    assert len(reference) == len(other) == 3
    for a, b in zip(reference, other):
        assert abs(a - b) <= 1e-3 * abs(a), (reference, other)


@pytest.mark.slow
def test_padding_free_and_resplit_micro_batches_learn_the_same(workspace):
    padded, padded_tokens, padded_plan = _train_losses(workspace, padding_free=False)
    flat, flat_tokens, flat_plan = _train_losses(workspace, padding_free=True)
    merged, merged_tokens, merged_plan = _train_losses(
        workspace, padding_free=True, per_device_train_batch_size=16, gradient_accumulation_steps=1
    )
    assert not padded_plan.padding_free and flat_plan.padding_free and merged_plan.per_device_train_batch_size == 16
    _assert_same(padded, flat)
    _assert_same(padded, merged)
    assert padded_tokens == flat_tokens == merged_tokens > 0  # the same tokens carry the loss


@pytest.mark.slow
def test_planner_resize_keeps_the_effective_batch_and_the_loss(workspace):
    set_, _, _ = _train_losses(workspace, padding_free=True, resize_micro_batch=False)
    resized, _, plan = _train_losses(workspace, padding_free=True, resize_micro_batch=True)
    assert plan.per_device_train_batch_size > 4 and plan.effective_batch == 16
    assert "same effective batch" in plan.reason("micro-batch")
    _assert_same(set_, resized)

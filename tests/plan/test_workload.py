"""Steps, tokens and padding of a run from its data's lengths and the plan's batching."""

from __future__ import annotations

import math
import random

from finetune.config import RunConfig
from finetune.plan import Machine, make_plan
from finetune.plan.workload import plan_workload

CPU = Machine.virtual("cpu", cpu_count=2)


def work(lengths, eval_lengths=(), machine=CPU, **changes):
    config = RunConfig(model_name_or_path="qwen2.5-0.5b", **changes)
    return plan_workload(list(lengths), list(eval_lengths), config, make_plan(config, machine, model="qwen2.5-0.5b"))


def test_steps_follow_the_trainer():
    # 99 rows, batch 8: 13 micro-batches an epoch, 12 epochs: what the demo's CPU run trains (156 steps)
    w = work([30] * 99, per_device_train_batch_size=8, gradient_accumulation_steps=1, num_train_epochs=12)
    assert w.steps == 156 and w.train.micro_batches == 156
    w = work([30] * 99, per_device_train_batch_size=2, gradient_accumulation_steps=4, num_train_epochs=1.5)
    assert w.steps == math.ceil(1.5 * math.ceil(50 / 4))
    assert work([30] * 99, max_steps=7).steps == 7


def test_tokens_are_truncated_and_padding_counted():
    w = work([10, 2000], per_device_train_batch_size=2, gradient_accumulation_steps=1, max_steps=1, max_length=512)
    assert w.tokens == 10 + 512 and w.train.computed == 2 * 512
    assert w.notes and "truncated" in w.notes[0]


def test_padding_free_computes_no_padding_and_rebalancing_pads_less_than_random():
    rng = random.Random(1)
    lengths = [rng.randint(20, 500) for _ in range(400)]
    gpu = Machine.virtual("cuda", 80, gpu_name="NVIDIA H100")
    free = work(lengths, machine=gpu, max_steps=20)
    assert free.train.computed == free.train.real
    common = dict(per_device_train_batch_size=4, gradient_accumulation_steps=4, num_train_epochs=1)
    rebalanced = work(lengths, **common)
    shuffled = work(lengths, group_by_length=False, **common)
    assert rebalanced.tokens == shuffled.tokens == sum(lengths)
    assert rebalanced.padding_share < shuffled.padding_share


def test_packing_makes_fewer_rows_evaluations_and_checkpoints():
    packed = work([100] * 400, packing=True, max_length=1000, per_device_train_batch_size=4, num_train_epochs=1)
    assert packed.examples == 40 and packed.tokens == 40_000
    w = work([30] * 99, [30] * 11, max_steps=100, eval_steps=0.1, save_steps=25)
    assert w.eval_runs == 10 and w.eval_per_run.rows == 11 and w.saves == 4


def test_preference_pairs_train_two_sequences_and_kto_unpairs():
    dpo = work([50] * 8, objective="dpo", per_device_train_batch_size=8, max_steps=1)
    assert dpo.tokens == 2 * 8 * 50
    kto = work(
        [50] * 8, objective="kto", per_device_train_batch_size=8, gradient_accumulation_steps=1, num_train_epochs=1
    )
    kto_pairs = plan_workload(
        [50] * 8,
        [],
        kto_config := RunConfig(model_name_or_path="qwen2.5-0.5b", objective="kto", per_device_train_batch_size=8,
                                gradient_accumulation_steps=1, num_train_epochs=1),
        make_plan(kto_config, CPU, model="qwen2.5-0.5b"),
        kto_pairs=True,
    )  # fmt: skip
    assert kto.steps == 1 and kto_pairs.steps == 2

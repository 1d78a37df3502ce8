"""How many checkpoints a run saves and keeps and what they cost on disk (finetune/plan/checkpoints.py), the
line the Model tab shows: the steps follow transformers, and a real run keeps exactly what it says."""

from __future__ import annotations

import pytest

from finetune.config import RunConfig
from finetune.plan.checkpoints import checkpoint_plan, total_steps

MB = 2**20


def test_steps_saved_and_kept_follow_the_schedule_and_the_limit():
    plan = checkpoint_plan(RunConfig(max_steps=30, save_steps=10, save_total_limit=0))
    assert (plan.total_steps, plan.save_every, plan.saved_steps, plan.kept_steps) == (
        30,
        10,
        (10, 20, 30),
        (10, 20, 30),
    )
    plan = checkpoint_plan(RunConfig(max_steps=21, save_steps=0.25, save_total_limit=3))
    assert plan.saved_steps == (6, 12, 18, 21) and plan.kept_steps == (12, 18, 21)  # one at the end too
    assert "set save_total_limit to 4" in plan.line()
    assert checkpoint_plan(RunConfig(max_steps=21)).kept == 4  # the default keeps the default schedule's four
    assert "lower save_steps" in checkpoint_plan(RunConfig(max_steps=30, save_steps=15)).line()
    best = RunConfig(max_steps=40, save_steps=25, eval_steps=8, load_best_model_at_end=True, save_total_limit=0)
    assert checkpoint_plan(best).saved_steps == (8, 16, 24, 32, 40)  # saved at the evaluations


def test_epochs_count_steps_as_transformers_does():
    cfg = RunConfig(max_steps=-1, num_train_epochs=3, per_device_train_batch_size=4, gradient_accumulation_steps=4)
    assert total_steps(cfg, 99) == 21  # 25 batches -> 7 updates per epoch (the last one partial) -> 21
    assert total_steps(cfg.replace(num_train_epochs=0.5), 99) == 4
    assert total_steps(cfg, None) is None
    assert "depends on the data size" in checkpoint_plan(cfg).line()


def test_size_on_disk_uses_the_disk_checks_rule():
    from finetune.paths import artifact_bytes

    cfg = RunConfig(max_steps=20, save_steps=5, save_total_limit=2, lora_r=16)
    plan = checkpoint_plan(cfg, model_bytes=1000 * MB, tokenizer_bytes=MB)
    assert plan.each_bytes == artifact_bytes(cfg, 1000 * MB, MB)[1] and plan.total_bytes == 2 * plan.each_bytes
    assert "2 kept (steps 15, 20), about 61.1 MB each (122.1 MB in all)" in plan.line()
    full = checkpoint_plan(cfg.replace(method="full", quantization="none"), model_bytes=1000 * MB)
    assert full.each_bytes > 4 * 1000 * MB  # weights + AdamW's two moments
    assert "size unknown" in checkpoint_plan(cfg).line()


def test_the_studio_reads_the_row_count_of_local_data(workspace):
    from finetune.studio import Studio

    line = Studio(workspace).checkpoints_line(RunConfig())  # the bundled sample: 99 training rows
    assert line.startswith("Checkpoints: 4 saved over 21 steps, 4 kept (steps 6, 12, 18, 21), about ")


@pytest.mark.slow
def test_a_real_run_keeps_the_checkpoints_the_plan_says(trained_curve_run):
    plan = checkpoint_plan(trained_curve_run.config())
    assert [f"checkpoint-{s}" for s in plan.kept_steps] == [p.name for p in trained_curve_run.checkpoints()]

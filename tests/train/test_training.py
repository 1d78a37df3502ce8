"""Real TRL/PEFT training on the demo model: loss falls, weights change, stop, resume, busy."""

from __future__ import annotations

import json
import time

import pytest
import torch
from helpers_runs import fast_config
from safetensors.torch import load_file

from finetune.errors import BusyError, ConfigError, RunError
from finetune.runs import open_run
from finetune.train.registry import current_job
from finetune.train.start import start_training

pytestmark = pytest.mark.slow


def test_qlora_run_loss_falls_and_adapter_weights_change(workspace):
    job = start_training(fast_config(max_steps=60), workspace=workspace)
    assert job.wait(300) == "done", job.message
    run = job.run
    losses = [m["loss"] for m in run.metrics() if "loss" in m]
    assert len(losses) >= 10
    assert sum(losses[-3:]) / 3 < losses[0] - 0.5, losses
    assert any("eval_loss" in m for m in run.metrics())
    # metrics.jsonl on disk holds the same records as the in-memory buffer, one per line with its step
    on_disk = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    assert on_disk == run.metrics() and all("step" in m for m in on_disk)
    weights = load_file(run.adapter_dir / "adapter_model.safetensors")
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: non-zero means trained
    status = run.status()
    assert status["state"] == "done" and status["step"] == 60
    summary = run.data_summary()
    assert summary["format"] == "messages"
    # the plan the run trained with: every auto decision and its reason, in plan.json and train.log
    plan = json.loads(run.plan_path.read_text())
    assert (
        plan["device"] == "cpu"
        and plan["dtype"] == "float32"
        and plan == job.plan.to_dict() | {"machine": plan["machine"]}
    )
    assert {"batches", "micro-batch", "gradient checkpointing"} <= set(plan["reasons"])
    assert "plan: gradient checkpointing: off" in run.log_tail(200)


def test_saved_adapter_loads_with_plain_peft(workspace, demo_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    job = start_training(fast_config(max_steps=6, quantization="none"), workspace=workspace)
    assert job.wait(300) == "done", job.message
    base = AutoModelForCausalLM.from_pretrained(demo_path)
    model = PeftModel.from_pretrained(base, job.run.adapter_dir)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        tuned = model(ids).logits
        with model.disable_adapter():
            plain = model(ids).logits
    assert not torch.allclose(tuned, plain)


def test_stop_mid_run_saves_a_loadable_adapter_and_resume_continues(workspace, demo_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    job = start_training(fast_config(max_steps=400, save_steps=5, eval_steps=0), workspace=workspace)
    deadline = time.time() + 240
    while job.progress()["step"] < 12 and job.is_alive() and time.time() < deadline:
        time.sleep(0.2)
    job.stop()
    assert job.wait(240) == "stopped", job.message
    stopped_at = job.run.status()["step"]
    assert 12 <= stopped_at < 400
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(demo_path), job.run.adapter_dir)

    run = open_run(job.run.path)
    checkpoint_step = int(run.latest_checkpoint().name.split("-")[-1])
    config = run.config().replace(max_steps=checkpoint_step + 6)
    resumed = start_training(config, workspace=workspace, resume_run=run)
    assert resumed.wait(240) == "done", resumed.message
    steps = [m["step"] for m in run.metrics() if "loss" in m]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # no step logged twice
    assert run.status()["step"] == checkpoint_step + 6
    assert steps[-1] >= checkpoint_step + 5  # logged every 2 steps
    after = [s for s in steps if s > checkpoint_step]
    assert after and after[0] <= checkpoint_step + 2  # continued from the checkpoint, not from zero
    assert run.status()["state"] == "done"


def test_second_start_is_busy_and_bad_configs_are_refused(workspace):
    job = start_training(fast_config(max_steps=200, eval_steps=0), workspace=workspace)
    try:
        with pytest.raises(BusyError, match="Busy"):
            start_training(fast_config(), workspace=workspace)
    finally:
        job.stop()
        job.wait(240)
    assert current_job() is None
    with pytest.raises(ConfigError) as err:
        start_training(fast_config(learning_rate=-1, lora_r=0), workspace=workspace)
    assert "learning_rate" in str(err.value) and "lora_r" in str(err.value)
    with pytest.raises(ConfigError, match="flash_attention_2 needs a CUDA GPU"):
        start_training(fast_config(attn_implementation="flash_attention_2"), workspace=workspace)


def test_stop_before_training_leaves_a_clean_state(workspace):
    job = start_training(fast_config(), workspace=workspace)
    job.stop()
    state = job.wait(240)
    assert state == "stopped"
    assert job.run.status()["state"] == "stopped"
    follow_up = start_training(fast_config(max_steps=4, eval_steps=0), workspace=workspace)
    assert follow_up.wait(240) == "done", follow_up.message


def test_bad_data_or_model_is_refused_before_a_run_folder_exists(workspace, tmp_path):
    """Unusable data (training or validation file) and a model name that names no model are refused up
    front with the data's or model's own message: no run folder is left behind (issue 13, item 8)."""
    from finetune.errors import DataError, ModelError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"foo": 1}\n{"bar": 2}\n')
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "hello"}\n{"text": "world"}\n')
    for changes, error, expected in [
        ({"dataset_path": str(bad)}, DataError, "foo"),
        ({"dataset_path": str(tmp_path / "missing.jsonl")}, DataError, "file not found"),
        ({"eval_dataset_path": str(bad)}, DataError, "foo"),
        ({"dataset_path": str(good), "eval_dataset_path": str(good), "dataset_format": "alpaca"}, DataError, "alpaca"),
        ({"model_name_or_path": "<b>bad id!!"}, ModelError, "neither a local folder nor a valid Hub model id"),
        ({"model_name_or_path": str(tmp_path / "no-model")}, ModelError, "does not exist"),
    ]:
        with pytest.raises(error) as err:
            start_training(fast_config(**changes), workspace=workspace)
        assert expected in str(err.value) and "Traceback" not in str(err.value), (changes, str(err.value))
    assert not list(workspace.glob("runs/*"))


def test_resume_without_checkpoint_is_refused(workspace):
    job = start_training(fast_config(max_steps=4, eval_steps=0, save_steps=100), workspace=workspace)
    job.wait(240)
    for ckpt in job.run.checkpoints():
        import shutil

        shutil.rmtree(ckpt)
    with pytest.raises(RunError, match="no checkpoint"):
        start_training(job.run.config(), workspace=workspace, resume_run=job.run)

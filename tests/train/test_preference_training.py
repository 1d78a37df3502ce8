"""Real DPO / ORPO / KTO training on the demo model with TRL's trainers: preferences move above the
base, charts' metrics are logged, stop/resume keeps the step counter, DPO continues an SFT adapter."""

from __future__ import annotations

import json
import time

import pytest
from helpers_runs import fast_config
from safetensors.torch import load_file

from finetune.config import RunConfig
from finetune.demo import SAMPLES_DIR
from finetune.errors import ConfigError
from finetune.evaluation.preference import evaluate_preferences
from finetune.runs import open_run
from finetune.train.start import start_training

pytestmark = pytest.mark.slow

PAIRS = SAMPLES_DIR / "sample_preference.jsonl"


def preference_config(objective: str, **changes) -> RunConfig:
    """A CPU-sized QLoRA preference run on the demo model and the bundled preference sample."""
    return fast_config(**{"objective": objective, "learning_rate": 5e-3, "max_length": 128, "max_steps": 24, **changes})


def train(config: RunConfig, workspace):
    job = start_training(config, workspace=workspace)
    assert job.wait(300) == "done", job.message
    return job.run


@pytest.mark.parametrize("objective", ["dpo", "orpo", "kto"])
def test_preference_run_moves_preferences_above_base(workspace, objective):
    data = SAMPLES_DIR / ("sample_kto.jsonl" if objective == "kto" else "sample_preference.jsonl")
    run = train(preference_config(objective, dataset_path=str(data)), workspace)
    metrics = run.metrics()
    assert any("rewards/chosen" in m and "rewards/rejected" in m and "rewards/margins" in m for m in metrics)
    assert any("eval_rewards/margins" in m for m in metrics)  # validation split: eval versions
    assert any("learning_rate" in m and "loss" in m for m in metrics)
    if objective != "kto":  # KTO logs no per-batch accuracy (its rows are unpaired)
        assert any("rewards/accuracies" in m for m in metrics)
    weights = load_file(run.adapter_dir / "adapter_model.safetensors")
    assert any("lora_B" in name and t.abs().sum() > 0 for name, t in weights.items())
    assert not (run.adapter_dir / "ref").exists()
    assert json.loads(run.plan_path.read_text())["objective"] == objective
    # reward accuracy on the training pairs: the base prefers the long sentence it was taught
    result = evaluate_preferences(run, PAIRS, limit=60)
    base, tuned = result.summary["base"], result.summary["finetuned"]
    assert base["preference_accuracy"] < 0.2, base
    assert tuned["preference_accuracy"] >= base["preference_accuracy"] + 0.4, (base, tuned)
    assert tuned["mean_margin"] > base["mean_margin"]
    assert (result.folder / "summary.json").is_file() and (result.folder / "rows.csv").is_file()


def test_dpo_stop_and_resume_continue_the_step_counter(workspace):
    job = start_training(preference_config("dpo", max_steps=400, save_steps=5, eval_steps=0), workspace=workspace)
    deadline = time.time() + 240
    while job.progress()["step"] < 8 and job.is_alive() and time.time() < deadline:
        time.sleep(0.2)
    job.stop()
    assert job.wait(240) == "stopped", job.message
    run = open_run(job.run.path)
    checkpoint_step = int(run.latest_checkpoint().name.split("-")[-1])
    assert checkpoint_step >= 8
    resumed = start_training(run.config().replace(max_steps=checkpoint_step + 6), workspace=workspace, resume_run=run)
    assert resumed.wait(240) == "done", resumed.message
    steps = [m["step"] for m in run.metrics() if "loss" in m]
    assert steps == sorted(steps) and len(steps) == len(set(steps))
    after = [s for s in steps if s > checkpoint_step]
    assert after and after[0] <= checkpoint_step + 2  # continued from the checkpoint, not from zero
    assert run.status()["step"] == checkpoint_step + 6
    assert any("rewards/margins" in m for m in run.metrics() if m["step"] > checkpoint_step)


def test_dpo_on_a_finished_sft_adapter(workspace):
    sft = train(
        fast_config(run_name="sft-first", max_length=128, eval_steps=0, max_steps=20),
        workspace,
    )
    dpo = train(preference_config("dpo", start_from_run="sft-first", eval_steps=0, max_steps=16), workspace)
    first = dpo.metrics()[0]
    # the reference is the SFT model (a frozen copy of its adapter): at step 1 policy == reference (up to
    # TRL casting the trained copy of a 4-bit model's adapter to bf16); the base would differ by nats
    assert abs(first["rewards/chosen"]) < 0.01 and abs(first["rewards/margins"]) < 0.01, first
    sft_weights = load_file(sft.adapter_dir / "adapter_model.safetensors")
    dpo_weights = load_file(dpo.adapter_dir / "adapter_model.safetensors")
    assert set(sft_weights) == set(dpo_weights)  # the same adapter, continued
    assert any((sft_weights[k] - dpo_weights[k]).abs().sum() > 0 for k in sft_weights)
    assert "reference = the adapter of sft-first" in dpo.log_tail(200)
    result = evaluate_preferences(dpo, PAIRS, limit=40, save=False)
    assert result.summary["finetuned"]["preference_accuracy"] > result.summary["base"]["preference_accuracy"] + 0.4
    # a run for another base model, or one with no adapter, is refused before a run folder exists
    with pytest.raises(ConfigError, match="start_from_run"):
        start_training(preference_config("dpo", start_from_run="no-such-run"), workspace=workspace)


def test_dpo_killed_with_sigkill_resumes_from_its_checkpoint(workspace):
    """`finetune train --set objective=dpo` killed with SIGKILL mid-run: the run reads as interrupted, and
    `--resume` goes on from the last checkpoint with the next step (no step twice, none skipped)."""
    import subprocess

    from helpers_runs import checkpoint_step, train_then_kill

    from finetune.runs import Run

    settings = ["objective=dpo", "quantization=none", "max_length=96", "lora_r=4", "logging_steps=1", "save_steps=4",
                "eval_steps=0", "learning_rate=0.001", "per_device_train_batch_size=4",
                "gradient_accumulation_steps=1"]  # fmt: skip
    run, base, env = train_then_kill(workspace, "dpo-killed", settings, lambda run: checkpoint_step(run) >= 8)
    assert run.status()["state"] == "interrupted", run.status()
    checkpoint = int(run.latest_checkpoint().name.split("-")[-1])
    assert checkpoint >= 8
    resumed = subprocess.run(
        [*base, "--resume", "dpo-killed", "--max-steps", str(checkpoint + 3)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    steps = [m["step"] for m in Run(run.path).metrics() if "loss" in m]
    assert steps == list(range(1, checkpoint + 4)), steps
    assert all("rewards/margins" in m for m in Run(run.path).metrics() if "loss" in m and m["step"] > checkpoint)


def test_full_fine_tuning_dpo_precomputes_the_reference(workspace):
    """method=full: the reference log-probabilities are computed once before training from the model
    itself (no second copy of the weights): step 1 starts at zero rewards, the whole model is saved."""
    run = train(
        preference_config("dpo", method="full", quantization="none", learning_rate=5e-4, max_steps=8), workspace
    )
    first = run.metrics()[0]
    assert abs(first["rewards/chosen"]) < 1e-3 and abs(first["rewards/margins"]) < 1e-3, first
    assert any(m.get("rewards/margins", 0) > 0 for m in run.metrics())
    assert (run.adapter_dir / "config.json").is_file()
    assert "computed once before training" in run.log_tail(200)


def test_sft_can_continue_a_finished_runs_adapter(workspace):
    first = train(preference_config("sft", run_name="sft-a", eval_steps=0, max_steps=6, learning_rate=1e-2), workspace)
    again = train(preference_config("sft", start_from_run="sft-a", eval_steps=0, max_steps=4), workspace)
    before = load_file(first.adapter_dir / "adapter_model.safetensors")
    after = load_file(again.adapter_dir / "adapter_model.safetensors")
    assert set(before) == set(after) and any((before[k] - after[k]).abs().sum() > 0 for k in before)

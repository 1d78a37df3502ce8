"""Real GRPO training on the demo with TRL's GRPOTrainer: the reward rises, the charts' metrics and the
sampled completions are saved, a reward function's error stops the run with its name and row, a custom
reward file works from the CLI, GRPO continues an SFT adapter, stop/resume keeps the step counter."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from finetune.config import RunConfig
from finetune.presets import apply_preset
from finetune.runs import Run, open_run
from finetune.train.completions import read_samples, sample_steps
from finetune.train.start import start_training

pytestmark = pytest.mark.slow


def short_grpo(**changes) -> RunConfig:
    """A few quick GRPO steps: 2 prompts x 4 completions of up to 12 tokens."""
    base = dict(
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=12,
        max_steps=4,
        logging_steps=1,
        save_steps=2,
        sample_completions_steps=2,
    )
    return apply_preset(RunConfig(), "grpo-demo").replace(**{**base, **changes})


def quarters(run) -> tuple[float, float]:
    rewards = [m["reward"] for m in run.metrics() if "reward" in m and "loss" in m]
    quarter = len(rewards) // 4
    return statistics.mean(rewards[:quarter]), statistics.mean(rewards[-quarter:])


def test_the_demo_learns_the_prompts_reward(trained_grpo_run):
    run = trained_grpo_run
    first, last = quarters(run)
    print(f"mean reward: first quarter {first:.3f}, last quarter {last:.3f}")
    assert last > first + 0.1, (first, last)
    logged = [m for m in run.metrics() if "reward" in m]
    assert len(logged) == 60 and [m["step"] for m in logged] == list(range(1, 61))
    keys = set(logged[-1])
    assert {
        "rewards/contains_answer/mean",
        "reward_std",
        "completions/mean_length",
        "completions/clipped_ratio",
    } <= keys
    assert json.loads(run.plan_path.read_text())["generation"].startswith("4 prompts x 8 completions per step")
    # the sampled completions with their rewards, every 20 steps (and the first)
    assert sample_steps(run.path) == [1, 20, 40, 60]
    sample = read_samples(run.path)
    assert len(sample) == 32 and {r["step"] for r in sample} == {60}
    for record in sample:
        assert (
            record["rewards"]["contains_answer"] in (0.0, 1.0)
            and record["reward"] == record["rewards"]["contains_answer"]
        )
        assert record["answer"] and record["prompt"] and isinstance(record["row"], int)
    # recomputed from the saved text, each reward is what the function gives
    from finetune.train.answers import contains_answer

    assert all(contains_answer(r["completion"], r["answer"]) == r["reward"] for r in sample)
    weights = load_file(run.adapter_dir / "adapter_model.safetensors")
    assert any("lora_B" in name and t.abs().sum() > 0 for name, t in weights.items())


def test_a_failing_reward_function_stops_the_run_with_its_name_and_row(workspace):
    picky = workspace / "picky.py"
    picky.write_text(
        "def reward(completions, answer, **columns):\n"
        "    if 'Lima' in answer:\n"
        "        raise ValueError('no Lima here')\n"
        "    return [0.0] * len(completions)\n"
    )
    job = start_training(
        short_grpo(max_steps=200, reward_functions="custom", reward_custom_file=str(picky)), workspace=workspace
    )
    assert job.wait(300) == "failed"
    assert "The reward function 'custom (picky.py)' failed on row" in job.message
    assert "ValueError: no Lima here" in job.message and "Traceback" not in job.message
    lines = _prompts().read_text(encoding="utf-8").splitlines()
    lima_rows = [number for number, line in enumerate(lines, start=1) if '"answer": "Lima"' in line]
    assert any(f"on row {n} " in job.message for n in lima_rows), job.message


def _prompts():
    from finetune.demo import SAMPLE_PROMPTS_DATASET

    return SAMPLE_PROMPTS_DATASET


def test_the_cli_trains_with_a_custom_reward_file(workspace):
    """`finetune train --set objective=grpo --set reward_functions=...,custom` with the file from the command line."""
    file = workspace / "short.py"
    file.write_text("def reward(completions, task, **columns):\n    return [1.0 / (1 + len(c)) for c in completions]\n")
    env = {**os.environ, "FINETUNE_WORKSPACE": str(workspace)}
    command = [sys.executable, "-m", "finetune.cli", "train", "--workspace", str(workspace), "--quiet", "--model",
               "demo", "--data", str(_prompts()), "--name", "cli-grpo", "--max-steps", "2",
               "--set", "objective=grpo", "--set", "reward_functions=contains_answer,custom:0.5",
               "--set", f"reward_custom_file={file}", "--set", "per_device_train_batch_size=8",
               "--set", "gradient_accumulation_steps=1", "--set", "max_completion_length=8",
               "--set", "logging_steps=1", "--set", "eval_steps=0"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run = open_run(workspace / "runs" / "cli-grpo")
    last = [m for m in run.metrics() if "reward" in m][-1]
    assert 0 < last["rewards/custom/mean"] < 1
    total = last["rewards/contains_answer/mean"] + 0.5 * last["rewards/custom/mean"]
    assert abs(last["reward"] - total) < 1e-6


def test_grpo_continues_an_sft_adapter_with_a_kl_term(workspace, trained_sft_run, copy_run):
    sft = copy_run(trained_sft_run)
    job = start_training(
        short_grpo(start_from_run=sft.name, kl_coef=0.05, lora_r=8, lora_alpha=16), workspace=workspace
    )
    assert job.wait(300) == "done", job.message
    run = job.run
    assert all("kl" in m for m in run.metrics() if "reward" in m and "loss" in m)
    assert "KL to the adapter of" in run.log_tail(200)
    before = load_file(sft.adapter_dir / "adapter_model.safetensors")
    after = load_file(run.adapter_dir / "adapter_model.safetensors")
    assert set(before) == set(after) and any((before[k] - after[k]).abs().sum() > 0 for k in before)
    assert not (run.adapter_dir / "ref").exists()


def test_stop_and_resume_continue_the_step_counter(workspace):
    job = start_training(short_grpo(max_steps=400, save_steps=3), workspace=workspace)
    deadline = time.time() + 240
    while job.progress()["step"] < 4 and job.is_alive() and time.time() < deadline:
        time.sleep(0.2)
    job.stop()
    assert job.wait(240) == "stopped", job.message
    run = open_run(job.run.path)
    checkpoint = int(run.latest_checkpoint().name.split("-")[-1])
    assert checkpoint >= 4
    resumed = start_training(run.config().replace(max_steps=checkpoint + 3), workspace=workspace, resume_run=run)
    assert resumed.wait(240) == "done", resumed.message
    steps = [m["step"] for m in run.metrics() if "reward" in m and "loss" in m]
    assert steps == list(range(1, checkpoint + 4)), steps


def test_a_grpo_run_killed_with_sigkill_resumes_from_its_checkpoint(workspace):
    """`finetune train --set objective=grpo` killed with SIGKILL: the run reads as interrupted, `--resume` goes on
    with the next step (no step twice, none skipped), and the samples of the redone steps are made again."""
    from helpers_runs import checkpoint_step, train_then_kill

    settings = ["objective=grpo", "per_device_train_batch_size=8", "num_generations=4", "gradient_accumulation_steps=1",
                "max_completion_length=8", "logging_steps=1", "save_steps=3", "eval_steps=0",
                "sample_completions_steps=1", "learning_rate=0.001"]  # fmt: skip
    run, base, env = train_then_kill(
        workspace, "grpo-killed", settings, lambda run: checkpoint_step(run) >= 3 and len(sample_steps(run.path)) >= 5
    )
    assert run.status()["state"] == "interrupted", run.status()
    checkpoint = int(run.latest_checkpoint().name.split("-")[-1])
    resumed = subprocess.run(
        [*base, "--resume", "grpo-killed", "--max-steps", str(checkpoint + 2)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    steps = [m["step"] for m in Run(run.path).metrics() if "reward" in m and "loss" in m]
    assert steps == list(range(1, checkpoint + 3)), steps
    assert sample_steps(run.path) == list(range(1, checkpoint + 3))

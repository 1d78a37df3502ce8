"""Shared fixtures: every test gets its own workspace; the demo model is built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    """Files with browser tests first, then files with slow tests, then the rest (each group in its usual
    order): with two xdist workers taking a file at a time, the long files start early and the workers end
    together on short ones instead of one worker finishing the browser flows alone."""

    def cost(item) -> int:
        return 0 if item.get_closest_marker("browser") else 1 if item.get_closest_marker("slow") else 2

    by_file: dict[Path, int] = {}
    for item in items:
        by_file[item.path] = min(by_file.get(item.path, 2), cost(item))
    items.sort(key=lambda item: by_file[item.path])  # stable: each file's tests stay in order


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """A workspace whose cache (demo model) is shared by every test in the session."""
    return tmp_path_factory.mktemp("shared-workspace")


@pytest.fixture
def workspace(tmp_path, shared_cache, monkeypatch) -> Path:
    """A fresh workspace per test, with the demo model cache shared to keep tests fast."""
    from finetune.demo import demo_model_path

    ws = tmp_path / "workspace"
    ws.mkdir()
    demo_model_path(shared_cache)  # build once
    (ws / "cache").symlink_to(shared_cache / "cache", target_is_directory=True)
    monkeypatch.setenv("FINETUNE_WORKSPACE", str(ws))
    yield ws
    from helpers_app import wait_idle

    wait_idle()  # a test that failed mid-run: its job must not refuse the next test's start


@pytest.fixture
def demo_path(workspace) -> Path:
    from finetune.demo import demo_model_path

    return demo_model_path(workspace)


# --- finished runs, trained once per session ---------------------------------------------------
# Training the demo model is the slow part of most tests that judge, export or list a run. The runs
# below are trained for real (TRL + PEFT on `demo`) once per session; a test that only reads a run
# uses it where it lies, a test that changes it gets its own copy (`copy_run`).


@pytest.fixture(scope="session")
def session_workspace(tmp_path_factory, shared_cache) -> Path:
    """One workspace for the session's trained runs, sharing the demo model cache."""
    from finetune.demo import demo_model_path

    ws = tmp_path_factory.mktemp("trained-runs")
    demo_model_path(shared_cache)
    (ws / "cache").symlink_to(shared_cache / "cache", target_is_directory=True)
    return ws


def _train_once(workspace: Path, config):
    from finetune.runs import Run
    from finetune.train.start import start_training

    job = start_training(config, workspace=workspace)
    state = job.wait(600)
    assert state == "done", f"{config.run_name}: {state}: {job.message}"
    return Run(job.run.path)


@pytest.fixture(scope="session")
def trained_sft_run(session_workspace):
    """A finished QLoRA SFT run of the demo model on the bundled sample (checkpoints at 10, 20, 30)."""
    from helpers_runs import fast_config

    return _train_once(session_workspace, fast_config(run_name="trained-sft"))


@pytest.fixture(scope="session")
def trained_grpo_run(session_workspace):
    """A finished GRPO run of the demo on the bundled prompts with contains_answer (the preset grpo-demo,
    60 steps, a reward logged every step, a completions sample every 20; 11 held-out prompts)."""
    from finetune.config import RunConfig
    from finetune.presets import apply_preset

    config = apply_preset(RunConfig(), "grpo-demo").replace(
        run_name="trained-grpo", max_steps=60, logging_steps=1, save_steps=30, sample_completions_steps=20
    )
    return _train_once(session_workspace, config)


@pytest.fixture(scope="session")
def trained_curve_run(session_workspace):
    """A finished QLoRA SFT run of the demo model with four checkpoints (steps 6, 12, 18, 24), each at an
    evaluation step: what the checkpoint curve scores."""
    from helpers_runs import fast_config

    return _train_once(
        session_workspace, fast_config(run_name="trained-curve", max_steps=24, save_steps=6, eval_steps=6)
    )


@pytest.fixture
def copy_run(workspace):
    """copy_run(run) -> a copy of a session run inside this test's workspace, free to change."""
    import shutil

    from finetune.runs import Run

    def copy(run, name: str | None = None):
        target = workspace / "runs" / (name or run.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(run.path, target, symlinks=True)
        return Run(target)

    return copy

"""Shared fixtures: every test gets its own workspace; the demo model is built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under xdist, the cores are shared out among the workers (and the processes they start inherit it): with
# torch's default, each worker's OpenMP pool spans every core and the pools fight over them (measured here,
# two workers on 2 cores: test_preference_training.py + test_grpo.py 182 s with the default, 143 s with one).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))


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


def _across_workers(tmp_path_factory) -> Path:
    """A folder every xdist worker of this test session shares (the parent of the workers' own temporary
    folders): what is built or trained there, under a file lock, is built once per session, not per worker."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """A workspace whose cache (the demo model, the CPU calibration) every test of the session shares."""
    from filelock import FileLock

    from finetune.demo import demo_model_path

    root = _across_workers(tmp_path_factory)
    with FileLock(root / "shared-workspace.lock"):
        path = root / "shared-workspace"
        path.mkdir(exist_ok=True)
        demo_model_path(path)  # built once, by the first worker to get here
    return path


@pytest.fixture
def workspace(tmp_path, shared_cache, monkeypatch) -> Path:
    """A fresh workspace per test, with the demo model cache shared to keep tests fast."""
    from finetune.demo import demo_model_path

    ws = tmp_path / "workspace"
    ws.mkdir()
    demo_model_path(shared_cache)  # built by the shared_cache fixture
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
# below are trained for real (TRL + PEFT on `demo`) once per session, by the xdist worker that asks
# first; a test that only reads a run uses it where it lies, a test that changes it gets its own copy (`copy_run`).


@pytest.fixture(scope="session")
def session_workspace(tmp_path_factory, shared_cache) -> Path:
    """One workspace for the session's trained runs (shared by the xdist workers), sharing the demo model cache."""
    from filelock import FileLock

    root = _across_workers(tmp_path_factory)
    ws = root / "trained-runs"
    with FileLock(root / "trained-runs.lock"):
        ws.mkdir(exist_ok=True)
        if not (ws / "cache").exists():
            (ws / "cache").symlink_to(shared_cache / "cache", target_is_directory=True)
    return ws


def _train_once(workspace: Path, config):
    """The finished run `config.run_name`, trained by the first worker that asks for it; the others wait on
    its lock and read it (a run left unfinished by a failed attempt is trained again)."""
    import shutil

    from filelock import FileLock

    from finetune.runs import Run
    from finetune.train.start import start_training

    with FileLock(workspace / f"{config.run_name}.lock"):
        done = Run(workspace / "runs" / config.run_name)
        if done.path.is_dir() and done.status().get("state") == "done":
            return done
        shutil.rmtree(done.path, ignore_errors=True)
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

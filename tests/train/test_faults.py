"""Faults: Stop in every phase, kill -9 of the app mid-run, an unwritable or full workspace, a crash
while saving. Each ends in a consistent state (a final status with a message; a loadable adapter when
any training happened; never a half-written adapter) and the next run starts cleanly."""

from __future__ import annotations

import json
import re
from collections import namedtuple
from pathlib import Path

import pytest
from helpers_app import AppProcess, app_base_config, plain, start_values, wait_done, wait_for

from finetune.config import RunConfig
from finetune.errors import RunError
from finetune.runs import Run
from finetune.train.job import TrainingJob
from finetune.train.registry import current_job
from finetune.train.start import start_training
from ui.history_view import STATE_COLUMN


def _rows(n: int, start: int = 0) -> list[dict]:
    return [
        {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]}
        for i in range(start, start + n)
    ]


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture
def tiny(workspace):
    """A config that trains a step in a fraction of a second on CPU: small data, no quantization."""
    data = _write(workspace / "train.jsonl", _rows(24))

    def make(**changes) -> RunConfig:
        base = dict(
            model_name_or_path="demo",
            dataset_path=data,
            quantization="none",
            lora_r=4,
            lora_alpha=8,
            per_device_train_batch_size=4,
            per_device_eval_batch_size=2,
            gradient_accumulation_steps=1,
            max_length=64,
            max_steps=8,
            logging_steps=1,
            eval_steps=0,
            save_steps=4,
            warmup_ratio=0.0,
            gradient_checkpointing=False,
        )
        base.update(changes)
        return RunConfig(**base)

    return make


def _assert_loadable_adapter(run: Run, demo_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert run.has_adapter() and (run.adapter_dir / "adapter_model.safetensors").is_file()
    assert not (run.path / ".adapter.partial").exists()
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(demo_path), run.adapter_dir)


def _assert_no_adapter(run: Run) -> None:
    assert not run.adapter_dir.exists() and not (run.path / ".adapter.partial").exists()


def _next_run_is_clean(tiny, workspace: Path) -> None:
    assert current_job() is None
    follow_up = start_training(tiny(max_steps=2, save_steps=100), workspace=workspace)
    assert follow_up.wait(120) == "done", follow_up.message


def _stop_inside(monkeypatch, module, name: str, seen: list):
    """Wrap module.name so that Stop is pressed while it runs (from inside the call, like a click)."""
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
        job = current_job()
        if job is not None:  # the checks before the run folder call some of these too, before any job
            seen.append(job.state)
            job.stop()
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


def _stop_on_update(monkeypatch, predicate, seen: list):
    """Press Stop right after the job reports the phase `predicate` matches (its own phase changes)."""
    original = TrainingJob.report

    def hooked(self, state=None, message=None, persist=False, **fields):
        original(self, state, message, persist, **fields)
        if not self.stop_event.is_set() and predicate(state, message, fields):
            seen.append((state, message, fields.get("step")))
            self.stop()

    monkeypatch.setattr(TrainingJob, "report", hooked)


# --- Stop in every phase -------------------------------------------------------------------------
Phase = namedtuple("Phase", "hook target expect_state adapter")
BEFORE_TRAINING = [
    Phase("data", ("finetune.train.job", "prepare_data"), "stopped", False),
    Phase("model loading", ("finetune.train.job", "load_model"), "stopped", False),
    Phase("tokenization", ("finetune.train.job", "build_trainer"), "stopped", False),
]


@pytest.mark.slow
@pytest.mark.parametrize("phase", BEFORE_TRAINING, ids=[p.hook for p in BEFORE_TRAINING])
def test_stop_before_training(phase, tiny, workspace, monkeypatch):
    import importlib

    seen: list = []
    _stop_inside(monkeypatch, importlib.import_module(phase.target[0]), phase.target[1], seen)
    job = start_training(tiny(), workspace=workspace)
    assert job.wait(120) == "stopped", job.message
    assert seen == ["loading"]
    status = job.run.status()
    assert status["state"] == "stopped" and "nothing was trained" in status["message"]
    _assert_no_adapter(job.run)
    assert not job.run.metrics()
    monkeypatch.undo()
    _next_run_is_clean(tiny, workspace)


@pytest.mark.slow
def test_stop_during_training(tiny, workspace, demo_path, monkeypatch):
    seen: list = []
    _stop_on_update(monkeypatch, lambda state, message, fields: state is None and fields.get("step") == 3, seen)
    job = start_training(tiny(max_steps=50), workspace=workspace)
    assert job.wait(120) == "stopped", job.message
    status = job.run.status()
    assert status["step"] == 3 and "Stopped by the user at step 3" in status["message"]
    assert [m["step"] for m in job.run.metrics() if "loss" in m] == [1, 2, 3]
    assert job.run.latest_checkpoint().name == "checkpoint-3"  # a checkpoint of the step it stopped at
    _assert_loadable_adapter(job.run, demo_path)
    monkeypatch.undo()
    _next_run_is_clean(tiny, workspace)


@pytest.mark.slow
def test_stop_during_evaluation_interrupts_it(tiny, workspace, demo_path, monkeypatch):
    """The evaluation loop never looks at our stop Event: our callback's on_prediction_step raises a
    private exception at the next batch, the job catches it and saves the adapter of the last step."""
    from finetune.train import callbacks

    eval_file = _write(workspace / "val.jsonl", _rows(60, start=100))  # 30 batches of 2
    batches = []
    original = callbacks.RunCallback.on_prediction_step

    def counting(self, args, state, control, **kwargs):
        batches.append(state.global_step)
        if len(batches) == 3:
            self.job.stop()  # pressed in the middle of the evaluation
        return original(self, args, state, control, **kwargs)

    monkeypatch.setattr(callbacks.RunCallback, "on_prediction_step", counting)
    job = start_training(tiny(max_steps=50, eval_steps=4, eval_dataset_path=eval_file), workspace=workspace)
    assert job.wait(120) == "stopped", job.message
    assert batches == [4, 4, 4], batches  # three of the 30 batches ran, then the evaluation ended
    status = job.run.status()
    assert status["step"] == 4 and "Stopped by the user at step 4" in status["message"]
    assert job.run.latest_checkpoint().name == "checkpoint-4"  # saved although the evaluation was cut
    assert not any("eval_loss" in m for m in job.run.metrics())  # a cut evaluation logs no loss
    assert "evaluation at step 4 interrupted by Stop" in job.run.log_tail(80)
    _assert_loadable_adapter(job.run, demo_path)
    monkeypatch.undo()
    _next_run_is_clean(tiny, workspace)


@pytest.mark.slow
def test_stop_while_saving_a_checkpoint(tiny, workspace, demo_path, monkeypatch):
    """The checkpoint being written is finished (never cut in half), training stops after the next step
    and saves a checkpoint of that step too."""
    seen: list = []
    _stop_on_update(
        monkeypatch, lambda state, message, fields: state == "saving" and "checkpoint" in (message or ""), seen
    )
    job = start_training(tiny(max_steps=50, save_steps=4), workspace=workspace)
    assert job.wait(120) == "stopped", job.message
    assert seen == [("saving", "Saving checkpoint 4", None)]
    checkpoints = [c.name for c in job.run.checkpoints()]
    assert checkpoints == ["checkpoint-4", "checkpoint-5"], checkpoints
    for checkpoint in job.run.checkpoints():
        assert (checkpoint / "trainer_state.json").is_file() and (checkpoint / "adapter_model.safetensors").is_file()
    assert job.run.status()["step"] == 5
    _assert_loadable_adapter(job.run, demo_path)
    monkeypatch.undo()
    _next_run_is_clean(tiny, workspace)


@pytest.mark.slow
def test_stop_while_saving_the_adapter(tiny, workspace, demo_path, monkeypatch):
    """Every step is done: the save finishes and the run reads done."""
    seen: list = []
    _stop_on_update(monkeypatch, lambda state, message, fields: message == "Saving the adapter", seen)
    job = start_training(tiny(max_steps=4, save_steps=100), workspace=workspace)
    assert job.wait(120) == "done", job.message
    assert seen and job.run.status()["step"] == 4
    _assert_loadable_adapter(job.run, demo_path)
    monkeypatch.undo()
    _next_run_is_clean(tiny, workspace)


@pytest.mark.slow
def test_crash_while_saving_leaves_no_half_written_adapter(tiny, workspace, demo_path, monkeypatch):
    """The adapter is written into a staging folder and swapped in: a failure half-way through the final
    save leaves the previous adapter (or none), never a mix that would read as a finished adapter."""
    from transformers import Trainer

    original = Trainer.save_model

    def failing(self, output_dir=None, _internal_call=False):
        original(self, output_dir, _internal_call)
        if not _internal_call:  # the final save, not a checkpoint
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(Trainer, "save_model", failing)
    job = start_training(tiny(max_steps=2, save_steps=100), workspace=workspace)
    assert job.wait(120) == "failed"
    assert "No space left on device" in job.message and "Traceback" not in job.message
    assert not job.run.has_adapter() and not job.run.adapter_dir.exists()

    # a resumed run whose final save fails keeps the adapter it had
    monkeypatch.undo()
    first = start_training(tiny(max_steps=4, save_steps=2), workspace=workspace)
    assert first.wait(120) == "done", first.message
    before = (first.run.adapter_dir / "adapter_model.safetensors").read_bytes()
    monkeypatch.setattr(Trainer, "save_model", failing)
    resumed = start_training(first.run.config().replace(max_steps=6), workspace=workspace, resume_run=first.run)
    assert resumed.wait(120) == "failed"
    assert (first.run.adapter_dir / "adapter_model.safetensors").read_bytes() == before
    _assert_loadable_adapter(first.run, demo_path)
    monkeypatch.undo()
    _next_run_is_clean(tiny, workspace)


# --- unwritable and full workspaces -------------------------------------------------------------------
def test_unwritable_workspace_is_refused_before_training(tmp_path, tiny):
    """Tests run as root, whom chmod does not stop: a folder whose parent is a regular file cannot be
    created by anyone (ENOTDIR), which is the real failure a read-only or wrong mount gives too."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    with pytest.raises(RunError) as err:
        start_training(tiny(), workspace=blocker / "workspace")
    assert "cannot" in str(err.value) and str(blocker / "workspace") in str(err.value)
    assert "Traceback" not in str(err.value)
    assert current_job() is None


def test_unwritable_output_dir_is_refused_before_training(tmp_path, tiny, workspace):
    blocker = tmp_path / "file"
    blocker.write_text("a file")
    with pytest.raises(RunError, match="cannot write to the run folder"):
        start_training(tiny(output_dir=str(blocker / "run")), workspace=workspace)
    assert current_job() is None and not list(workspace.glob("runs/*"))


def test_write_probe_failure_is_a_clear_error(tiny, workspace, monkeypatch):
    """The run-folder probe itself failing (read-only file system, quota): one clear message."""
    from pathlib import Path as P

    original = P.write_text

    def refuse(self, *args, **kwargs):
        if self.name == ".write-test":
            raise OSError(30, "Read-only file system")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(P, "write_text", refuse)
    with pytest.raises(RunError, match="cannot write to the run folder .*Read-only file system"):
        start_training(tiny(run_name="ro"), workspace=workspace)
    assert current_job() is None


def _fake_disk(monkeypatch, free: int) -> None:
    import finetune.paths

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(finetune.paths.shutil, "disk_usage", lambda path: usage(10 * free + 1, 9 * free, free))


def test_full_disk_is_refused_before_training(tiny, workspace, monkeypatch):
    _fake_disk(monkeypatch, free=2**20)
    with pytest.raises(RunError) as err:
        start_training(tiny(run_name="full"), workspace=workspace)
    text = str(err.value)
    assert "Not enough disk space" in text and "1.0 MB free" in text and "needed" in text
    assert "save_total_limit" in text and "Traceback" not in text
    assert current_job() is None and not list(workspace.glob("runs/*"))


def test_disk_need_grows_with_full_fine_tuning(workspace, tmp_path, monkeypatch):
    """A full fine-tune of a model needs its size many times over (checkpoints with optimizer state);
    a LoRA run only a small fraction of it."""
    from finetune.paths import check_disk_space, disk_need_bytes

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with open(model / "model.safetensors", "wb") as fh:
        fh.truncate(2 * 2**30)  # a sparse 2 GB file
    full = RunConfig(method="full", quantization="none", save_total_limit=2)
    lora = RunConfig(method="lora", save_total_limit=2)
    need_full, how_full = disk_need_bytes(full, 2 * 2**30)
    need_lora, _ = disk_need_bytes(lora, 2 * 2**30)
    assert need_full > 5 * 2 * 2**30 and "full fine-tune" in how_full
    assert need_lora < 2**30
    _fake_disk(monkeypatch, free=20 * 2**30)
    with pytest.raises(RunError, match="GB free.*GB needed.*full fine-tune"):
        check_disk_space(full, workspace, str(model))
    assert check_disk_space(lora, workspace, str(model)) == need_lora
    # the CLI shows the same message and a non-zero exit
    from finetune.cli.main import main

    assert main(["train", "--model", str(model), "--name", "cli-full", "--set", "method=full",
                 "--set", "quantization=none", "--workspace", str(workspace)]) == 1  # fmt: skip


def test_gpu_memory_is_released_after_a_failure(tiny, workspace):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU: on CPU there is no GPU memory to release (training.py calls gc + empty_cache)")
    before = torch.cuda.memory_allocated()
    broken = workspace / "broken-model"  # passes the up-front checks (it has a config.json), fails to load
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    job = start_training(tiny(max_steps=2, model_name_or_path=str(broken)), workspace=workspace)
    assert job.wait(120) == "failed"
    assert torch.cuda.memory_allocated() <= before + 16 * 2**20


# --- kill -9 of the app mid-run ----------------------------------------------------------------------
@pytest.mark.slow
def test_kill_9_of_the_app_during_training_then_resume(workspace, tmp_path):
    """`python app.py` killed with SIGKILL while training: relaunched, the app shows the run as
    interrupted with every metric up to its last logged step, and Resume continues from the last
    checkpoint: the step counter goes on and the learning-rate schedule is not restarted."""
    env = {"FINETUNE_WORKSPACE": str(workspace), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cfg = app_base_config().replace(
        run_name="crashed", max_steps=400, logging_steps=1, save_steps=5, eval_steps=0, save_total_limit=2,
        warmup_ratio=0.0, warmup_steps=0,
    )  # fmt: skip
    run = Run(workspace / "runs" / "crashed")

    def checkpoint_step() -> int:
        latest = run.latest_checkpoint()
        return int(latest.name.split("-")[1]) if latest else 0

    first = AppProcess(workspace, tmp_path / "app-1.log", env)
    try:
        client = first.client()
        message = plain(client.predict(*start_values(cfg), api_name="/start_training")[0])
        assert "Started" in message and "crashed" in message, message
        wait_for(lambda: checkpoint_step() >= 10, 300, what=f"checkpoint 10 (log: {first.log_tail(500)})")
        first.kill9()
    finally:
        first.stop()

    on_disk = Run(run.path)
    status = on_disk.status()
    assert status["state"] == "interrupted", status
    before = on_disk.metrics()
    logged = [m["step"] for m in before if "loss" in m]
    assert logged == list(range(1, len(logged) + 1))  # every step up to the last logged one, in order
    ckpt = checkpoint_step()
    assert logged[-1] >= ckpt >= 10
    lr_before = {m["step"]: m["learning_rate"] for m in before if "learning_rate" in m}

    second = AppProcess(workspace, tmp_path / "app-2.log", env)
    try:
        client = second.client()
        shown = client.predict("crashed", api_name="/run_status")
        assert shown["state"] == "interrupted" and "Resume" in shown["message"], shown
        assert shown["metrics"] == len(before)
        history = client.predict(None, api_name="/list_runs")[0]
        rows = history["data"] if isinstance(history, dict) else history
        assert ["crashed", "interrupted"] == [rows[0][0], rows[0][STATE_COLUMN]]

        resumed = plain(client.predict("crashed", api_name="/resume_training")[0])
        assert "Resumed" in resumed, resumed
        wait_for(lambda: client.predict("crashed", api_name="/run_status")["step"] >= ckpt + 4, 240,
                 what=f"steps after the resume (log: {second.log_tail(500)})")  # fmt: skip
        client.predict(api_name="/stop_training")
        final = wait_done(client, "crashed")
        assert final["state"] == "stopped", final
    finally:
        second.stop()

    after = Run(run.path).metrics()
    steps = [m["step"] for m in after if "loss" in m]
    assert steps == sorted(set(steps)) and steps[:ckpt] == list(range(1, ckpt + 1))
    assert steps[ckpt] == ckpt + 1  # the step counter went on from the checkpoint
    lr_after = {m["step"]: m["learning_rate"] for m in after if "learning_rate" in m}
    assert 0.9 * lr_after[ckpt] <= lr_after[ckpt + 1] <= lr_after[ckpt]  # cosine goes on, no new warm-up
    replayed = [s for s in lr_before if ckpt < s <= steps[-1]]
    for step in replayed:  # steps logged before the kill and trained again: the same schedule
        assert lr_after[step] == pytest.approx(lr_before[step], rel=1e-6)


def test_app_refuses_an_unusable_workspace_with_a_message(tmp_path, capsys, monkeypatch):
    import app as app_module

    monkeypatch.setenv("FINETUNE_WORKSPACE", str(tmp_path))  # app.main sets it: restored after the test

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert app_module.main(["--workspace", str(blocker / "workspace")]) == 2
    err = capsys.readouterr().err
    assert "error: cannot use the workspace folder" in err and "Traceback" not in err


# --- SIGTERM (docker stop, schedulers) ------------------------------------------------------------
def _logged_steps(run_path: Path) -> list[int]:
    return [m["step"] for m in Run(run_path).metrics() if "loss" in m]


def _wait_steps(run_path: Path, n: int, proc, timeout: float = 240) -> None:
    def enough():
        assert proc.poll() is None, f"exited early with {proc.returncode}"
        Run(run_path).reload_metrics()
        return len(_logged_steps(run_path)) >= n

    wait_for(enough, timeout, what=f"{n} logged steps in {run_path}")


def _assert_stopped_with_checkpoint_at_the_step(run_path: Path, reason: str) -> int:
    status = Run(run_path).status()
    assert status["state"] == "stopped" and reason in status["message"], status
    step = status["step"]
    assert 3 <= step < status["total_steps"] == 2000  # stopped mid-run, after the steps it was seen at
    assert Run(run_path).latest_checkpoint().name == f"checkpoint-{step}"
    assert _logged_steps(run_path)[-1] == step  # every step up to it was logged, none after
    assert not list(run_path.glob(".*.tmp"))  # no stray temporary status file
    return step


@pytest.mark.slow
def test_sigterm_stops_the_cli_with_a_checkpoint_and_resume_repeats_no_step(workspace, tmp_path):
    """`finetune train` sent SIGTERM mid-run: it ends as stopped within the 10 s grace period, with a
    checkpoint of the step it was at; `--resume` continues from the next step and the clock goes on."""
    import os
    import signal
    import subprocess
    import sys

    from helpers_app import ROOT

    data = _write(tmp_path / "rows.jsonl", _rows(24))
    env = {**os.environ, "FINETUNE_WORKSPACE": str(workspace)}
    base = [sys.executable, "-m", "finetune.cli", "train", "--workspace", str(workspace), "--quiet"]
    settings = ["--set", "logging_steps=1", "--set", "save_steps=1000", "--set", "quantization=none",
                "--set", "max_length=64", "--set", "eval_steps=0", "--set", "lora_r=4"]  # fmt: skip
    cmd = base + ["--model", "demo", "--data", data, "--name", "sigterm", "--max-steps", "2000", *settings]
    proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_path = workspace / "runs" / "sigterm"
    try:
        _wait_steps(run_path, 3, proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)  # it exits by itself (a hang is a TimeoutExpired)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err and "stopped: Stopped by SIGTERM" in err
    step = _assert_stopped_with_checkpoint_at_the_step(run_path, "SIGTERM")
    clock = max(m["time"] for m in Run(run_path).metrics())

    resumed = subprocess.run(base + ["--resume", "sigterm", "--max-steps", str(step + 2)], cwd=str(ROOT), env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = Run(run_path).metrics()
    steps = [m["step"] for m in after if "loss" in m]
    assert steps == list(range(1, step + 3)), steps  # no step trained twice, none skipped
    assert [m["time"] for m in after if m["step"] > step][0] >= clock  # the clock went on


@pytest.mark.slow
def test_sigterm_stops_the_app_with_a_checkpoint(workspace, tmp_path):
    """`python app.py` sent SIGTERM while training: the run is stopped (not interrupted) with a
    checkpoint of its current step, within the 10 s grace period."""
    env = {"FINETUNE_WORKSPACE": str(workspace), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cfg = app_base_config().replace(run_name="termed", max_steps=2000, logging_steps=1, save_steps=1000,
                                    eval_steps=0, warmup_ratio=0.0)  # fmt: skip
    app = AppProcess(workspace, tmp_path / "app.log", env)
    try:
        client = app.client()
        message = plain(client.predict(*start_values(cfg), api_name="/start_training")[0])
        assert "Started" in message, message
        _wait_steps(workspace / "runs" / "termed", 3, app.proc)
        app.proc.terminate()
        assert app.proc.wait(120) == 0  # it exits by itself, cleanly (a hang is a TimeoutExpired)
    finally:
        app.stop()
    _assert_stopped_with_checkpoint_at_the_step(workspace / "runs" / "termed", "SIGTERM")
    assert "Traceback" not in app.log_tail(20000)


@pytest.fixture
def small_disk(tmp_path):
    """A real 24 MB file system (tmpfs), for a disk that fills up during a run; skipped where mount is
    not allowed (it needs root or CAP_SYS_ADMIN)."""
    import subprocess

    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode(errors='replace').strip()[:200]}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_disk_filling_up_during_a_run(workspace, tmp_path, small_disk):
    """The disk fills while `finetune train` runs: one clear message and a non-zero exit, no traceback,
    status.json says failed, no stray temporary file; once space is freed, --resume continues."""
    import os
    import subprocess
    import sys

    from helpers_app import ROOT

    data = _write(tmp_path / "rows.jsonl", _rows(24))
    run_path = small_disk / "run"
    env = {**os.environ, "FINETUNE_WORKSPACE": str(workspace)}
    base = [sys.executable, "-m", "finetune.cli", "train", "--workspace", str(workspace), "--quiet"]
    cmd = base + ["--model", "demo", "--data", data, "--output-dir", str(run_path), "--max-steps", "2000",
                  "--set", "logging_steps=1", "--set", "save_steps=5", "--set", "save_total_limit=1",
                  "--set", "quantization=none", "--set", "max_length=64", "--set", "eval_steps=0"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    filler = small_disk / "filler"
    try:
        wait_for(lambda: Run(run_path).latest_checkpoint() is not None or proc.poll() is not None, 240,
                 what="the first checkpoint")  # fmt: skip
        with open(filler, "wb") as fh:  # take every free byte
            try:
                while True:
                    fh.write(b"\0" * 2**16)
                    fh.flush()
            except OSError:
                pass
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("failed: The disk is full") and "Traceback" not in err, err[-3000:]
    assert Run(run_path).status()["state"] == "failed"
    assert not list(run_path.glob(".*.tmp"))
    logged = [m["step"] for m in Run(run_path).metrics() if "loss" in m]
    assert logged == list(range(1, len(logged) + 1))

    filler.unlink()  # space is back: resume goes on from the last checkpoint
    checkpoint = int(Run(run_path).latest_checkpoint().name.split("-")[1])
    resumed = subprocess.run(base + ["--resume", str(run_path), "--max-steps", str(checkpoint + 2)], cwd=str(ROOT),
                             env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert Run(run_path).status()["state"] == "done"


def test_disk_estimate_adds_up_and_fits_a_demo_run(demo_path):
    """The pre-flight estimate's explanation adds up to its total, and for the demo model it asks for a
    few MB (a demo run writes about 1.3 MB), not the 70 MB it once asked for."""
    import re

    from finetune.paths import check_disk_space, disk_need_bytes, tokenizer_bytes_on_disk

    cfg = RunConfig(model_name_or_path="demo", quantization="none")
    need = check_disk_space(cfg, demo_path.parent, str(demo_path))
    assert 2**20 < need < 5 * 2**20
    _, how = disk_need_bytes(cfg, 874_856, tokenizer_bytes_on_disk(str(demo_path)))

    def mb(text: str) -> float:
        value, unit = text.split()
        return float(value.replace(",", "")) * {"KB": 2**-10, "MB": 1, "GB": 2**10}[unit]

    final, kept, each, logs, total = re.search(
        r"final ([\d.,]+ \w+) \+ (\d+) checkpoints x ([\d.,]+ \w+) \+ logs ([\d.,]+ \w+) = ([\d.,]+ \w+)", how
    ).groups()
    assert mb(final) + int(kept) * mb(each) + mb(logs) == pytest.approx(mb(total), abs=0.1)


# --- damaged checkpoints, a disk turned read-only, a folder deleted mid-run (issue 22) -------------------
def _cut_file(path: Path, keep: int = 20) -> None:
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.slow
def test_resume_falls_back_to_the_newest_intact_checkpoint_and_says_so(tiny, workspace):
    from finetune.studio import Studio

    job = start_training(tiny(run_name="fallback"), workspace=workspace)
    assert job.wait(300) == "done", job.message
    run = job.run
    assert [p.name for p in run.checkpoints()] == ["checkpoint-4", "checkpoint-8"]
    run.write_status("stopped", "Stopped by the user at step 8")
    _cut_file(run.checkpoints_dir / "checkpoint-8" / "trainer_state.json")
    studio = Studio(workspace, restrict_paths=False)
    assert studio.progress("fallback")["resumable"]  # the intact checkpoint-4 still resumes it
    studio.resume("fallback")
    assert studio.wait(300)
    final = studio.progress("fallback")
    assert final["state"] == "done", final["message"]
    note = "Resumed from checkpoint-4, the newest intact checkpoint: checkpoint-8 cannot be read (checkpoint-8: "
    assert note in final["message"]
    assert re.search(r"checkpoint-8/trainer_state.json line \d+: is not valid JSON", final["message"])
    assert note in run.log_path.read_text()
    steps = [m["step"] for m in run.metrics() if "loss" in m]
    assert steps == sorted(set(steps)) and steps[-1] == 8  # steps 5-8 trained again, none twice


@pytest.mark.slow
def test_no_intact_checkpoint_is_refused_naming_every_damaged_file_and_changing_nothing(tiny, workspace):
    from finetune.studio import Studio

    job = start_training(tiny(run_name="all-cut"), workspace=workspace)
    assert job.wait(300) == "done", job.message
    run = job.run
    for checkpoint in run.checkpoints():
        _cut_file(checkpoint / "trainer_state.json")
    metrics_before = run.metrics_path.read_bytes()
    with pytest.raises(RunError) as caught:
        Studio(workspace, restrict_paths=False).resume("all-cut")
    text = str(caught.value)
    assert "has no intact checkpoint to resume from" in text
    assert re.search(r"checkpoint-8: checkpoints/checkpoint-8/trainer_state.json line \d+", text)
    assert "checkpoint-4: checkpoints/checkpoint-4/trainer_state.json" in text
    assert run.metrics_path.read_bytes() == metrics_before and run.status()["state"] == "done"


@pytest.mark.slow
def test_a_disk_turned_read_only_mid_run_is_said_not_left_as_training(tiny, workspace, monkeypatch):
    import errno

    import finetune.runs.folder as folder_module
    import finetune.runs.metrics_buffer as buffer_module
    from finetune.studio import Studio

    real_append, real_write = buffer_module.MetricsBuffer.append, folder_module._atomic_write
    read_only = {"on": False}

    def append(self, record):
        if record.get("step", 0) >= 3:
            read_only["on"] = True
        if read_only["on"]:
            raise OSError(errno.EROFS, "Read-only file system", str(self.path))
        return real_append(self, record)

    def write(path, text):
        if read_only["on"]:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_write(path, text)

    monkeypatch.setattr(buffer_module.MetricsBuffer, "append", append)
    monkeypatch.setattr(folder_module, "_atomic_write", write)
    studio = Studio(workspace, restrict_paths=False)
    run = studio.start(tiny(run_name="read-only", max_steps=50))
    assert studio.wait(300)
    assert json.loads(run.status_path.read_text())["state"] == "training"  # what the disk last took
    progress = studio.progress("read-only")
    assert progress["state"] == "failed"
    assert "became read-only while the run trained" in progress["message"]
    assert "Resume continues from the last checkpoint" in progress["message"]


@pytest.mark.slow
def test_a_run_folder_deleted_mid_run_is_told(tiny, workspace):
    import shutil

    from finetune.studio import Studio

    studio = Studio(workspace, restrict_paths=False)
    run = studio.start(tiny(run_name="deleted", max_steps=500))
    wait_for(lambda: run.metrics_count() >= 2, 300, what="two logged steps")
    for _ in range(20):  # the trainer may write a file into the folder while it is being removed
        shutil.rmtree(run.path, ignore_errors=True)
        if not run.path.exists():
            break
    assert not run.path.exists()
    assert studio.wait(300)
    progress = studio.progress("deleted")
    assert progress["state"] == "failed"
    assert "The run folder 'deleted' was deleted (or moved) while the run trained" in progress["message"]
    log = workspace / "logs" / "errors.log"  # its own train.log went with the folder
    assert "training deleted" in log.read_text()


@pytest.mark.slow
def test_the_job_registry_forgets_a_renamed_or_deleted_run(tiny, workspace):
    from finetune.studio import Studio
    from finetune.train.registry import get_job

    studio = Studio(workspace, restrict_paths=False)
    studio.start(tiny(run_name="first", max_steps=2))
    assert studio.wait(300) and get_job("first") is not None
    studio.rename("first", "renamed")
    assert get_job("first") is None and studio.progress("renamed")["state"] == "done"
    studio.start(tiny(run_name="first", max_steps=2, seed=7))  # the freed name, a new run
    assert studio.wait(300)
    assert get_job("first").run.path == workspace / "runs" / "first"
    studio.delete("first")
    assert get_job("first") is None
    with pytest.raises(RunError, match="no run found at 'first'"):
        studio.progress("first")

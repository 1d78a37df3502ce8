"""Run folders: creation, safe names, listing, and runs whose process died (kill -9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from finetune.config import RunConfig
from finetune.errors import RunError
from finetune.runs import Run, check_name, create_run, list_runs, open_run


def test_create_list_and_open(workspace):
    first = create_run(RunConfig(run_name="alpha"), workspace)
    second = create_run(RunConfig(run_name="alpha"), workspace)  # never overwrites: gets a suffix
    assert first.path != second.path and second.name == "alpha-2"
    assert {r.name for r in list_runs(workspace)} == {"alpha", "alpha-2"}
    assert open_run("alpha", workspace).path == first.path
    assert open_run(str(second.path)).path == second.path
    assert first.status()["state"] == "queued"


@pytest.mark.parametrize("name", ["../x", "/etc", "a/b", "..", "", ".hidden", "x" * 200])
def test_unsafe_names_are_refused(workspace, name):
    with pytest.raises(RunError):
        check_name(name)
    with pytest.raises(RunError):
        open_run(name, workspace)


def test_metrics_survive_a_torn_last_line(workspace):
    run = create_run(RunConfig(run_name="torn"), workspace)
    run.append_metrics({"step": 1, "loss": 2.0})
    run.append_metrics({"step": 2, "loss": 1.5})
    with open(run.metrics_path, "a") as fh:
        fh.write('{"step": 3, "lo')  # a kill in the middle of a write
    fresh = Run(run.path)
    assert [m["step"] for m in fresh.metrics()] == [1, 2]
    assert fresh.metrics(since=1) == [{"step": 2, "loss": 1.5}]


def test_active_run_of_a_dead_process_reads_as_interrupted(workspace):
    run = create_run(RunConfig(run_name="ghost"), workspace)
    run.write_status("training", "Training", step=5)
    status = json.loads(run.status_path.read_text())
    status["pid"] = 999_999_999  # no such process
    run.status_path.write_text(json.dumps(status))
    assert run.status()["state"] == "interrupted"
    assert [r.state for r in list_runs(workspace)] == ["interrupted"]
    assert run.mark_interrupted_if_dead()
    assert json.loads(run.status_path.read_text())["state"] == "interrupted"


@pytest.mark.slow
def test_kill_9_during_training_then_resume(workspace):
    """A real process killed with SIGKILL: metrics up to the last logged step stay, the run reads
    as interrupted, and --resume continues from the last checkpoint with the step counter going on."""
    env = {**os.environ, "FINETUNE_WORKSPACE": str(workspace)}
    args = [sys.executable, "-m", "finetune.cli", "train", "--model", "demo", "--name", "killed", "--quiet",
            "--max-steps", "80", "--set", "per_device_train_batch_size=8", "--set", "gradient_accumulation_steps=1",
            "--set", "logging_steps=1", "--set", "save_steps=5", "--set", "eval_steps=0",
            "--set", "gradient_checkpointing=false", "--set", "max_length=256"]  # fmt: skip
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = Run(workspace / "runs" / "killed")
    deadline = time.time() + 300
    while time.time() < deadline:
        if run.latest_checkpoint() is not None and int(run.latest_checkpoint().name.split("-")[1]) >= 10:
            break
        time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)

    status = Run(run.path).status()
    assert status["state"] == "interrupted"
    logged = [m["step"] for m in Run(run.path).metrics() if "loss" in m]
    assert logged and logged == sorted(logged) and logged[-1] >= 10
    checkpoint = int(run.latest_checkpoint().name.split("-")[1])

    resume = subprocess.run(
        [sys.executable, "-m", "finetune.cli", "train", "--resume", str(run.path), "--quiet"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resume.returncode == 0, resume.stderr[-2000:]
    after = Run(run.path)
    steps = [m["step"] for m in after.metrics() if "loss" in m]
    assert steps == sorted(set(steps))  # nothing replayed twice
    assert steps[-1] == 80 and checkpoint + 1 in steps
    assert after.status()["state"] == "done"
    # the cosine schedule went on from where it was instead of restarting its warm-up from zero
    lrs = {m["step"]: m["learning_rate"] for m in after.metrics() if "learning_rate" in m}
    assert 0.9 * lrs[checkpoint] <= lrs[checkpoint + 1] <= lrs[checkpoint]


def test_one_rule_for_where_a_run_may_live(workspace, tmp_path):
    """output_dir: directly in runs/ inside the workspace (so the run list, export and resume find it),
    or a new or empty folder outside it that is not inside another run; never renamed silently."""
    from finetune.paths import check_config_paths
    from finetune.runs import check_run_folder

    other = create_run(RunConfig(run_name="other"), workspace)
    other.adapter_dir.mkdir()
    outside_run = create_run(RunConfig(output_dir=str(tmp_path / "elsewhere" / "ext")), workspace)
    nonempty = tmp_path / "full"
    nonempty.mkdir()
    (nonempty / "keep.txt").write_text("x")
    refused = [
        (str(workspace), {}, "holds the whole workspace"),
        (str(tmp_path), {}, "holds the whole workspace"),
        (str(workspace / "runs"), {}, "inside the workspace but not a run folder"),
        (str(workspace / "uploads" / "r"), {}, "inside the workspace but not a run folder"),
        (str(other.adapter_dir), {}, "inside the workspace but not a run folder"),
        (str(other.path), {}, "already holds a run"),
        (str(outside_run.adapter_dir / "nested"), {}, "is inside the run"),
        (str(nonempty), {}, "not an empty folder"),
        (str(workspace / "runs" / "named"), {"run_name": "different"}, "disagree"),
        (str(workspace / "runs" / "bad name!"), {}, "output_dir folder name"),
    ]
    before = sorted(p for p in tmp_path.rglob("*"))
    for output_dir, extra, expected in refused:
        cfg = RunConfig(output_dir=output_dir, **extra)
        with pytest.raises(RunError, match=expected):
            create_run(cfg, workspace)
        with pytest.raises(RunError, match=expected):
            check_run_folder(output_dir, workspace, cfg.run_name)
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing made by a refused run
    # the allowed places: directly in runs/ (listed under its folder name), or a fresh folder outside
    inside = create_run(RunConfig(output_dir=str(workspace / "runs" / "named"), run_name="named"), workspace)
    assert inside.name == "named" and "named" in {r.name for r in list_runs(workspace)}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert create_run(RunConfig(output_dir=str(empty)), workspace).path == empty.resolve()
    check_config_paths(RunConfig(output_dir=str(workspace / "runs" / "x")), workspace)  # the app allows runs/<name>


def test_method_tag_names_the_preference_objective():
    from finetune.runs import default_run_name, method_tag

    assert method_tag(RunConfig()) == "qlora"
    assert method_tag(RunConfig(objective="dpo")) == "qlora-dpo"
    assert method_tag(RunConfig(objective="kto", method="full", quantization="none")) == "full-kto"
    assert default_run_name(RunConfig(objective="orpo")).startswith("demo-sample-qlora-orpo-")


# --- a run written on another host (a cluster node writing to shared storage) -----------------


def _as_if_written_on(run: Run, host: str, beat_age_s: float) -> None:
    """Make the run's status and heartbeat those of a writer on `host`, last heard `beat_age_s` ago."""
    status = json.loads(run.status_path.read_text())
    status.update(state="training", message="Training", host=host, pid=4242, updated_at=time.time() - beat_age_s)
    run.status_path.write_text(json.dumps(status))
    beat = {"host": host, "pid": 4242, "process_started_at": 1.0, "time": time.time() - beat_age_s}
    run.heartbeat_path.write_text(json.dumps(beat))


def test_a_run_live_on_another_host_reads_as_live_and_is_not_resumed_twice(workspace):
    from finetune.train.start import start_training

    run = create_run(RunConfig(run_name="on-node-b", max_steps=4), workspace)
    (run.checkpoints_dir / "checkpoint-2").mkdir(parents=True)
    (run.checkpoints_dir / "checkpoint-2" / "trainer_state.json").write_text("{}")
    _as_if_written_on(run, "node-b", beat_age_s=5)
    status = run.status()
    assert status["state"] == "training" and status["remote"] is True  # pid 4242 means nothing here
    assert [(r.name, r.state) for r in list_runs(workspace)] == [("on-node-b", "training")]
    assert not run.mark_interrupted_if_dead()
    with pytest.raises(RunError, match=r"still training on node-b \(pid 4242, last heartbeat \d+ s ago\)"):
        start_training(run.config(), workspace=workspace, resume_run=run)
    assert json.loads(run.status_path.read_text())["state"] == "training"  # the refusal changed nothing


def test_a_run_whose_remote_heartbeat_stopped_reads_as_interrupted(workspace):
    from finetune.runs import HEARTBEAT_STALE_S

    run = create_run(RunConfig(run_name="node-b-died"), workspace)
    _as_if_written_on(run, "node-b", beat_age_s=HEARTBEAT_STALE_S + 60)
    assert run.status()["state"] == "interrupted" and run.live_elsewhere() == ""
    assert [r.state for r in list_runs(workspace)] == ["interrupted"]


@pytest.mark.slow
def test_a_cli_run_of_another_host_is_followed_then_compared_and_exported(workspace, monkeypatch):
    """A real `finetune train` that records itself as host node-b (FINETUNE_HOST, as on a cluster node
    sharing the workspace): the app's side sees it live while its heartbeat runs, and once it has
    stopped (SIGTERM, as a scheduler sends), compares and exports it like any run."""
    import zipfile

    import finetune.runs.folder as runs_module
    from finetune.evaluation.compare import GenerationSettings, get_comparer, release_comparer
    from finetune.export.merge import zip_adapter

    monkeypatch.setattr(runs_module, "HEARTBEAT_STALE_S", 60.0)
    env = {**os.environ, "FINETUNE_HOST": "node-b", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "finetune.cli", "train", "--model", "demo", "--max-steps", "100000", "--quiet"]
    cmd += ["--name", "remote", "--set", "logging_steps=1", "--set", "eval_steps=0", "--set", "save_steps=100000"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_dir = workspace / "runs" / "remote"
        deadline = time.time() + 240
        while time.time() < deadline:
            if (run_dir / "metrics.jsonl").is_file() and (run_dir / "metrics.jsonl").read_text().count("loss") >= 2:
                break
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.5)
        run = open_run("remote", workspace)
        assert run.heartbeat()["host"] == "node-b" and run.heartbeat()["pid"] == proc.pid
        status = run.status()
        assert status["state"] == "training" and status.get("remote") is True
        assert [(r.name, r.state) for r in list_runs(workspace)] == [("remote", "training")]
        assert "training on node-b" in run.live_elsewhere()
        proc.send_signal(signal.SIGTERM)  # the scheduler ends the job: a checkpoint and the adapter are saved
        assert proc.wait(timeout=120) == 0, proc.stderr.read()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert run.status()["state"] == "stopped" and run.has_adapter()
    answer = get_comparer(run).compare("Hello!", GenerationSettings(max_new_tokens=4))
    assert answer.base_tokens > 0 and answer.finetuned_tokens > 0
    release_comparer()
    with zipfile.ZipFile(zip_adapter(run)) as archive:
        assert any(name.endswith("adapter_model.safetensors") for name in archive.namelist())


def test_a_heartbeat_of_an_earlier_writer_does_not_decide(workspace):
    """A run written on node-b, then resumed here: the status (this host, a live pid) decides, not the
    stale heartbeat node-b left behind."""
    from finetune.runs import HEARTBEAT_STALE_S

    run = create_run(RunConfig(run_name="moved"), workspace)
    _as_if_written_on(run, "node-b", beat_age_s=HEARTBEAT_STALE_S + 60)
    run.write_status("training", "Training")  # this process, this host
    assert run.status()["state"] == "training" and "remote" not in run.status()
    assert run.live_elsewhere().startswith("training on ")

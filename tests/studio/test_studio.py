"""The service the app and the CLI share (finetune/studio): the import rule for ui/, one progress
path for any run, readable names, rename/delete, the GPU lease, the data desk's path rule and caches."""

from __future__ import annotations

import ast
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from finetune.config import RunConfig
from finetune.errors import BusyError, FinetuneError, RunError
from finetune.runs import default_run_name
from finetune.studio import Studio
from tests.helpers_runs import make_run

ROOT = Path(__file__).resolve().parents[2]
UI_MAY_IMPORT = {"finetune.studio", "finetune.config", "finetune.errors"}


def test_ui_reaches_the_engine_only_through_the_studio():
    reached = {}
    for path in sorted((ROOT / "ui").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "finetune"]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith("finetune") and name != "finetune" and name not in UI_MAY_IMPORT:
                    reached.setdefault(path.name, []).append(name)
    assert not reached, f"ui/ imports engine modules other than the service: {reached}"


def test_readable_default_names():
    name = default_run_name(
        RunConfig(model_name_or_path="Qwen/Qwen2.5-0.5B-Instruct", dataset_path="/w/uploads/0123456789-my data.jsonl")
    )
    assert name.startswith("Qwen2.5-0.5B-Instruct-my-data-qlora-"), name
    assert default_run_name(RunConfig(quantization="none", method="dora")).startswith("demo-sample-dora-")
    assert default_run_name(RunConfig(dataset_path="HuggingFaceH4/no_robots", method="full")).startswith(
        "demo-no_robots-full-"
    )


def test_progress_of_a_run_on_disk_and_the_history_columns(workspace):
    make_run(workspace, run_name="finished", checkpoints=(1,))
    studio = Studio(workspace)
    p = studio.progress("finished")
    assert (p["state"], p["step"], p["total_steps"], p["fraction"]) == ("done", 2, 2, 1.0)
    assert p["resumable"] is False  # done is not resumable
    (summary,) = studio.runs()
    assert (summary.data, summary.method) == ("sample", "lora")
    with pytest.raises(RunError):
        studio.progress("../elsewhere")  # a name, never a path, in the app


def test_a_run_whose_writer_died_reads_as_interrupted_and_resumable(workspace):
    run = make_run(workspace, run_name="crashed", checkpoints=(1,), with_adapter=False)
    run.write_status("training", "step 1", step=1, total_steps=2)
    status = run.status_path.read_text().replace(f'"pid": {os.getpid()}', '"pid": 999999999')
    run.status_path.write_text(status)
    p = Studio(workspace).progress("crashed")
    assert p["state"] == "interrupted" and p["resumable"] is True


def test_rename_and_delete(workspace):
    make_run(workspace, run_name="first")
    make_run(workspace, run_name="second")
    studio = Studio(workspace)
    renamed = studio.rename("first", "my-best-run")
    assert renamed.name == "my-best-run" and renamed.exists() and renamed.config().run_name == "my-best-run"
    assert set(studio.run_names()) == {"my-best-run", "second"}
    with pytest.raises(RunError, match="already exists"):
        studio.rename("second", "my-best-run")
    with pytest.raises(RunError, match="not allowed"):
        studio.rename("second", "../escape")
    studio.delete("second")
    assert studio.run_names() == ["my-best-run"] and not (workspace / "runs" / "second").exists()


def test_a_training_run_can_be_neither_renamed_nor_deleted(workspace):
    make_run(workspace, run_name="live", with_adapter=False)  # status: training, written by this (live) process
    studio = Studio(workspace)
    with pytest.raises(BusyError, match="training"):
        studio.delete("live")
    with pytest.raises(BusyError):
        studio.rename("live", "other")
    assert studio.run_names() == ["live"]


def test_the_gpu_lease_refuses_model_work_while_training(workspace, monkeypatch):
    import finetune.train.registry

    make_run(workspace, run_name="judged")
    studio = Studio(workspace)
    busy = SimpleNamespace(run=SimpleNamespace(name="other-run"))
    monkeypatch.setattr(finetune.train.registry, "current_job", lambda: busy)
    for attempt in (
        lambda: studio.judge.compare("judged", "Hi", studio_settings()),
        lambda: studio.export.merge("judged"),
        lambda: studio.judge.evaluate("judged", None, limit=2, settings=studio_settings()),
    ):
        with pytest.raises(BusyError, match="other-run' is training"):
            attempt()
    assert studio.training_now() == "other-run"


def test_a_job_of_a_namesake_run_in_another_workspace_is_not_this_workspaces_run(workspace, tmp_path, monkeypatch):
    """The job registry is per process and keyed by run name: another workspace's job must not stand in for
    this workspace's run of the same name."""
    import finetune.train.registry
    from finetune.runs import Run

    mine = make_run(workspace, run_name="same-name")
    elsewhere = Run(tmp_path / "other-workspace" / "runs" / "same-name")
    job = SimpleNamespace(run=elsewhere, is_alive=lambda: False)
    monkeypatch.setattr(finetune.train.registry, "get_job", {"same-name": job}.get)
    assert Studio(workspace).run("same-name").path == mine.path
    own = SimpleNamespace(run=mine, is_alive=lambda: False)
    monkeypatch.setattr(finetune.train.registry, "get_job", {"same-name": own}.get)
    assert Studio(workspace).run("same-name") is mine  # this workspace's own job: its trainer's Run


def studio_settings():
    from finetune.studio import GenerationSettings

    return GenerationSettings(max_new_tokens=4)


def test_the_data_desk_keeps_app_paths_in_allowed_places_and_caches_reports(workspace, tmp_path):
    outside = tmp_path / "outside.jsonl"
    outside.write_text('{"text": "hello"}\n')
    app = Studio(workspace)
    with pytest.raises(FinetuneError):
        app.data.report(str(outside))
    assert app.data.columns(str(outside)) == []
    cli = Studio(workspace, restrict_paths=False)
    assert cli.data.report(str(outside)).kept_rows == 1
    sample = app.data.report("")
    assert app.data.report("") is sample  # cached
    stats = app.data.length_stats(sample, "demo", 64)
    assert stats["count"] == sample.kept_rows and app.data.lengths_at(stats["lengths"], 8)["truncated"] > 0
    stored = Path(app.data.store_upload(str(outside)))
    assert stored.parent == workspace / "uploads" and stored.name.endswith("-outside.jsonl")
    assert app.data.report(str(stored)).kept_rows == 1  # an upload is in an allowed place


def test_saved_config_names_the_sample_by_its_path(workspace):
    from finetune.demo import SAMPLE_DATASET

    studio = Studio(workspace)
    path = studio.save_config(RunConfig(run_name="../../x y"))
    assert path.parent == workspace / "configs" and path.name.startswith("x-y-")
    assert RunConfig.from_yaml(path).dataset_path == str(SAMPLE_DATASET)


def test_the_lease_is_one_at_a_time_and_survives_a_generator_resumed_on_another_thread(workspace):
    import threading

    from finetune.studio import GpuLease

    studio = Studio(workspace)
    studio.lease = GpuLease(wait_s=0.2)

    def streamed():
        with studio.lease.hold("comparing answers"):
            yield 1
            yield 2

    answer = streamed()
    assert next(answer) == 1  # holds the lease in this thread
    with pytest.raises(BusyError, match="Busy comparing answers: merging waits"):
        with studio.lease.hold("merging"):
            pass
    finished = []
    worker = threading.Thread(target=lambda: finished.extend(answer))  # resumed and closed elsewhere
    worker.start()
    worker.join()
    assert finished == [2]
    with studio.lease.hold("merging"):  # free again
        pass


def test_model_work_waits_for_a_run_that_has_ended_but_still_frees_its_memory(workspace, monkeypatch):
    import finetune.train.registry

    ended = []

    class Finishing:
        state = "done"
        run = SimpleNamespace(name="finishing")

        def wait(self, timeout=None):
            ended.append(timeout)

    monkeypatch.setattr(finetune.train.registry, "current_job", lambda: None if ended else Finishing())
    studio = Studio(workspace)
    with studio.lease.hold("comparing answers"):  # not refused: the run had reported "done"
        pass
    assert ended and ended[0] > 0


# --- what the app says names uploads as their owner named them, never the server's folders (issue 22) -------
def test_a_refused_start_in_the_app_shows_no_server_path_and_no_stored_upload_name(workspace):
    uploads = workspace / "uploads"
    uploads.mkdir()
    empty = uploads / "b1559b3b08-explicit_prompt.jsonl"
    empty.write_text("")
    app = Studio(workspace, restrict_paths=True)
    for path, said in (
        (empty, "explicit_prompt.jsonl is empty"),
        (uploads / "0123456789-gone.jsonl", "file not found: uploads/gone.jsonl"),
    ):
        with pytest.raises(FinetuneError) as caught:
            app.start(RunConfig(model_name_or_path="demo", dataset_path=str(path), max_steps=1))
        text = str(caught.value)
        assert said in text and str(workspace) not in text and "b1559b3b08" not in text, text
    cli = Studio(workspace, restrict_paths=False)  # the command line sees the paths it was given
    with pytest.raises(FinetuneError, match=str(uploads / "0123456789-gone.jsonl")):
        cli.start(RunConfig(model_name_or_path="demo", dataset_path=str(uploads / "0123456789-gone.jsonl")))
    assert not (workspace / "runs").exists() or not any((workspace / "runs").iterdir())


def test_a_run_started_from_another_is_estimated_and_carded_with_the_starting_adapters_rank(workspace):
    """start_from_run trains the starting adapter on: its rank (8 here), not the config's lora_r (64), is what
    the estimate counts and the model card states."""
    from helpers_runs import make_run

    from finetune.config import RunConfig
    from finetune.export.model_card import model_card
    from finetune.studio import Studio

    make_run(workspace, run_name="first")  # its adapter: LoRA r=8, alpha 16, all linear layers
    studio = Studio(workspace)
    config = RunConfig(model_name_or_path="demo", objective="dpo", start_from_run="first", lora_r=64, lora_alpha=128)
    assert studio.trained_config(config).lora_r == 8 and studio.trained_config(config).lora_alpha == 16
    assert studio.estimate(config).inputs["lora_r"] == 8
    alone = studio.estimate(config.replace(start_from_run=""))
    assert alone.inputs["lora_r"] == 64 and alone.params["trainable"] > studio.estimate(config).params["trainable"]
    assert studio.trained_config(config.replace(start_from_run="no-such-run")).lora_r == 64  # Start says why

    second = make_run(workspace, run_name="second", config=config)  # saved adapter r=8, config says 64
    card = model_card(second)
    assert "| lora_r | 8 |" in card and "| lora_r | 64 |" not in card

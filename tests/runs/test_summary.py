"""A run in one line, from its small files: damaged runs are listed with the file and line named, a listing
reads no metrics log its status already summarizes, and the JSON of a summary is strict."""

from __future__ import annotations

import json
import math

import pytest

import finetune.runs.metrics_buffer as buffer_module
from finetune.config import RunConfig
from finetune.runs import Run, create_run, list_runs, open_run
from finetune.studio import Studio


def _finished(workspace, name: str, losses=(3.0, 2.0, 1.5)) -> Run:
    run = create_run(RunConfig(run_name=name), workspace)
    for step, loss in enumerate(losses, start=1):
        run.append_metrics({"step": step, "loss": loss, "eval_loss": loss + 0.5})
    run.write_status("done", "Finished", step=len(losses), total_steps=len(losses))
    return run


@pytest.fixture
def workspace(tmp_path):
    """A bare workspace: these tests need no model."""
    return tmp_path / "workspace"


@pytest.fixture
def metrics_reads(monkeypatch):
    """How many times a metrics.jsonl was read (whole or from an offset)."""
    calls = []
    real = buffer_module.read_metrics

    def counting(path, **kwargs):
        calls.append(path)
        return real(path, **kwargs)

    monkeypatch.setattr(buffer_module, "read_metrics", counting)
    return calls


def test_a_listing_reads_no_metrics_log_the_status_summarizes(workspace, metrics_reads):
    for name in ("a", "b", "c"):
        _finished(workspace, name)
    metrics_reads.clear()
    summaries = list_runs(workspace)
    assert [s.final_loss for s in summaries] == [1.5, 1.5, 1.5] and metrics_reads == []
    assert all(s.final_eval_loss == 2.0 and s.damaged == () for s in summaries)
    status = json.loads((workspace / "runs" / "a" / "status.json").read_text())
    assert status["final_loss"] == 1.5 and status["metrics_bytes"] > 0


@pytest.mark.parametrize(
    "line, named",
    [
        (b'{"step": "x", "loss": "y"}\n', "metrics.jsonl line 4: has no usable step (step is 'x')"),
        (b"\xff\n", "metrics.jsonl line 4: is not UTF-8 text (byte 0xff at column 1)"),
        (b"null\n", "metrics.jsonl line 4: is JSON null, not a record"),
    ],
)
def test_a_metrics_log_changed_behind_its_writer_is_read_and_its_damage_named(workspace, metrics_reads, line, named):
    run = _finished(workspace, "hand-edited")
    _finished(workspace, "intact")
    with open(run.metrics_path, "ab") as fh:
        fh.write(line)
    metrics_reads.clear()
    by_name = {s.name: s for s in list_runs(workspace)}
    assert set(by_name) == {"hand-edited", "intact"}  # listed, never silently dropped
    assert by_name["hand-edited"].damaged == (named,) and by_name["hand-edited"].final_loss == 1.5
    assert by_name["intact"].damaged == () and metrics_reads == [run.metrics_path]  # only the changed log


def test_every_damaged_run_is_listed_with_what_could_not_be_read(workspace):
    broken_status = _finished(workspace, "broken-status")
    broken_status.status_path.write_text('{"state": "done", "step"')
    typed_status = _finished(workspace, "typed-status")
    typed_status.status_path.write_text(json.dumps({"state": "done", "step": "x", "created_at": 1.0}))
    no_config = _finished(workspace, "no-config")
    no_config.config_path.unlink()
    bad_yaml = _finished(workspace, "bad-yaml")
    bad_yaml.config_path.write_text("model_name_or_path: [unclosed\n")
    no_status = _finished(workspace, "no-status")
    no_status.status_path.unlink()
    (workspace / "runs" / "not-a-run").mkdir()  # no run files at all: not a run
    (workspace / "runs" / "stray.txt").write_text("x")
    by_name = {s.name: s for s in list_runs(workspace)}
    assert set(by_name) == {"broken-status", "typed-status", "no-config", "bad-yaml", "no-status"}
    assert by_name["broken-status"].state == "unknown"
    assert by_name["broken-status"].damaged[0].startswith("status.json line 1: is not valid JSON")
    assert "status unreadable: status.json line 1" in by_name["broken-status"].message
    assert by_name["typed-status"].state == "done" and by_name["typed-status"].step == 0
    assert by_name["typed-status"].damaged == ("status.json: step is 'x', not a whole number",)
    assert by_name["no-config"].model == "?" and by_name["no-config"].damaged[0].startswith("config.yaml: ")
    assert "config.yaml" in by_name["bad-yaml"].damaged[0] and "not valid YAML" in by_name["bad-yaml"].damaged[0]
    assert str(workspace) not in by_name["bad-yaml"].damaged[0]  # the file named, not the server's folders
    assert by_name["no-status"].damaged == ("status.json: is missing",)


def test_a_damaged_run_can_be_opened_renamed_and_deleted(workspace):
    studio = Studio(workspace, restrict_paths=True)
    run = _finished(workspace, "damaged")
    run.config_path.unlink()
    assert open_run("damaged", workspace).path == run.path
    renamed = studio.rename("damaged", "still-damaged")
    assert renamed.path.is_dir() and not run.path.exists()
    studio.delete("still-damaged")
    assert not renamed.path.exists() and list_runs(workspace) == []


def test_a_summary_as_json_is_strict(workspace):
    _finished(workspace, "diverged", losses=(2.0, float("nan")))
    (summary,) = list_runs(workspace)
    data = summary.to_dict()
    assert data["final_loss"] is None and data["damaged"] == []
    text = json.dumps(data, allow_nan=False)  # refuses NaN/Infinity
    assert "NaN" not in text and json.loads(text)["name"] == "diverged"
    run = open_run("diverged", workspace)
    assert math.isnan(run.metrics()[-1]["loss"])  # the log itself keeps what happened
    assert "NaN" not in run.status_path.read_text()  # status.json is strict JSON too


def test_a_renamed_or_deleted_run_is_not_remembered(workspace, metrics_reads):
    studio = Studio(workspace, restrict_paths=True)
    _finished(workspace, "old")
    assert [s.name for s in studio.runs()] == ["old"]
    studio.rename("old", "new")
    assert [s.name for s in studio.runs()] == ["new"]
    _finished(workspace, "old", losses=(9.0,))  # a new run under the freed name is itself, not the old one
    assert {s.name: s.final_loss for s in studio.runs()} == {"new": 1.5, "old": 9.0}

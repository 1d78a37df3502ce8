"""report_to: what is missing before Start, where each tracker writes, and real runs logging to each of
TensorBoard, Weights & Biases (offline), MLflow (a local store) and Trackio (a local database)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from finetune.config import REPORT_TO
from finetune.errors import ConfigError
from finetune.train import trackers


def test_every_tracker_choice_is_known():
    assert set(REPORT_TO) - {"none"} == set(trackers.TRACKERS)


def test_a_missing_tracker_package_is_named_with_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    message = trackers.missing("wandb")
    assert "`wandb` package" in message and "finetune-studio[trackers]" in message
    assert trackers.missing("none") == "" and trackers.missing("tensorboard") == ""


def test_a_missing_tracker_refuses_the_run_before_anything_is_made(workspace, monkeypatch):
    from finetune.config import RunConfig
    from finetune.train.start import start_training

    monkeypatch.setattr(trackers, "installed", lambda name: name != "mlflow")
    with pytest.raises(ConfigError, match="mlflow-skinny"):
        start_training(RunConfig(report_to="mlflow"), workspace=workspace)
    assert not list((workspace / "runs").glob("*")) if (workspace / "runs").exists() else True


def test_the_environment_points_trackers_at_the_run_and_keeps_what_the_user_set(tmp_path, monkeypatch):
    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "MLFLOW_TRACKING_URI", "TENSORBOARD_LOGGING_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no W&B login
    env = trackers.environment("wandb", tmp_path)
    assert env["WANDB_MODE"] == "offline" and env["WANDB_DIR"] == str(tmp_path)
    assert trackers.environment("mlflow", tmp_path)["MLFLOW_TRACKING_URI"].startswith("file://")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert "MLFLOW_TRACKING_URI" not in trackers.environment("mlflow", tmp_path)
    monkeypatch.setenv("WANDB_DIR", "/my/wandb")  # what the user set stays
    assert "WANDB_DIR" not in trackers.environment("wandb", tmp_path)
    with trackers.tracker_environment("tensorboard", tmp_path):
        import os

        assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "tensorboard")
    assert "TENSORBOARD_LOGGING_DIR" not in __import__("os").environ


def test_links_from_a_record():
    run = Path("/runs/r1")
    assert trackers.links("none", run) == []
    assert "tensorboard --logdir /runs/r1/tensorboard" == trackers.links("tensorboard", run)[0]["command"]
    assert trackers.links("trackio", run)[0]["command"] == "trackio show --project finetune-studio"
    assert trackers.links("wandb", run)[0]["command"] == "wandb sync /runs/r1/wandb"
    assert "mlflow ui --backend-store-uri file:///runs/r1/mlruns" in trackers.links("mlflow", run)[0]["command"]


@pytest.mark.slow
@pytest.mark.parametrize("report_to", ["tensorboard", "wandb", "mlflow", "trackio"])
def test_a_run_logs_to_its_tracker_and_records_where(report_to, workspace, tmp_path, monkeypatch):
    from helpers_runs import fast_config

    from finetune.train.start import start_training

    for key in ("WANDB_API_KEY", "WANDB_MODE", "MLFLOW_TRACKING_URI", "TENSORBOARD_LOGGING_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no W&B login: offline
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    job = start_training(fast_config(max_steps=4, eval_steps=2, report_to=report_to), workspace=workspace)
    assert job.wait(600) == "done", job.message
    run = job.run.path
    links = trackers.links(report_to, run)
    assert links and (links[0].get("command") or links[0].get("url"))
    if report_to == "tensorboard":
        assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    elif report_to == "wandb":
        offline = list((run / "wandb").glob("offline-run-*"))
        assert offline and links[0]["command"] == f"wandb sync {offline[0]}"
    elif report_to == "mlflow":
        import mlflow

        record = (run / "trackers.json").read_text()
        assert "run_id" in record
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        client = mlflow.tracking.MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
        run_id = __import__("json").loads(record)["run_id"]
        assert client.get_metric_history(run_id, "train_loss") or client.get_metric_history(run_id, "loss")
    else:
        folder = Path(__import__("json").loads((run / "trackers.json").read_text())["dir"])
        assert list(folder.glob("finetune-studio*")), f"trackio wrote nothing in {folder}"

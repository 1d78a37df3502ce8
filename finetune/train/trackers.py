"""Experiment trackers (`report_to`): TensorBoard, Weights & Biases, MLflow and Trackio, through
transformers' own integration callbacks; this module says what is missing before a run starts, points
each tracker at the run folder where it would otherwise write somewhere else, and records where the
metrics went (trackers.json in the run folder) so the Train tab can link to them.

- tensorboard: event files in <run>/tensorboard (TENSORBOARD_LOGGING_DIR, unless set);
- wandb: files in <run>/wandb (WANDB_DIR); without a login (no WANDB_API_KEY, no netrc entry) and no
  WANDB_MODE it runs offline, and `wandb sync` uploads the run later;
- mlflow: without MLFLOW_TRACKING_URI a file store in <run>/mlruns (MLflow 3 keeps file stores in maintenance
  mode: MLFLOW_ALLOW_FILE_STORE is set for it); experiment `finetune-studio`; `mlflow ui` needs the full
  `mlflow` package;
- trackio: its local database (TRACKIO_DIR, default ~/.cache/huggingface/trackio), project `finetune-studio`.
The variables are set for the duration of the job (one job per process) and restored after.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import netrc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from finetune.files import write_text_atomic

PROJECT = "finetune-studio"
TRACKERS = {  # report_to value -> (module, pip package, name)
    "tensorboard": ("tensorboard", "tensorboard", "TensorBoard"),
    "wandb": ("wandb", "wandb", "Weights & Biases"),
    "mlflow": ("mlflow", "mlflow-skinny", "MLflow"),
    "trackio": ("trackio", "trackio", "Trackio"),
}
RECORD = "trackers.json"
INSTALL_HINT = "pip install 'finetune-studio[trackers]'"


def installed(report_to: str) -> bool:
    module = TRACKERS.get(report_to, (None,))[0]
    if module is None:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(report_to: str) -> str:
    """'' when the tracker can be used, else what is missing and how to install it."""
    if report_to in ("", "none") or installed(report_to):
        return ""
    module, package, name = TRACKERS[report_to]
    return (
        f"report_to: {name} ({report_to}) needs the `{package}` package, which is not installed here; "
        f"install it with `{INSTALL_HINT}` (or `pip install {package}`), or set report_to to none"
    )


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def environment(report_to: str, run_path: Path) -> dict[str, str]:
    """The variables to set for the tracker of a run (never one the user has set already)."""
    wanted: dict[str, str] = {}
    if report_to == "tensorboard":
        wanted["TENSORBOARD_LOGGING_DIR"] = str(run_path / "tensorboard")
    elif report_to == "wandb":
        wanted["WANDB_DIR"] = str(run_path)
        wanted["WANDB_PROJECT"] = PROJECT
        if not _wandb_logged_in():
            wanted["WANDB_MODE"] = "offline"
        wanted["WANDB_SILENT"] = "true"
    elif report_to == "mlflow":
        if "MLFLOW_TRACKING_URI" not in os.environ:
            # a file store needs no server or database; MLflow 3 keeps it in maintenance mode behind this switch
            wanted["MLFLOW_TRACKING_URI"] = (run_path / "mlruns").resolve().as_uri()
            wanted["MLFLOW_ALLOW_FILE_STORE"] = "true"
        wanted["MLFLOW_EXPERIMENT_NAME"] = PROJECT
    return {key: value for key, value in wanted.items() if key not in os.environ}


@contextlib.contextmanager
def tracker_environment(report_to: str, run_path: Path) -> Iterator[None]:
    changes = environment(report_to, Path(run_path))
    os.environ.update(changes)
    try:
        yield
    finally:
        for key in changes:
            os.environ.pop(key, None)


def configure(args, run_name: str) -> None:
    """The names trackers show: the run's own name, and the project Trackio files it under."""
    args.run_name = run_name
    if hasattr(args, "project"):
        args.project = PROJECT


def record_where(report_to: str, run_path: Path) -> dict[str, Any]:
    """Where the tracker of a training run (that has just begun) sends its metrics, read from the tracker."""
    info: dict[str, Any] = {"report_to": report_to}
    if report_to == "wandb":
        import wandb

        run = wandb.run
        if run is not None:
            offline = bool(getattr(run.settings, "_offline", False)) or os.environ.get("WANDB_MODE") == "offline"
            info.update(mode="offline" if offline else "online", dir=str(getattr(run, "dir", "") or ""))
            if not offline:
                info["url"] = run.url
    elif report_to == "mlflow":
        import mlflow

        active = mlflow.active_run()
        if active is not None:
            info.update(
                run_id=active.info.run_id,
                experiment_id=active.info.experiment_id,
                tracking_uri=mlflow.get_tracking_uri(),
            )
    elif report_to == "tensorboard":
        info["logdir"] = os.environ.get("TENSORBOARD_LOGGING_DIR") or str(run_path / "tensorboard")
    elif report_to == "trackio":
        from trackio.utils import TRACKIO_DIR

        info.update(project=PROJECT, dir=str(TRACKIO_DIR))
    return info


def write_where(run, info: dict[str, Any]) -> None:
    if getattr(run, "read_only", False):
        return

    try:
        write_text_atomic(Path(run.path) / RECORD, json.dumps(info, indent=1))
    except OSError:
        pass


def links(report_to: str, run_path: str | Path) -> list[dict[str, str]]:
    """How to open a run's tracked metrics: [{name, text, url?, command?}], from trackers.json when the run
    recorded it, else from where the tracker writes by default; [] for none."""
    if report_to in ("", "none") or report_to not in TRACKERS:
        return []
    run_path = Path(run_path)
    try:
        info = json.loads((run_path / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    name = TRACKERS[report_to][2]
    if report_to == "tensorboard":
        logdir = info.get("logdir") or str(run_path / "tensorboard")
        return [{"name": name, "text": "event files of this run", "command": f"tensorboard --logdir {logdir}"}]
    if report_to == "trackio":
        project = info.get("project") or PROJECT
        where = f"project {project}" + (f", local database in {info['dir']}" if info.get("dir") else "")
        return [{"name": name, "text": where, "command": f"trackio show --project {project}"}]
    if report_to == "wandb":
        if info.get("url"):
            return [{"name": name, "text": "this run on wandb.ai", "url": info["url"]}]
        folder = info.get("dir") or str(run_path / "wandb")
        offline = Path(folder).parent if Path(folder).name == "files" else Path(folder)
        return [
            {
                "name": name,
                "text": "logged offline (no W&B login): upload it later with",
                "command": f"wandb sync {offline}",
            }
        ]
    uri = info.get("tracking_uri") or (run_path / "mlruns").resolve().as_uri()
    if uri.startswith(("http://", "https://")) and info.get("run_id"):
        url = f"{uri.rstrip('/')}/#/experiments/{info.get('experiment_id')}/runs/{info['run_id']}"
        return [{"name": name, "text": "this run on the MLflow server", "url": url}]
    run_id = f" (run {info['run_id']})" if info.get("run_id") else ""
    text = f"local store{run_id}; its UI needs the full `mlflow` package"
    return [
        {"name": name, "text": text, "command": f"MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {uri}"}
    ]


def where_callback(report_to: str, run):
    """A TrainerCallback that writes trackers.json once the tracker has started (its on_train_begin runs
    after transformers' integration callbacks, which come first in the Trainer's list)."""
    from transformers import TrainerCallback

    class WhereCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                try:
                    write_where(run, record_where(report_to, Path(run.path)))
                except Exception as exc:  # noqa: BLE001 - a link is a convenience, never a reason to fail
                    write_where(run, {"report_to": report_to, "error": f"{type(exc).__name__}: {exc}"})

    return WhereCallback()

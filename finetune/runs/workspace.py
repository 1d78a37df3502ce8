"""The workspace and its run folders: where runs live, how they are named, created, opened, listed,
renamed and deleted. A folder directly in runs/ that holds config.yaml or status.json is a run, even
a damaged one: it is listed (its damage named) and can be deleted; nothing in it is ever skipped silently.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

from finetune.config import RunConfig
from finetune.errors import FinetuneError, RunError, shown
from finetune.names import name_problem, safe_name
from finetune.runs.folder import RUN_FILES, Run
from finetune.runs.summary import RunSummary, data_tag, forget, method_tag, summary_of

WORKSPACE_ENV = "FINETUNE_WORKSPACE"


def workspace_dir(override: str | Path | None = None) -> Path:
    """The workspace root: `override`, else $FINETUNE_WORKSPACE, else ./workspace (created)."""
    path = Path(override or os.environ.get(WORKSPACE_ENV) or "workspace").expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a parent is a regular file, a read-only or full disk
        raise RunError(
            f"cannot use the workspace folder {path}: {exc.strerror or exc}; choose a writable folder "
            f"(--workspace or ${WORKSPACE_ENV})"
        ) from None
    return path


def runs_dir(workspace: str | Path | None = None) -> Path:
    path = workspace_dir(workspace) / "runs"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create the runs folder {path}: {exc.strerror or exc}") from None
    return path


def cache_dir(workspace: str | Path | None = None) -> Path:
    path = workspace_dir(workspace) / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_name(name: str, what: str = "run name") -> str:
    """Refuse names that could escape a folder (`..`, slashes, absolute paths) or are too long."""
    problem = name_problem(name, what)
    if problem:
        raise RunError(problem)
    return name


def default_run_name(config: RunConfig) -> str:
    """A readable name: model, data, method and when, e.g. `Qwen2.5-0.5B-Instruct-support-qlora-20261130-1945`."""
    model = safe_name(config.model_name_or_path.rstrip("/").split("/")[-1], "model", 40)
    data = safe_name(data_tag(config.dataset_path), "data", 30)
    return f"{model}-{data}-{method_tag(config)}-{time.strftime('%Y%m%d-%H%M%S')}"


def rename_run(run: Run, new_name: str) -> Run:
    """Move a run folder to runs/<new_name> beside it; config.yaml follows (run_name, output_dir) when it
    can be read (a damaged one moves as it is)."""
    new_name = check_name((new_name or "").strip(), "new run name")
    target = run.path.parent / new_name
    if target.exists():
        raise RunError(f"a run named {shown(new_name)} already exists; choose another name")
    try:
        config = run.config()
    except FinetuneError:
        config = None
    try:
        os.rename(run.path, target)
    except OSError as exc:
        raise RunError(f"cannot rename the run folder {run.path.name}: {exc.strerror or exc}") from None
    forget(run.path)
    renamed = Run(target)
    changes = {}
    if config is not None and config.run_name:
        changes["run_name"] = new_name
    if config is not None and config.output_dir and Path(config.output_dir).expanduser().resolve() == run.path:
        changes["output_dir"] = str(target)
    if changes:
        config.replace(**changes).to_yaml(renamed.config_path)
    return renamed


def delete_run(run: Run) -> None:
    """Remove a run folder and everything in it; only a folder that is a run: one holding config.yaml and
    status.json, or, directly in a runs/ folder, either of them (a damaged run can still be deleted)."""
    if holding_run(run.path) != run.path and not (run.path.parent.name == "runs" and is_run_folder(run.path)):
        raise RunError(f"{shown(str(run.path), 200)} is not a run folder; nothing was deleted")
    try:
        shutil.rmtree(run.path)
    except OSError as exc:
        raise RunError(f"cannot delete the run folder {run.path.name}: {exc.strerror or exc}") from None
    finally:
        forget(run.path)


def holding_run(path: Path) -> Path | None:
    """The run folder `path` lies in (itself or an ancestor holding config.yaml and status.json)."""
    for folder in (path, *path.parents):
        if all((folder / name).is_file() for name in RUN_FILES):
            return folder
    return None


def is_run_folder(path: Path) -> bool:
    """Does `path` hold a run, even a damaged one (config.yaml or status.json)?"""
    try:
        return Run(path).exists()
    except OSError:
        return False


def check_run_folder(path: str | Path, workspace: str | Path | None = None, run_name: str = "") -> Path:
    """The one rule for where a run may live; returns the resolved folder or raises RunError.

    - In the workspace a run lives directly in runs/ (runs/<name>), where the run list, export and
      resume find it: never the workspace itself, runs/ itself, uploads/, cache/ or another run's folder.
    - Anywhere else (`finetune train --output-dir`, or a folder allowed with $FINETUNE_ALLOWED_PATHS),
      in a new or empty folder that is not inside another run (its adapter zip would carry this one)
      and does not hold the workspace.
    - The run is named after its folder: a run_name that says otherwise is refused, not replaced.
    """
    try:
        folder = Path(os.path.realpath(Path(path).expanduser()))
        ws = Path(os.path.realpath(workspace_dir(workspace)))
        root = ws / "runs"
        check_name(folder.name, "output_dir folder name")
        if run_name and run_name != folder.name:
            raise RunError(
                f"run_name {shown(run_name)} and output_dir {shown(str(path), 200)} disagree: a run is named after "
                "its folder; leave run_name empty or name the folder after it"
            )
        if folder == ws or ws.is_relative_to(folder):
            raise RunError(f"output_dir {shown(str(path), 200)} holds the whole workspace; choose a new folder")
        if folder.is_relative_to(ws) and folder.parent != root:
            raise RunError(
                f"output_dir {shown(str(path), 200)} is inside the workspace but not a run folder: runs live in "
                f"{root}/<name> (leave output_dir empty and set run_name)"
            )
        holder = holding_run(folder)
        if holder is not None and holder != folder:
            raise RunError(f"output_dir {shown(str(path), 200)} is inside the run {holder}; choose a folder outside it")
        if holder == folder:
            raise RunError(f"{folder} already holds a run; choose another output_dir or run_name")
        if folder.is_file() or (folder.is_dir() and any(folder.iterdir())):
            raise RunError(f"output_dir {shown(str(path), 200)} is not an empty folder; choose a new or empty one")
    except OSError as exc:
        raise RunError(f"cannot use output_dir {shown(str(path), 200)}: {exc.strerror or exc}") from None
    return folder


def create_run(config: RunConfig, workspace: str | Path | None = None) -> Run:
    """Make a fresh run folder, write config.yaml and a `queued` status. Never overwrites a run."""
    if config.output_dir:
        path = check_run_folder(config.output_dir, workspace, config.run_name)
    else:
        name = check_name(config.run_name) if config.run_name else default_run_name(config)
        path = runs_dir(workspace) / name
        suffix = 2
        while path.exists():
            path = runs_dir(workspace) / f"{name}-{suffix}"
            suffix += 1
    if (path / "config.yaml").exists():
        raise RunError(f"{path} already holds a run; choose another output_dir or run_name")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise RunError(f"cannot write to the run folder {path}: {exc.strerror or exc}") from None
    run = Run(path)
    config.to_yaml(run.config_path)
    run.write_status("queued", "Waiting to start", created_at=time.time(), step=0, total_steps=0)
    return run


def open_run(name_or_path: Run | str | Path, workspace: str | Path | None = None) -> Run:
    """A run by folder path, or by name inside the workspace (names may not escape it); a Run as it is."""
    if isinstance(name_or_path, Run):
        return name_or_path
    try:
        candidate = Path(name_or_path).expanduser()
        if is_run_folder(candidate):
            return Run(candidate)
    except (OSError, ValueError):  # a name too long for the file system, a NUL character
        pass
    if isinstance(name_or_path, str) and "/" not in name_or_path and os.sep not in name_or_path:
        run = Run(runs_dir(workspace) / check_name(name_or_path))
        if is_run_folder(run.path):
            return run
    raise RunError(f"no run found at {shown(str(name_or_path))} (expected a run folder with config.yaml)")


LISTING_FRESH_S = 1.0  # a listing this recent, of an unchanged runs/ folder, is the answer (a pick lists 5 times)
_recent: dict[str, tuple[float, tuple, list[RunSummary]]] = {}
_recent_lock = threading.Lock()


def list_runs(workspace: str | Path | None = None) -> list[RunSummary]:
    """Every run in the workspace, newest first, damaged ones too (their damage in `damaged`). Dead
    active runs are reported as interrupted. Reads each run's status and config once and remembers them,
    never its metrics log unless that changed behind its writer's back (finetune.runs.summary); a
    listing asked again within LISTING_FRESH_S while no run was added, renamed or removed is the same."""
    root = runs_dir(workspace)
    key = str(root)
    try:
        st = os.stat(root)
        identity = (st.st_ino, st.st_mtime_ns, st.st_nlink)
    except OSError as exc:
        raise RunError(f"cannot list the runs folder {root}: {exc.strerror or exc}") from None
    now = time.monotonic()
    with _recent_lock:
        recent = _recent.get(key)
    if recent is not None and now - recent[0] < LISTING_FRESH_S and recent[1] == identity:
        return list(recent[2])
    try:
        with os.scandir(root) as entries:
            folders = sorted(entry.path for entry in entries if entry.is_dir())
    except OSError as exc:
        raise RunError(f"cannot list the runs folder {root}: {exc.strerror or exc}") from None
    out = [summary for summary in map(summary_of, folders) if summary is not None]
    out.sort(key=lambda s: s.created_at, reverse=True)
    with _recent_lock:
        _recent[key] = (now, identity, out)
    return list(out)


def forget_listing(workspace: str | Path | None = None) -> None:
    """The next listing reads the runs again (a run's files changed in place, e.g. in a test)."""
    with _recent_lock:
        _recent.pop(str(runs_dir(workspace)), None)

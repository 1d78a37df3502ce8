"""Runs on disk: the workspace (`workspace.py`: where runs live, create, open, list, rename, delete),
one run folder (`folder.py`: `Run`, status, metrics, checkpoints, heartbeat), the typed reader of its
records (`records.py`: every file read into typed values, damage named by file and line, never
raised) and a run in one line (`summary.py`: `RunSummary`, built from the small files only).
"""

from finetune.runs.folder import (
    ACTIVE_STATES,
    FINAL_STATES,
    HEARTBEAT_EVERY_S,
    HEARTBEAT_STALE_S,
    HOST_ENV,
    NO_ADAPTER_MESSAGE,
    Run,
    this_host,
    writer_alive,
)
from finetune.runs.records import Damage
from finetune.runs.summary import RunSummary, data_tag, method_tag
from finetune.runs.workspace import (
    WORKSPACE_ENV,
    cache_dir,
    check_name,
    check_run_folder,
    create_run,
    default_run_name,
    delete_run,
    holding_run,
    is_run_folder,
    list_runs,
    open_run,
    rename_run,
    runs_dir,
    workspace_dir,
)

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "HEARTBEAT_EVERY_S",
    "NO_ADAPTER_MESSAGE",
    "HEARTBEAT_STALE_S",
    "HOST_ENV",
    "WORKSPACE_ENV",
    "Damage",
    "Run",
    "RunSummary",
    "cache_dir",
    "check_name",
    "check_run_folder",
    "create_run",
    "data_tag",
    "default_run_name",
    "delete_run",
    "holding_run",
    "is_run_folder",
    "list_runs",
    "method_tag",
    "open_run",
    "rename_run",
    "runs_dir",
    "this_host",
    "workspace_dir",
    "writer_alive",
]

"""The one training job of a process: which job trains now, and the job each run name last had (its
trainer's own Run and metrics buffer). Light, no transformers: the service asks it on every poll and before
anything loads a model; finetune.train.job registers each job it starts, under LOCK."""

from __future__ import annotations

import threading
from typing import Any

LOCK = threading.Lock()  # held by start_training from its checks to the registration: one start at a time
_jobs: dict[str, Any] = {}
_current: Any = None


def current_job() -> Any:
    """The job (finetune.train.job.TrainingJob) training in this process, if any."""
    return _current if _current is not None and _current.is_alive() else None


def get_job(run_name: str) -> Any:
    """The job (alive or finished) this process ran for `run_name`, if any."""
    return _jobs.get(run_name)


def register(job: Any) -> None:
    """A job just started (the caller holds LOCK): it is the current one and its run's."""
    global _current
    _jobs[job.run.name] = job
    _current = job


def forget_job(run_name: str) -> None:
    """Forget the finished job of a run that was renamed or deleted: the name no longer means it."""
    with LOCK:
        job = _jobs.get(run_name)
        if job is not None and not job.is_alive():
            del _jobs[run_name]

"""One run folder (`Run`): status and metrics that survive crashes, read through the typed records
reader (finetune.runs.records) so a damaged file is named, never raised.

Layout of a run folder::

    config.yaml        the RunConfig the run was started with
    status.json        state, message, progress, pid, and a summary of the metrics (rewritten atomically)
    metrics.jsonl      one JSON object per logged step, appended and flushed as it happens
    train.log          human-readable log
    heartbeat.json     host, pid and time of the process writing the run, refreshed while it runs
    plan.json          every auto decision the run trained with (device, precision, strategy...)
    data_summary.json  format, rows, skipped rows and token statistics of the data used
    checkpoints/       Trainer checkpoints (checkpoint-N), for --resume
    adapter/           the final adapter (standard PEFT layout + tokenizer), or the full model

The training thread and the UI meet at a `Run`: a lock-guarded metrics buffer that mirrors
metrics.jsonl, so a poller reads new points without touching the trainer. A reader's buffer follows
the file: when another process appends, only the new lines are read; when it was rewritten, all of it.
status.json carries `final_loss`, `final_eval_loss` and the size and time of the metrics.jsonl they
summarize, so a listing reads no metrics log unless that file changed behind its writer's back.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from finetune.config import RunConfig
from finetune.errors import ConfigError, RunError
from finetune.files import write_text_atomic
from finetune.runs.metrics_buffer import MetricsBuffer
from finetune.runs.records import Damage, checkpoint_problems, folder_file_problems, read_json_object, read_status

ACTIVE_STATES = ("queued", "loading", "training", "evaluating", "saving")
FINAL_STATES = ("done", "stopped", "failed", "interrupted")
HOST_ENV = "FINETUNE_HOST"  # the host name a writer records (default: the machine's hostname)
HEARTBEAT_EVERY_S = 20.0  # how often a writer refreshes heartbeat.json
HEARTBEAT_STALE_S = 180.0  # a writer on another host silent this long is taken as dead (allows clock skew)
RUN_FILES = ("config.yaml", "status.json")  # a folder holding either is a run (a damaged one may miss the other)


def _pid_alive(pid: int | None, started: float | None) -> bool:
    if not pid:
        return False
    try:
        import psutil

        proc = psutil.Process(pid)
        # a recycled pid belongs to a process created after our run started
        return started is None or proc.create_time() <= started + 1
    except Exception:
        return False


def this_host() -> str:
    """The host name this process records in a run folder ($FINETUNE_HOST where several machines share
    one hostname, e.g. containers)."""
    return os.environ.get(HOST_ENV) or socket.gethostname()


def writer_alive(status: dict[str, Any], heartbeat: dict[str, Any] | None = None) -> bool:
    """Is the process that wrote an active status still running? On this host its pid tells; a writer
    on another host (shared storage) is alive while its heartbeat (else its status) is recent."""
    host = status.get("host") or (heartbeat or {}).get("host")
    beat = heartbeat if heartbeat and heartbeat.get("host") == host else {}  # not a beat of an earlier writer
    if host and host != this_host():
        last = max(_number(beat.get("time")), _number(status.get("updated_at")))
        return abs(time.time() - last) < HEARTBEAT_STALE_S
    return _pid_alive(status.get("pid"), status.get("process_started_at"))


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


def _atomic_write(path: Path, text: str) -> None:
    """Write a temporary file and rename it over `path`. When that fails (a full disk), the temporary
    file is removed and `path` is rewritten in place: a short status fits in the blocks it already
    has, so the final state of a run still reaches the disk."""
    try:
        write_text_atomic(path, text)
    except OSError:
        if not path.is_file():
            raise
        with open(path, "r+", encoding="utf-8") as fh:
            fh.write(text)
            fh.truncate()


NO_ADAPTER_MESSAGE = "this run has no saved adapter yet: wait for it to finish, or stop it to save one"


class Run:
    """One run folder. Thread-safe for one writer (the training thread) and many readers.

    `read_only` runs (the non-zero ranks of a multi-process job) silently skip every write."""

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path).resolve()
        self.read_only = read_only
        self.name = self.path.name
        self._lock = threading.Lock()
        self._metrics = MetricsBuffer(self.path / "metrics.jsonl")

    # paths -------------------------------------------------------------
    @property
    def workspace(self) -> Path | None:
        """The workspace the run lives in (<workspace>/runs/<name>), where the demo model is cached; None
        for a run folder elsewhere (--output-dir)."""
        return self.path.parent.parent if self.path.parent.name == "runs" else None

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def log_path(self) -> Path:
        return self.path / "train.log"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def data_summary_path(self) -> Path:
        return self.path / "data_summary.json"

    @property
    def heartbeat_path(self) -> Path:
        return self.path / "heartbeat.json"

    @property
    def plan_path(self) -> Path:
        """plan.json: every auto decision the run trained with, and why (finetune.plan.planner)."""
        return self.path / "plan.json"

    def beat(self) -> None:
        """Refresh heartbeat.json: this process, on this host, is writing the run now."""
        if self.read_only:
            return
        beat = {"host": this_host(), "pid": os.getpid(), "process_started_at": _process_start(), "time": time.time()}
        try:
            _atomic_write(self.heartbeat_path, json.dumps(beat))
        except OSError:
            pass  # a full disk: the status still says what it can

    def heartbeat(self) -> dict[str, Any]:
        value, _ = read_json_object(self.heartbeat_path, "heartbeat.json")
        return value or {}

    def exists(self) -> bool:
        """Is this folder a run, even a damaged one (config.yaml or status.json)?"""
        return any((self.path / name).is_file() for name in RUN_FILES)

    # config --------------------------------------------------------------
    def config(self) -> RunConfig:
        """config.yaml as a RunConfig; ConfigError names the run and its file, not the server's folders."""
        try:
            return RunConfig.from_yaml(self.config_path)
        except ConfigError as exc:
            named = f"the config.yaml of the run '{self.name}'"
            raise ConfigError([p.replace(str(self.config_path), named) for p in exc.problems]) from None

    def config_damage(self) -> list[Damage]:
        """config.yaml as damage: [] when it reads as a RunConfig."""
        if not self.config_path.is_file():
            return [Damage("config.yaml", "is missing")] if self.path.is_dir() else []
        try:
            self.config()
        except ConfigError as exc:
            named = f"the config.yaml of the run '{self.name}'"
            problem = (exc.problems[0] if exc.problems else str(exc)).replace(f"{named}: ", "")
            return [Damage("config.yaml", problem.replace(named, "it"))]
        return []

    # status --------------------------------------------------------------
    def write_status(self, state: str, message: str = "", **fields: Any) -> dict[str, Any]:
        if self.read_only:
            return {}
        with self._lock:
            current = self._read_status_raw()
            current.update(fields)
            current.update(state=state, message=message, updated_at=time.time())
            if state in ACTIVE_STATES:
                current["pid"] = os.getpid()
                current["process_started_at"] = _process_start()
                current["host"] = this_host()
            current.update(self._metrics.summary())
            _atomic_write(self.status_path, json.dumps(_finite(current), indent=1))
            return current

    def _read_status_raw(self) -> dict[str, Any]:
        return read_status(self.status_path)[0]

    def status_damage(self) -> list[Damage]:
        return read_status(self.status_path)[1]

    def status(self) -> dict[str, Any]:
        """status.json (its fields typed), with an active run whose process has died reported as
        `interrupted`; `remote` is true for an active run written on another host (alive while its
        heartbeat is recent). A status.json that cannot be read says so in `message`."""
        status, damage = read_status(self.status_path)
        if not status.get("state"):
            if not self.path.is_dir():
                message = "the run folder no longer exists"
            elif damage:
                message = f"status unreadable: {damage[0]}"
            else:
                message = "no status.json"
            status = {**status, "state": "unknown", "message": message}
        if status.get("state") in ACTIVE_STATES and status.get("host") not in (None, this_host()):
            status = {**status, "remote": True}  # written on another host (shared storage)
        if status.get("state") in ACTIVE_STATES and not writer_alive(status, self.heartbeat()):
            status = {
                **status,
                "state": "interrupted",
                "message": "The process running this run stopped unexpectedly. "
                "Resume continues from the last checkpoint.",
            }
        return status

    def live_elsewhere(self) -> str:
        """'' unless another live process (here or on another host) is writing this run; else who, for a message."""
        status = self.status()
        if status.get("state") not in ACTIVE_STATES:
            return ""
        host = status.get("host") or "this host"
        beat = self.heartbeat()
        beat = beat if beat.get("host") == host else {}
        pid = beat.get("pid") or status.get("pid")
        last = max(_number(beat.get("time")), _number(status.get("updated_at")))
        ago = f", last heartbeat {max(0.0, time.time() - last):.0f} s ago" if last else ""
        return f"{status['state']} on {host} (pid {pid}{ago})"

    def progress(self) -> dict[str, Any]:
        """The progress the status file records (the live fields of a job training here are None):
        the same keys as TrainingJob.progress."""
        status = self.status()
        step, total = max(0, status.get("step") or 0), max(0, status.get("total_steps") or 0)
        return {
            "state": status.get("state", "unknown"),
            "message": status.get("message", ""),
            "step": step,
            "total_steps": total,
            "epoch": status.get("epoch"),
            "fraction": min(step / total, 1.0) if total else 0.0,
            "eta": None,
            "tokens_per_s": None,
            "elapsed": status.get("elapsed_s"),
            "run": self.name,
        }

    def mark_interrupted_if_dead(self) -> bool:
        """Persist `interrupted` for a run whose process died; returns True when it did."""
        raw = self._read_status_raw()
        status = self.status()
        if raw.get("state") in ACTIVE_STATES and status["state"] == "interrupted":
            self.write_status("interrupted", status["message"])
            return True
        return False

    # metrics -------------------------------------------------------------
    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one logged metrics dict (must hold `step`) to the buffer and metrics.jsonl, flushed."""
        if not self.read_only:
            self._metrics.append(record)

    def metrics(self, since: int = 0) -> list[dict[str, Any]]:
        """Metric records from index `since` on (cheap: served from the in-memory buffer)."""
        return self._metrics.records(since)

    def metrics_count(self) -> int:
        return self._metrics.count()

    def metrics_damage(self) -> tuple[list[Damage], int]:
        """(the first damaged lines of metrics.jsonl, how many there are in all)."""
        return self._metrics.damage()

    def reload_metrics(self) -> None:
        """Forget the buffer so the next read comes from disk (another process may be writing)."""
        self._metrics.forget()

    # log -----------------------------------------------------------------
    def log(self, message: str) -> bool:
        """Append to train.log; a log line that cannot be written (full disk) is dropped, never raised:
        the status and metrics carry what matters. False when it was dropped."""
        if self.read_only:
            return True
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(f"{stamp} | {message}\n")
        except OSError:
            return False
        return True

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return "".join(fh.readlines()[-lines:])
        except OSError:
            return ""

    # checkpoints and outputs ---------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Checkpoint folders sorted by step."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = [p for p in self.checkpoints_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
        return sorted(found, key=lambda p: int(p.name.split("-")[-1]))

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint that can resume the run: its trainer_state.json reads and none of its
        weights, optimizer or scheduler files is cut short (see `damaged_checkpoints`)."""
        for checkpoint in reversed(self.checkpoints()):
            if not checkpoint_problems(checkpoint, self.path):
                return checkpoint
        return None

    def damaged_checkpoints(self) -> list[tuple[Path, list[Damage]]]:
        """The checkpoints newer than `latest_checkpoint` and why each cannot resume the run."""
        damaged = []
        for checkpoint in reversed(self.checkpoints()):
            problems = checkpoint_problems(checkpoint, self.path)
            if not problems:
                break
            damaged.append((checkpoint, problems))
        return damaged

    def has_adapter(self) -> bool:
        return (self.adapter_dir / "adapter_config.json").is_file() or (self.adapter_dir / "config.json").is_file()

    def adapter_damage(self) -> list[Damage]:
        """Damaged files of adapter/ (a weights file cut short, an unreadable adapter_config.json)."""
        if not self.adapter_dir.is_dir():
            return []
        return folder_file_problems(self.adapter_dir, self.path)

    def require_intact_adapter(self) -> None:
        """Raise RunError naming the damaged file when the saved adapter cannot be loaded as it is."""
        damage = self.adapter_damage()
        if damage:
            raise RunError(
                f"The run '{self.name}' has a damaged adapter: {damage[0]}. It cannot be loaded, compared, merged "
                "or exported as it is; train it again, or resume it from a checkpoint."
            )

    def damage(self) -> list[Damage]:
        """Everything in this folder that could not be read: config, status, metrics lines, adapter."""
        metrics, _ = self.metrics_damage()
        return self.config_damage() + self.status_damage() + metrics + self.adapter_damage()

    def data_summary(self) -> dict[str, Any]:
        value, _ = read_json_object(self.data_summary_path, "data_summary.json")
        return value or {}


def _finite(value: Any) -> Any:
    """Non-finite numbers as null: status.json stays strict JSON (a NaN loss is in metrics.jsonl)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _process_start() -> float | None:
    try:
        import psutil

        return psutil.Process(os.getpid()).create_time()
    except Exception:
        return None

"""Runs on disk: the workspace, one folder per run, status and metrics that survive crashes.

Layout of a run folder::

    config.yaml        the RunConfig the run was started with
    status.json        state, message, progress, pid (rewritten atomically)
    metrics.jsonl      one JSON object per logged step, appended and flushed as it happens
    train.log          human-readable log
    heartbeat.json     host, pid and time of the process writing the run, refreshed while it runs
    plan.json          every auto decision the run trained with (device, precision, strategy...)
    data_summary.json  format, rows, skipped rows and token statistics of the data used
    checkpoints/       Trainer checkpoints (checkpoint-N), for --resume
    adapter/           the final adapter (standard PEFT layout + tokenizer), or the full model

The training thread and the UI meet at a `Run`: a lock-guarded metrics buffer that
mirrors metrics.jsonl, so a poller reads new points without touching the trainer.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.config import RunConfig
from finetune.errors import RunError, shown
from finetune.files import write_text_atomic
from finetune.names import name_problem, safe_name, upload_name

WORKSPACE_ENV = "FINETUNE_WORKSPACE"
ACTIVE_STATES = ("queued", "loading", "training", "evaluating", "saving")
FINAL_STATES = ("done", "stopped", "failed", "interrupted")
HOST_ENV = "FINETUNE_HOST"  # the host name a writer records (default: the machine's hostname)
HEARTBEAT_EVERY_S = 20.0  # how often a writer refreshes heartbeat.json
HEARTBEAT_STALE_S = 180.0  # a writer on another host silent this long is taken as dead (allows clock skew)


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
        last = max(float(beat.get("time") or 0), float(status.get("updated_at") or 0))
        return abs(time.time() - last) < HEARTBEAT_STALE_S
    return _pid_alive(status.get("pid"), status.get("process_started_at"))


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


class Run:
    """One run folder. Thread-safe for one writer (the training thread) and many readers.

    `read_only` runs (the non-zero ranks of a multi-process job) silently skip every write."""

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path).resolve()
        self.read_only = read_only
        self.name = self.path.name
        self._lock = threading.Lock()
        self._metrics: list[dict[str, Any]] | None = None  # loaded lazily from metrics.jsonl

    # paths -------------------------------------------------------------
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
        try:
            data = json.loads(self.heartbeat_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def plan_path(self) -> Path:
        """plan.json: every auto decision the run trained with, and why (finetune.plan.planner)."""
        return self.path / "plan.json"

    def exists(self) -> bool:
        return self.config_path.is_file()

    # config --------------------------------------------------------------
    def config(self) -> RunConfig:
        return RunConfig.from_yaml(self.config_path)

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
            _atomic_write(self.status_path, json.dumps(current, indent=1))
            return current

    def _read_status_raw(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def status(self) -> dict[str, Any]:
        """status.json, with an active run whose process has died reported as `interrupted`; `remote`
        is true for an active run written on another host (alive while its heartbeat is recent)."""
        status = self._read_status_raw() or {"state": "unknown", "message": "no status.json"}
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
        last = max(float(beat.get("time") or 0), float(status.get("updated_at") or 0))
        ago = f", last heartbeat {max(0.0, time.time() - last):.0f} s ago" if last else ""
        return f"{status['state']} on {host} (pid {pid}{ago})"

    def progress(self) -> dict[str, Any]:
        """The progress the status file records (the live fields of a job training here are None):
        the same keys as TrainingJob.progress."""
        status = self.status()
        step, total = int(status.get("step") or 0), int(status.get("total_steps") or 0)
        return {
            "state": status.get("state", "unknown"),
            "message": status.get("message", ""),
            "step": step,
            "total_steps": total,
            "epoch": status.get("epoch"),
            "fraction": min(step / total, 1.0) if total else 0.0,
            "eta": None,
            "tokens_per_s": None,
            "elapsed": _number(status.get("elapsed_s")),  # over every session of the run (resumes add up)
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
        if self.read_only:
            return
        line = json.dumps(record, default=float)
        with self._lock:
            self._load_metrics_locked()
            self._metrics.append(record)
            with open(self.metrics_path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())

    def _load_metrics_locked(self) -> None:
        if self._metrics is not None:
            return
        self._metrics = []
        try:
            with open(self.metrics_path, encoding="utf-8") as fh:
                for line in fh:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        self._metrics.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue  # a line cut by a kill mid-write: everything before it is intact
        except FileNotFoundError:
            pass

    def metrics(self, since: int = 0) -> list[dict[str, Any]]:
        """Metric records from index `since` on (cheap: served from the in-memory buffer)."""
        with self._lock:
            self._load_metrics_locked()
            return list(self._metrics[since:])

    def metrics_count(self) -> int:
        with self._lock:
            self._load_metrics_locked()
            return len(self._metrics)

    def reload_metrics(self) -> None:
        """Forget the buffer so the next read comes from disk (another process may be writing)."""
        with self._lock:
            self._metrics = None

    # log -----------------------------------------------------------------
    def log(self, message: str) -> None:
        """Append to train.log; a log line that cannot be written (full disk) is dropped, never raised:
        the status and metrics carry what matters."""
        if self.read_only:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(f"{stamp} | {message}\n")
        except OSError:
            pass

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return "".join(fh.readlines()[-lines:])
        except FileNotFoundError:
            return ""

    # checkpoints and outputs ---------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Checkpoint folders sorted by step."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = [p for p in self.checkpoints_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
        return sorted(found, key=lambda p: int(p.name.split("-")[-1]))

    def latest_checkpoint(self) -> Path | None:
        ckpts = [p for p in self.checkpoints() if (p / "trainer_state.json").is_file()]
        return ckpts[-1] if ckpts else None

    def has_adapter(self) -> bool:
        return (self.adapter_dir / "adapter_config.json").is_file() or (self.adapter_dir / "config.json").is_file()

    def data_summary(self) -> dict[str, Any]:
        try:
            return json.loads(self.data_summary_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def summary(self) -> RunSummary:
        status = self.status()
        try:
            config = self.config()
            model, data, method = config.model_name_or_path, data_tag(config.dataset_path), method_tag(config)
        except Exception:
            model, data, method = "?", "?", "?"
        metrics = self.metrics()
        losses = [m["loss"] for m in metrics if "loss" in m]
        evals = [m["eval_loss"] for m in metrics if "eval_loss" in m]
        return RunSummary(
            name=self.name,
            path=str(self.path),
            model=model,
            data=data,
            method=method,
            state=status.get("state", "unknown"),
            message=status.get("message", ""),
            step=int(status.get("step") or 0),
            total_steps=int(status.get("total_steps") or 0),
            final_loss=losses[-1] if losses else None,
            final_eval_loss=evals[-1] if evals else None,
            created_at=float(status.get("created_at") or self.path.stat().st_mtime),
            has_adapter=self.has_adapter(),
        )


@dataclass
class RunSummary:
    name: str
    path: str
    model: str
    data: str  # the training data in a word (data_tag): sample, a file's stem, a Hub dataset's name
    method: str  # method_tag: qlora, lora8, lora, qdora, dora, full (+ -dpo, -orpo, -kto)
    state: str
    message: str
    step: int
    total_steps: int
    final_loss: float | None
    final_eval_loss: float | None
    created_at: float
    has_adapter: bool


def _number(value: Any) -> float | None:
    """A finite number from a status field, else None (a hand-edited or damaged status.json)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _process_start() -> float | None:
    try:
        import psutil

        return psutil.Process(os.getpid()).create_time()
    except Exception:
        return None


def method_tag(config: RunConfig) -> str:
    """The training method in a word: qlora, lora8, lora, qdora, dora or full, with the preference
    objective after it (qlora-dpo, full-kto...)."""
    if config.method == "full":
        tag = "full"
    else:
        quant = {"4bit": "q", "8bit": "8"}.get(config.quantization, "")
        base = "dora" if config.method == "dora" else "lora"
        tag = f"q{base}" if quant == "q" else f"{base}{quant}"
    objective = getattr(config, "objective", "sft")
    return tag if objective == "sft" else f"{tag}-{objective}"


def data_tag(dataset_path: str) -> str:
    """The data in a word: `sample`, an upload by its original name, a file by its stem, a Hub id by its name."""
    if not (dataset_path or "").strip():
        return "sample"
    stem = Path(dataset_path.rstrip("/")).stem if Path(dataset_path).suffix else dataset_path.rstrip("/").split("/")[-1]
    return upload_name(stem)


def default_run_name(config: RunConfig) -> str:
    """A readable name: model, data, method and when, e.g. `Qwen2.5-0.5B-Instruct-support-qlora-20261130-1945`."""
    model = safe_name(config.model_name_or_path.rstrip("/").split("/")[-1], "model", 40)
    data = safe_name(data_tag(config.dataset_path), "data", 30)
    return f"{model}-{data}-{method_tag(config)}-{time.strftime('%Y%m%d-%H%M%S')}"


def rename_run(run: Run, new_name: str) -> Run:
    """Move a run folder to runs/<new_name> beside it; config.yaml follows (run_name, output_dir)."""
    new_name = check_name((new_name or "").strip(), "new run name")
    target = run.path.parent / new_name
    if target.exists():
        raise RunError(f"a run named {shown(new_name)} already exists; choose another name")
    config = run.config()
    try:
        os.rename(run.path, target)
    except OSError as exc:
        raise RunError(f"cannot rename the run folder {run.path.name}: {exc.strerror or exc}") from None
    renamed = Run(target)
    changes = {}
    if config.run_name:
        changes["run_name"] = new_name
    if config.output_dir and Path(config.output_dir).expanduser().resolve() == run.path.resolve():
        changes["output_dir"] = str(target)
    if changes:
        config.replace(**changes).to_yaml(renamed.config_path)
    return renamed


def delete_run(run: Run) -> None:
    """Remove a run folder and everything in it; only a folder that is a run (config.yaml, status.json)."""
    if holding_run(run.path) != run.path:
        raise RunError(f"{shown(str(run.path), 200)} is not a run folder; nothing was deleted")
    try:
        shutil.rmtree(run.path)
    except OSError as exc:
        raise RunError(f"cannot delete the run folder {run.path.name}: {exc.strerror or exc}") from None


def holding_run(path: Path) -> Path | None:
    """The run folder `path` lies in (itself or an ancestor holding config.yaml and status.json)."""
    for folder in (path, *path.parents):
        if (folder / "config.yaml").is_file() and (folder / "status.json").is_file():
            return folder
    return None


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
        if candidate.is_dir() and (candidate / "config.yaml").is_file():
            return Run(candidate)
    except (OSError, ValueError):  # a name too long for the file system, a NUL character
        pass
    if isinstance(name_or_path, str) and "/" not in name_or_path and os.sep not in name_or_path:
        run = Run(runs_dir(workspace) / check_name(name_or_path))
        if run.exists():
            return run
    raise RunError(f"no run found at {shown(str(name_or_path))} (expected a run folder with config.yaml)")


def list_runs(workspace: str | Path | None = None) -> list[RunSummary]:
    """Every run in the workspace, newest first. Dead active runs are reported as interrupted."""
    out = []
    for path in runs_dir(workspace).iterdir():
        if path.is_dir() and (path / "config.yaml").is_file():
            try:
                out.append(Run(path).summary())
            except Exception:  # one broken folder must not hide the others
                continue
    return sorted(out, key=lambda s: s.created_at, reverse=True)

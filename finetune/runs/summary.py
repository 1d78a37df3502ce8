"""A run in one line (`RunSummary`), built from its small files only, and remembered per process by
the files' identity (inode, size, time): a listing of 500 runs re-reads only the runs that changed.

The final losses come from status.json, which records the size and time of the metrics.jsonl they
summarize; a metrics log that changed behind its writer's back (edited, appended to by hand, written
before the status carried a summary) is read once and its damaged lines named.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from finetune.config import RunConfig
from finetune.errors import ConfigError
from finetune.names import upload_name
from finetune.runs.folder import ACTIVE_STATES, Run
from finetune.runs.records import Damage, file_signature, read_status, summarize

CACHE_LIMIT = 20_000  # remembered run folders, all workspaces together


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
    damaged: tuple[str, ...] = ()  # what could not be read, file and line named ("metrics.jsonl line 7: ...")

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON: non-finite numbers as None, so the output is strict JSON."""
        data = asdict(self)
        data["damaged"] = list(self.damaged)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}


# the files whose identity (inode, size, mtime) decides whether a remembered summary still holds; a full
# fine-tune's adapter/ holds a model (config.json, model.safetensors) instead of an adapter
KEY_FILES = ("status.json", "config.yaml", "metrics.jsonl", "adapter/adapter_config.json")
ADAPTER_WEIGHTS = "adapter/adapter_model.safetensors"
FULL_MODEL_FILES = ("adapter/config.json", "adapter/model.safetensors")

_lock = threading.Lock()
_summaries: dict[str, tuple[tuple, RunSummary, bool]] = {}  # folder -> (key, summary, written as active)


def _key(folder: str) -> tuple:
    """The identities of a run folder's summary files (plain os.stat: 5 per run in a listing)."""
    out = [_identity(os.path.join(folder, name)) for name in KEY_FILES]
    files = (ADAPTER_WEIGHTS,) if out[-1] is not None else FULL_MODEL_FILES
    return (*out, *(_identity(os.path.join(folder, name)) for name in files))


def _identity(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def summary_of(folder: str | os.PathLike) -> RunSummary | None:
    """The summary of the run in `folder`, None when the folder is no run (neither status.json nor
    config.yaml). Read again only when one of its KEY_FILES changed; the state of a run whose status
    says it is active is checked every time (its writer may have died since: then it is interrupted)."""
    folder = os.fspath(folder)
    key = _key(folder)
    if key[0] is None and key[1] is None:
        return None
    with _lock:
        cached = _summaries.get(folder)
    if cached is not None and cached[0] == key:
        _, summary, active = cached
        if not active:
            return summary
        status = Run(folder).status()
        return replace(summary, state=str(status.get("state", "unknown")), message=str(status.get("message", "")))
    run = Run(folder)
    raw_state = read_status(run.status_path)[0].get("state")
    summary = run_summary(run)
    with _lock:
        if len(_summaries) >= CACHE_LIMIT:
            _summaries.clear()
        _summaries[folder] = (key, summary, raw_state in ACTIVE_STATES)
    return summary


def run_summary(run: Run) -> RunSummary:
    """The run in one line, read from its files now. Never raises for what they hold: damage is listed
    in `damaged`. (A listing goes through `summary_of`, which remembers it.)"""
    damage: list[Damage] = []
    status = run.status()
    raw, status_damage = read_status(run.status_path)
    damage += status_damage
    try:
        config = run.config()
        model, data, method = config.model_name_or_path, data_tag(config.dataset_path), method_tag(config)
    except ConfigError:
        model, data, method = "?", "?", "?"
        damage += run.config_damage()
    finals = _finals_from_status(run, raw)
    if finals is None:  # the status does not summarize the log as it is now: read the log
        records = run.metrics()
        lines, count = run.metrics_damage()
        damage += lines
        if count > len(lines):
            damage.append(Damage("metrics.jsonl", f"{count} damaged lines in all (skipped)"))
        finals = tuple(_last(records, key) for key in ("loss", "eval_loss"))
    damage += run.adapter_damage()
    created = raw.get("created_at")
    if created is None:
        try:
            created = run.path.stat().st_mtime
        except OSError:
            created = 0.0
    return RunSummary(
        name=run.name,
        path=str(run.path),
        model=model,
        data=data,
        method=method,
        state=str(status.get("state", "unknown")),
        message=str(status.get("message", "")),
        step=max(0, status.get("step") or 0),
        total_steps=max(0, status.get("total_steps") or 0),
        final_loss=finals[0],
        final_eval_loss=finals[1],
        created_at=float(created),
        has_adapter=run.has_adapter(),
        damaged=tuple(summarize(damage, limit=5)),
    )


def _finals_from_status(run: Run, status: dict[str, Any]) -> tuple[float | None, float | None] | None:
    """(final loss, final eval loss) as status.json recorded them, when it summarizes the metrics.jsonl
    that is there now (same size and time); None when the log must be read."""
    sig = file_signature(run.metrics_path)
    size, mtime = (sig[1], sig[2]) if sig else (0, 0)
    if status.get("metrics_bytes") != size or (size and status.get("metrics_mtime_ns") != mtime):
        return None
    if "final_loss" not in status and size:
        return None
    return status.get("final_loss"), status.get("final_eval_loss")


def _last(records: list[dict[str, Any]], key: str) -> float | None:
    for record in reversed(records):
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
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


def forget(path: str | Path) -> None:
    """Drop a run folder's remembered summary (it was renamed or deleted)."""
    with _lock:
        for key in {os.fspath(path), str(Path(path).resolve())}:
            _summaries.pop(key, None)

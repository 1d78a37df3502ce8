"""The one reader of a run folder's records: metrics.jsonl, status.json, prediction.json, trainer_state.json and the
weights files become typed values, and whatever cannot be read becomes a `Damage` naming the file and
line, never an exception. A bad line or byte is skipped and counted; the rest of the file still counts.

Nothing here writes, and nothing imports torch or safetensors: a weights file is checked by its own
header (safetensors: the 8-byte header length, the JSON header and the size it promises; torch's .pt
files: the zip directory at their end), so a listing or a pick stays cheap.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.errors import bounded, shown

MAX_DAMAGE_LISTED = 20  # damaged lines named one by one per file; the rest are counted
MAX_SAFETENSORS_HEADER = 100 * 2**20  # safetensors refuses headers above 100 MB itself


@dataclass(frozen=True)
class Damage:
    """Something in a run folder that could not be read: `file` relative to the run folder, the
    1-based `line` when the file has lines, and why."""

    file: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        """One line: a listing shows each damage on its own line (a YAML error spans several)."""
        where = f"{self.file} line {self.line}" if self.line is not None else self.file
        return bounded(f"{where}: {' '.join(self.reason.split())}", 400)


def summarize(damage: list[Damage], limit: int = 3) -> list[str]:
    """Damage as a few lines for a listing: the first `limit` named, the rest counted per file."""
    lines = [str(d) for d in damage[:limit]]
    if len(damage) > limit:
        lines.append(f"... and {len(damage) - limit} more damaged entries")
    return lines


# --- metrics.jsonl --------------------------------------------------------------------------------
@dataclass
class MetricsLog:
    """The records a metrics.jsonl holds: each a dict with an int `step` and numbers (NaN kept: a loss
    that became NaN is a fact of the run), in file order; `damage` names the lines that were skipped
    or had values dropped (`damaged_lines` counts them all, `damage` lists the first ones)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    damage: list[Damage] = field(default_factory=list)
    damaged_lines: int = 0
    end_offset: int = 0  # bytes consumed: the next incremental read starts here
    next_line: int = 1
    pending: Damage | None = None  # a last line cut short, not consumed (a writer may still finish it)


def read_metrics(path: Path, *, offset: int = 0, first_line: int = 1, name: str = "metrics.jsonl") -> MetricsLog:
    """The records of metrics.jsonl from byte `offset` on (line numbers from `first_line`). A trailing
    line without its newline that does not parse is left unconsumed (a writer may be mid-line): it is
    `pending`, and `end_offset` stays before it, so the next read sees it whole."""
    log = MetricsLog(end_offset=offset, next_line=first_line)
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return log
    except OSError as exc:
        log.damage.append(Damage(name, f"cannot be read: {exc.strerror or exc}"))
        log.damaged_lines += 1
        return log
    position, number = 0, first_line
    while position < len(data):
        newline = data.find(b"\n", position)
        complete = newline != -1
        end = newline + 1 if complete else len(data)
        raw = data[position:end]
        record, problem = _metrics_record(raw)
        if problem and not complete and record is None:
            log.pending = Damage(name, f"is cut short ({problem})", number)
            break  # not consumed: a writer may still finish it
        if record is not None:
            log.records.append(record)
        if problem:
            _note(log, Damage(name, problem, number))
        position, number = end, number + 1
        log.end_offset, log.next_line = offset + position, number
    return log


def _note(log: MetricsLog, damage: Damage) -> None:
    log.damaged_lines += 1
    if len(log.damage) < MAX_DAMAGE_LISTED:
        log.damage.append(damage)


def _metrics_record(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """(record or None, problem or ""): one line of metrics.jsonl made into a typed record."""
    text = raw.strip()
    if not text:
        return None, ""
    try:
        line = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"is not UTF-8 text (byte 0x{text[exc.start]:02x} at column {exc.start + 1})"
    try:
        value = json.loads(line)
    except RecursionError:
        return None, "is nested too deeply to read"
    except ValueError as exc:  # JSONDecodeError, or an integer of more than 4,300 digits
        return None, f"is not JSON ({getattr(exc, 'msg', None) or str(exc)[:80]})"
    if not isinstance(value, dict):
        return None, f"is {_kind(value)}, not a record"
    step = _whole(value.get("step"))
    if step is None or step < 0:
        return None, f"has no usable step (step is {_quote(value.get('step'))})"
    record: dict[str, Any] = {"step": step}
    dropped = []
    for key, item in value.items():
        if key == "step":
            continue
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            record[str(key)] = item
        else:
            dropped.append(f"{shown(str(key), 40)} is {_quote(item)}")
    return record, ("not a number: " + "; ".join(dropped[:3])) if dropped else ""


# --- status.json ----------------------------------------------------------------------------------
KNOWN_STATES = ("queued", "loading", "training", "evaluating", "saving", "done", "stopped", "failed", "interrupted")
# the fields of status.json and their types (what the writers put there); anything else is kept as it is
STATUS_TYPES: dict[str, type] = {
    "state": str,
    "message": str,
    "step": int,
    "total_steps": int,
    "epoch": float,
    "created_at": float,
    "updated_at": float,
    "pid": int,
    "process_started_at": float,
    "host": str,
    "final_loss": float,
    "final_eval_loss": float,
    "elapsed_s": float,  # training time over every session of the run (resumes add up)
    "metrics_bytes": int,
    "metrics_mtime_ns": int,
    "model": str,
    "data": str,
    "method": str,
}


def read_status(path: Path, name: str = "status.json") -> tuple[dict[str, Any], list[Damage]]:
    """status.json as a dict whose known fields have their types (STATUS_TYPES; a field of another type
    is dropped and named as damage); ({}, [damage]) when the file is missing or unreadable."""
    value, damage = read_json_object(path, name)
    if value is None:
        return {}, damage
    status: dict[str, Any] = {}
    for key, item in value.items():
        kind = STATUS_TYPES.get(key)
        typed = item if kind is None else _typed(item, kind)
        if kind is not None and typed is None and item is not None:
            damage.append(Damage(name, f"{key} is {_quote(item)}, not {_KIND_NAMES[kind]}"))
            continue
        status[key] = typed
    if "state" in status and status["state"] not in KNOWN_STATES:
        damage.append(Damage(name, f"state {shown(status['state'])} is not a state a run can be in"))
        status.pop("state")
    return status, damage


def read_prediction(path: Path, name: str = "prediction.json") -> tuple[dict[str, dict[str, Any]], list[Damage]]:
    """prediction.json (the time and cost predicted before Start, and what training measured): each part
    an object whose figures are finite numbers (a field that is not is dropped and named as damage).
    A run without the file (older, or read-only) has {} and no damage."""
    if not path.exists():
        return {}, []
    value, damage = read_json_object(path, name)
    if value is None:
        return {}, damage
    out: dict[str, dict[str, Any]] = {}
    for part, section in value.items():
        if not isinstance(section, dict):
            damage.append(Damage(name, f"{part} is {_quote(section)}, not an object"))
            continue
        out[part] = {}
        for key, item in section.items():
            if item is not None and _is_figure(key) and _typed(item, float) is None:
                damage.append(Damage(name, f"{part}.{key} is {_quote(item)}, not a number"))
                continue
            out[part][key] = item
    return out, damage


def _is_figure(key: str) -> bool:
    """The fields of prediction.json that hold a number (seconds, steps, tokens, cost, rates)."""
    return key in ("seconds", "cpu_seconds", "steps", "tokens", "tokens_per_s", "cost", "finished_at") or (
        key.startswith(("predicted_", "mean_")) or key.endswith(("_seconds", "_tokens"))
    )


def read_json_object(path: Path, name: str) -> tuple[dict[str, Any] | None, list[Damage]]:
    """A small JSON file holding one object: (the object, []) or (None, [why not]); a missing file is
    damage too (the callers read files a run always has)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, [Damage(name, "is missing")]
    except OSError as exc:
        return None, [Damage(name, f"cannot be read: {exc.strerror or exc}")]
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return None, [Damage(name, f"is not UTF-8 text (byte 0x{data[exc.start]:02x})", line)]
    except json.JSONDecodeError as exc:
        reason = "is empty" if not data.strip() else f"is not valid JSON ({exc.msg}, column {exc.colno})"
        return None, [Damage(name, reason, exc.lineno if data.strip() else None)]
    except (ValueError, RecursionError) as exc:
        return None, [Damage(name, f"cannot be read ({str(exc)[:80]})")]
    if not isinstance(value, dict):
        return None, [Damage(name, f"holds {_kind(value)}, not an object")]
    return value, []


# --- checkpoints and weights ----------------------------------------------------------------------
def read_adapter_settings(folder: Path) -> dict[str, Any]:
    """The LoRA settings a saved adapter was trained with (its adapter_config.json), in RunConfig's names:
    lora_r, lora_alpha, lora_target_modules, method. {} when the file is missing or unreadable (a
    damaged adapter is named by folder_file_problems)."""
    value, _ = read_json_object(Path(folder) / "adapter_config.json", "adapter_config.json")
    if value is None:
        return {}
    out: dict[str, Any] = {}
    rank, alpha, targets = _whole(value.get("r")), _typed(value.get("lora_alpha"), float), value.get("target_modules")
    if rank is not None and rank > 0:
        out["lora_r"] = rank
    if alpha is not None and alpha > 0:
        out["lora_alpha"] = int(alpha) if alpha.is_integer() else alpha
    if isinstance(targets, str) and targets.strip():
        out["lora_target_modules"] = targets
    elif isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets):
        # PEFT saves all-linear as every layer's full name: the module names are what a config names
        out["lora_target_modules"] = ",".join(sorted({t.rsplit(".", 1)[-1] for t in targets}))
    if isinstance(value.get("use_dora"), bool):
        out["method"] = "dora" if value["use_dora"] else "lora"
    return out


def trainer_state_problem(checkpoint: Path, relative_to: Path | None = None) -> Damage | None:
    """Why a checkpoint's trainer_state.json cannot resume a run (None when it can)."""
    name = _relative(checkpoint / "trainer_state.json", relative_to)
    value, damage = read_json_object(checkpoint / "trainer_state.json", name)
    if value is None:
        return damage[0]
    if _whole(value.get("global_step")) is None:
        return Damage(name, f"global_step is {_quote(value.get('global_step'))}, not a whole number")
    return None


def checkpoint_problems(checkpoint: Path, relative_to: Path | None = None) -> list[Damage]:
    """Everything that keeps a checkpoint folder from resuming: its trainer state and each weights,
    optimizer, scheduler or RNG file that is cut short."""
    problems = [p for p in [trainer_state_problem(checkpoint, relative_to)] if p is not None]
    problems += folder_file_problems(checkpoint, relative_to)
    return problems


def folder_file_problems(folder: Path, relative_to: Path | None = None) -> list[Damage]:
    """Damaged weights and config files directly in `folder` (safetensors, torch .pt/.pth/.bin zips,
    the JSON configs PEFT and transformers read)."""
    problems = []
    try:
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError:
        return problems
    for file in files:
        problem = file_problem(file)
        if problem:
            problems.append(Damage(_relative(file, relative_to), problem))
    return problems


JSON_CONFIGS = ("adapter_config.json", "config.json", "tokenizer_config.json", "generation_config.json")


def file_problem(file: Path) -> str:
    """Why a weights or config file is damaged ("" when it reads as whole, or is not a kind we check)."""
    suffix = file.suffix.lower()
    if suffix == ".safetensors":
        return safetensors_problem(file)
    if suffix in (".pt", ".pth", ".bin"):
        try:
            return "" if zipfile.is_zipfile(file) else "is cut short or not a torch file (no zip directory at its end)"
        except OSError as exc:
            return f"cannot be read: {exc.strerror or exc}"
    if file.name in JSON_CONFIGS or file.name == "trainer_state.json":
        value, damage = read_json_object(file, file.name)
        return "" if value is not None else damage[0].reason + (f" at line {damage[0].line}" if damage[0].line else "")
    return ""


def safetensors_problem(path: Path) -> str:
    """Why a .safetensors file is damaged ("" when its header is whole and the file is as long as the
    header says): read from the header alone, no tensor is loaded."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"is cut short ({size} bytes, not even a header)"
            length = int.from_bytes(head, "little")
            if length > min(size - 8, MAX_SAFETENSORS_HEADER):
                return f"is cut short or not a safetensors file (its header claims {length:,} bytes of {size:,})"
            header = json.loads(fh.read(length).decode("utf-8"))
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "has a damaged header (not the JSON a safetensors file starts with)"
    if not isinstance(header, dict):
        return "has a damaged header"
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        return "has a damaged header (tensor offsets missing)"
    expected = 8 + length + end
    if size < expected:
        return f"is cut short ({size:,} of {expected:,} bytes)"
    return ""


def file_signature(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime_ns) of a file, None when it is missing: how a reader notices a change."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


# --- helpers --------------------------------------------------------------------------------------
_KIND_NAMES = {str: "text", int: "a whole number", float: "a number", bool: "true or false"}


def _typed(value: Any, kind: type) -> Any:
    """`value` as `kind`, or None when it is not one (a whole float counts as an int; a float field
    takes an int; a non-finite number is no timestamp or step)."""
    if kind is str:
        return value if isinstance(value, str) else None
    if kind is int:
        return _whole(value)
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        return None
    return value if isinstance(value, kind) else None


def _whole(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _quote(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, (dict, list)):
        return _kind(value)
    return shown(value, 40)


def _kind(value: Any) -> str:
    if value is None:
        return "JSON null"
    if isinstance(value, list):
        return "a JSON array"
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, str):
        return "a JSON string"
    if isinstance(value, bool):
        return "a JSON boolean"
    return "a JSON number"


def _relative(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return path.name

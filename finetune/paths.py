"""Where paths typed into the web app may point, and whether a run fits on the disk.

The app is a server: whoever can reach it types paths that the *server* opens. So paths that
come from the app (a local model folder, `dataset_path`, `eval_dataset_path`, `output_dir`,
run names) must stay inside the allowed places:

- the workspace (runs, uploads, cache, configs),
- the bundled samples folder (read only),
- the Hugging Face hub cache (read only: models downloaded earlier),
- any folder listed in $FINETUNE_ALLOWED_PATHS (separated by `os.pathsep`), read and write.

Paths are resolved (symlinks and `..`) before they are compared, so a link inside the
workspace that points elsewhere is refused too. The command line is a local user on their own
machine and is not restricted: `start_training(..., restrict_paths=True)` is what the app passes.

Where a run may live (runs/<name> in the workspace, or a new or empty folder elsewhere that is not
inside another run) is `finetune.runs.check_run_folder`, for the CLI and the app alike.

`check_disk_space` refuses a run up front when the disk holding its folder cannot take the
adapter (or model) and its checkpoints.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from finetune.data.readers import looks_like_hub_id
from finetune.demo import SAMPLES_DIR, is_demo
from finetune.errors import FinetuneError, RunError, shown
from finetune.names import is_local_path, split_checkpoint_ref
from finetune.runs import Run, check_name, runs_dir

ALLOWED_PATHS_ENV = "FINETUNE_ALLOWED_PATHS"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
MB = 2**20


class PathNotAllowedError(FinetuneError):
    """A path typed into the app points outside the folders the app may use."""


# --- the allowed places ---------------------------------------------------------------
def _real(path: str | os.PathLike) -> Path:
    """Absolute, with `~`, `..` and every symlink resolved (also for paths that do not exist yet)."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def _hf_cache() -> Path:
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except Exception:  # noqa: BLE001 - huggingface_hub missing or broken: its default location
        home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
        return Path(os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub"))


def extra_roots() -> list[Path]:
    """The folders named in $FINETUNE_ALLOWED_PATHS."""
    text = os.environ.get(ALLOWED_PATHS_ENV, "")
    return [_real(part.strip()) for part in text.split(os.pathsep) if part.strip()]


def allowed_roots(workspace: str | os.PathLike, *, write: bool = False) -> list[Path]:
    """The folders app-typed paths may point into (resolved). `write=True`: the ones it may write to
    (the samples folder and the Hugging Face cache are for reading only)."""

    roots = [_real(workspace)]
    if not write:
        roots += [_real(SAMPLES_DIR), _real(_hf_cache())]
    roots += extra_roots()
    unique: list[Path] = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    return unique


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def check_allowed_path(
    path: str | os.PathLike, workspace: str | os.PathLike, what: str = "path", *, write: bool = False
) -> Path:
    """The resolved path when it lies inside an allowed place, else PathNotAllowedError naming it
    and saying how to allow it."""
    text = os.fspath(path)
    if not str(text).strip():
        raise PathNotAllowedError(f"{what}: no path given")
    if "\x00" in str(text):
        raise PathNotAllowedError(f"{what}: the path contains a NUL character")
    real = _real(str(text).strip())
    roots = allowed_roots(workspace, write=write)
    if any(_inside(real, root) for root in roots):
        return real
    quoted = shown(text, 300) + (f" (resolves to {shown(str(real), 300)})" if str(real) != str(text).strip() else "")
    kind = "write to" if write else "read"
    raise PathNotAllowedError(
        f"{what}: {quoted} is outside the folders this app may {kind}: "
        + ", ".join(str(r) for r in roots)
        + ". Upload the file in the Data tab or put it in the workspace, or allow its folder by adding it to "
        f"{ALLOWED_PATHS_ENV} (several folders separated by '{os.pathsep}') before starting the app."
    )


# --- what a config names ----------------------------------------------------------------
def is_local_model_name(name: str) -> bool:
    """Does the model name mean a local folder (rather than `demo` or a Hub id)?"""

    return not is_demo(name or "") and is_local_path(name)


def check_model_path(name: str, workspace: str | os.PathLike) -> None:
    """Refuse a local model folder outside the allowed places (Hub ids and `demo` pass)."""
    if is_local_model_name(name):
        check_allowed_path(name.strip(), workspace, "model_name_or_path")


def is_local_dataset(source: str) -> bool:
    text = (source or "").strip()
    return bool(text) and not looks_like_hub_id(text)


def check_dataset_path(source: str, workspace: str | os.PathLike, what: str = "dataset_path") -> None:
    """Refuse a local data file outside the allowed places (empty = the sample; Hub ids pass)."""
    if is_local_dataset(source):
        check_allowed_path(source.strip(), workspace, what)


def check_config_paths(config: Any, workspace: str | os.PathLike) -> None:
    """Every path a RunConfig names, checked against the allowed places; one error listing them all."""
    problems = []
    checks = [
        (check_model_path, (config.model_name_or_path, workspace)),
        (check_dataset_path, (config.dataset_path, workspace, "dataset_path")),
        (check_dataset_path, (config.eval_dataset_path, workspace, "eval_dataset_path")),
    ]
    if (config.output_dir or "").strip():
        checks.append((lambda p, w: check_allowed_path(p, w, "output_dir", write=True), (config.output_dir, workspace)))
    for check, args in checks:
        try:
            check(*args)
        except PathNotAllowedError as exc:
            problems.append(str(exc))
    if (getattr(config, "start_from_run", "") or "").strip():  # a run of this workspace, by name only (@step ok)
        try:
            open_workspace_run(split_checkpoint_ref(config.start_from_run)[0], workspace)
        except (FinetuneError, ValueError) as exc:
            problems.append(f"start_from_run: {exc}")
    if problems:
        raise PathNotAllowedError("\n".join(problems))


def open_workspace_run(name: Any, workspace: str | os.PathLike):
    """A run of this workspace, by its name only: never a path typed in its place."""

    if not isinstance(name, str) or not name.strip():
        raise RunError("Pick a run first.")
    check_name(name.strip())
    root = runs_dir(workspace)
    run = Run(root / name.strip())
    if not run.exists():
        raise RunError(f"no run named {shown(name.strip())} in this workspace")
    if not _inside(_real(run.path), _real(root)):
        raise RunError(f"the run folder {shown(name.strip())} points outside the workspace; it is not used")
    return run


# --- disk space ---------------------------------------------------------------------------
def _weights_size(folder: Path) -> int:
    total = 0
    for file in folder.rglob("*"):
        if file.name.endswith(WEIGHT_SUFFIXES):
            try:
                total += file.stat().st_size  # follows the hub cache's symlinks to the blobs
            except OSError:
                continue
    return total


def model_bytes_on_disk(model: str) -> int | None:
    """Size of a model's weight files: a local folder, or a Hub id found in the local cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        return _weights_size(path) or None
    try:
        from huggingface_hub import hf_hub_download

        config = Path(hf_hub_download(model, "config.json", local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or not a Hub id): unknown
        return None
    return _weights_size(config.parent) or None


def _kept_checkpoints(config: Any) -> int:
    limit = int(getattr(config, "save_total_limit", 0) or 0)
    return (limit if limit > 0 else 3) + 1  # the one being written exists before the oldest is deleted


TOKENIZER_FILES = ("tokenizer", "vocab", "merges", "special_tokens_map", "chat_template", "added_tokens")
LOGS_BYTES = 2 * MB  # train.log, metrics.jsonl, status, config, data summary
CHECKPOINT_STATE_BYTES = 64 * 2**10  # trainer_state.json, scheduler, RNG states, training args
UNKNOWN_MODEL_BYTES = 64 * MB  # the minimum checked when the model's size is unknown (not downloaded yet)


def tokenizer_bytes_on_disk(model_path: str | None) -> int:
    """Size of the tokenizer files next to a local model (each checkpoint and the adapter carry a copy)."""
    folder = Path(model_path).expanduser() if model_path else None
    if folder is None or not folder.is_dir():
        return 0
    total = 0
    for file in folder.iterdir():
        if file.name.startswith(TOKENIZER_FILES) or file.suffix in (".model", ".tiktoken"):
            try:
                total += file.stat().st_size
            except OSError:
                continue
    return total


def artifact_bytes(config: Any, model_bytes: int, tokenizer_bytes: int = 0) -> tuple[float, float, str]:
    """(final adapter or model, one checkpoint, what they hold) in bytes, the one size rule of a run's files.

    Full fine-tuning: each checkpoint holds the weights plus the optimizer state (AdamW: two float32
    moments, 4x 16-bit weights; 8-bit optimizers ~1x; Adafactor ~0.25x; SGD none). LoRA/DoRA: the
    adapter is taken as 2% of the model per rank 16 (float32 on disk); a checkpoint holds it three
    times (weights + two moments). Every checkpoint and the final folder also carry the tokenizer."""
    if getattr(config, "method", "lora") == "full":
        optim = str(getattr(config, "optim", ""))
        state = 1.0 if "8bit" in optim else 0.25 if optim == "adafactor" else 0.0 if optim == "sgd" else 4.0
        final = model_bytes
        checkpoint = model_bytes * (1 + state)
        what = f"full fine-tune: model {_size(final)}, each checkpoint {_size(checkpoint)} (weights + optimizer)"
    else:
        final = model_bytes * 0.02 * max(int(getattr(config, "lora_r", 16) or 16), 1) / 16
        checkpoint = 3 * final
        what = f"adapter {_size(final)}, each checkpoint {_size(checkpoint)} (adapter + optimizer)"
    return final + tokenizer_bytes, checkpoint + tokenizer_bytes + CHECKPOINT_STATE_BYTES, what


def disk_need_bytes(config: Any, model_bytes: int | None, tokenizer_bytes: int = 0) -> tuple[int, str]:
    """(bytes, how it was worked out) a run needs on disk: the final adapter (or model), the checkpoints
    it keeps, its logs, plus a 10% margin; the explanation's terms add up to its total (sizes:
    `artifact_bytes`)."""
    kept = _kept_checkpoints(config)
    if not model_bytes:
        need = UNKNOWN_MODEL_BYTES
        return int(need * 1.1), f"model size unknown: a minimum of {_size(need)}, +10% = {_size(int(need * 1.1))}"
    final, checkpoint, what = artifact_bytes(config, model_bytes, tokenizer_bytes)
    need = final + kept * checkpoint + LOGS_BYTES
    total = int(need * 1.1)
    how = (
        f"{what}: final {_size(final)} + {kept} checkpoints x {_size(checkpoint)} + logs {_size(LOGS_BYTES)} "
        f"= {_size(need)}, +10% = {_size(total)}"
    )
    return total, how


def _existing_ancestor(path: Path) -> Path:
    path = _real(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk_space(config: Any, target: str | os.PathLike, model_path: str | None = None) -> int:
    """Refuse (RunError) when the disk holding `target` has less free space than the run needs;
    returns the estimated need in bytes."""
    model_bytes = model_bytes_on_disk(model_path) if model_path else None
    need, how = disk_need_bytes(config, model_bytes, tokenizer_bytes_on_disk(model_path))
    where = _existing_ancestor(Path(target))
    if where.is_file():
        where = where.parent
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return need  # no answer from the file system: the run folder probe still catches an unwritable one
    if free < need:
        raise RunError(
            f"Not enough disk space for this run: {_size(free)} free on the disk of {where}, about {_size(need)} "
            f"needed ({how}). Free some space, lower save_total_limit, or choose another output_dir or workspace."
        )
    return need


def size_text(n: float) -> str:
    """A byte count for people: 1.2 GB, 340.0 MB, 12.0 KB, 512 bytes."""
    return _size(n)


def _size(n: float) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{int(n)} bytes"

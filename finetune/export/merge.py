"""Getting a finished run out: adapter zip, merged model, model card, Hub upload.

Merging always reloads the base WITHOUT quantization (bf16 on GPUs that support it, else
fp16; float32 on CPU) and merges the adapter into those weights: merging into 4-bit weights
would round the update away. A QLoRA adapter was trained against the 4-bit base, so the
merged model can differ slightly from what Compare showed; the model card says so.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from finetune.errors import ConfigError, FinetuneError, ModelError, RunError, shown
from finetune.export.model_card import TAG, model_card
from finetune.files import zip_folder
from finetune.models import load_model, load_tokenizer, resolve_model_path, save_tokenizer_for_serving
from finetune.names import is_hub_id, safe_name
from finetune.offline import hub_offline
from finetune.plan.hardware import detect_machine
from finetune.plan.planner import plan_for_inference
from finetune.runs import NO_ADAPTER_MESSAGE, Run, open_run, this_host

MERGE_MARKER = ".finetune-merge.json"  # marks a folder as our merge, so a re-merge may replace it

Progress = Callable[[float, str], Any]


class HubError(FinetuneError):
    """Uploading to the Hugging Face Hub failed (offline, no token, refused); never holds the token."""


def _require_adapter(run: Run) -> None:
    if not run.has_adapter():
        raise RunError(f"{run.name}: {NO_ADAPTER_MESSAGE}")
    run.require_intact_adapter()  # never a zip or a merge of a weights file cut short


def exports_dir(run: Run) -> Path:
    return run.path / "exports"


# model card -----------------------------------------------------------------
def write_adapter_card(run: Run) -> Path:
    """Write the card into adapter/README.md (replacing PEFT's placeholder card)."""
    path = run.adapter_dir / "README.md"
    path.write_text(model_card(run), encoding="utf-8")
    return path


# zip ------------------------------------------------------------------------
def zip_adapter(run: Run | str | Path, out_path: str | Path | None = None) -> Path:
    """A zip of adapter/ (files at the zip's root, so it unzips into a loadable folder)."""
    run = open_run(run)
    _require_adapter(run)
    try:
        cfg = run.config()
    except ConfigError:  # a damaged config.yaml: the adapter is still whole, and zipped without a new card
        cfg = None
    full = cfg.method == "full" if cfg is not None else not (run.adapter_dir / "adapter_config.json").is_file()
    suffix = "model" if full else "adapter"
    out = Path(out_path).expanduser() if out_path else exports_dir(run) / f"{run.name}-{suffix}.zip"
    if out.is_dir():
        out = out / f"{run.name}-{suffix}.zip"
    clean_stale_staging(exports_dir(run))
    try:
        if cfg is not None:
            write_adapter_card(run)
        out.parent.mkdir(parents=True, exist_ok=True)
        zip_folder(run.adapter_dir, out)
    except OSError as exc:
        raise RunError(f"cannot write the zip {out}: {exc.strerror or exc}") from None
    return out


# merge ----------------------------------------------------------------------
def _check_out_dir(run: Run, out_dir: Path) -> None:
    """Refuse to clobber anything that is not empty and not an earlier merge of this run."""
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"{out_dir} is a file; choose a folder for the merged model")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        try:
            marker = json.loads((out_dir / MERGE_MARKER).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            marker = {}
        if marker.get("run_path") != str(run.path):
            raise RunError(
                f"{out_dir} is not empty and is not an earlier merge of {run.name}; "
                "choose an empty or new folder (nothing was changed)"
            )


STAGING_MARKS = (".merging-", ".old-")  # .<folder>.merging-<host>-<pid>: a merge being built, or replaced
STALE_FOREIGN_S = 24 * 3600  # a staging folder of another host's merge is left alone this long


def _staging_name(out_dir: Path, mark: str) -> Path:
    return out_dir.parent / f".{out_dir.name}{mark}{safe_name(this_host(), 'host', 60)}-{os.getpid()}"


def clean_stale_staging(parent: Path) -> list[Path]:
    """Remove the hidden staging folders that a killed merge left in `parent` (its process is gone: on
    this host no such pid lives; from another host, older than a day). Returns what was removed."""
    removed = []
    try:
        candidates = [p for p in parent.iterdir() if p.name.startswith(".") and any(m in p.name for m in STAGING_MARKS)]
    except OSError:
        return removed
    host = safe_name(this_host(), "host", 60)
    for folder in candidates:
        tail = next(folder.name.split(m, 1)[1] for m in STAGING_MARKS if m in folder.name)
        owner, _, pid = tail.rpartition("-")
        if not pid.isdigit() or not folder.is_dir():
            continue
        if owner in ("", host):
            stale = int(pid) != os.getpid() and not _pid_exists(int(pid))
        else:
            try:
                stale = time.time() - folder.stat().st_mtime > STALE_FOREIGN_S
            except OSError:
                continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _pid_exists(pid: int) -> bool:
    import psutil

    return psutil.pid_exists(pid)


def _make_staging(out_dir: Path) -> Path:
    staging = _staging_name(out_dir, ".merging-")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_staging(out_dir.parent)  # a merge killed earlier (kill -9) left its half-made copy
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        (staging / ".write-test").write_text("ok")
        (staging / ".write-test").unlink()
    except OSError as exc:
        raise RunError(f"cannot write to {out_dir}: {exc.strerror or exc}; choose a writable folder") from None
    return staging


def _publish(staging: Path, out_dir: Path) -> None:
    """Swap the finished staging folder in; an old merge is removed only after success."""
    old = _staging_name(out_dir, ".old-")
    for file in staging.iterdir():
        if file.is_file():  # safetensors writes 0600: a server running as another user must read them
            file.chmod(0o644)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _original_dtype(model_path: str):
    """The dtype the base checkpoint is stored in, when it is a 16-bit float type."""
    import torch
    from transformers import AutoConfig

    try:
        dtype = getattr(AutoConfig.from_pretrained(model_path), "dtype", None)
    except Exception:
        return None
    dtype = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    return dtype if dtype in (torch.bfloat16, torch.float16) else None


def _merge_lora(run: Run, cfg, staging: Path, step: Callable[[float, str], None]) -> None:
    import torch
    from peft import PeftModel

    workspace = run.workspace
    step(0.05, f"Loading {cfg.model_name_or_path} without quantization (never merged into quantized weights)")
    # auto precision: bf16 on GPUs that have it, else fp16 on CUDA; float32 on CPU
    merge_cfg = cfg.replace(bf16="auto", fp16="auto")
    plan = plan_for_inference(merge_cfg, detect_machine())
    base = load_model(merge_cfg, workspace, plan=plan, quantization="none")
    if getattr(base, "is_quantized", False) or getattr(base.config, "quantization_config", None):
        raise ModelError(
            f"{cfg.model_name_or_path} is stored quantized, so there are no 16-bit weights to merge into; "
            "train from the original (unquantized) model, or share the adapter instead"
        )
    step(0.35, "Attaching the adapter")
    try:
        model = PeftModel.from_pretrained(base, str(run.adapter_dir), is_trainable=False)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"Could not load the adapter in {run.adapter_dir}: {str(exc).splitlines()[0][:300]}") from None
    step(0.5, "Merging the adapter into the weights")
    merged = model.merge_and_unload()
    stored = _original_dtype(resolve_model_path(cfg.model_name_or_path, workspace))
    if stored is not None and merged.dtype == torch.float32:
        merged = merged.to(stored)  # merged in float32 on CPU; keep the checkpoint's size on disk
    step(0.65, "Saving the merged model (safetensors)")
    merged.save_pretrained(staging, max_shard_size="2GB")
    if not (staging / "generation_config.json").is_file() and getattr(merged, "generation_config", None):
        merged.generation_config.save_pretrained(staging)


def _copy_full(run: Run, staging: Path, step: Callable[[float, str], None]) -> None:
    step(0.1, "Copying the fine-tuned model")
    for file in sorted(run.adapter_dir.iterdir()):
        if file.is_file() and not file.name.startswith(".") and file.name != "README.md":
            shutil.copy2(file, staging / file.name)


def _save_tokenizer(run: Run, cfg, staging: Path) -> None:
    own = any((run.adapter_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
    tokenizer = load_tokenizer(cfg, run.workspace, path=str(run.adapter_dir) if own else None)
    save_tokenizer_for_serving(tokenizer, staging)


def saved_dtype(folder: str | Path) -> str:
    """The dtype a saved model's weights are stored in (from its config.json), e.g. "bfloat16",
    "float32"; "" when the folder does not say."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    dtype = config.get("dtype") or config.get("torch_dtype") or ""
    return str(dtype).removeprefix("torch.")


def merge_adapter(run: Run | str | Path, out_dir: str | Path | None = None, progress: Progress | None = None) -> Path:
    """Merge the adapter into an unquantized copy of the base and save a standalone model
    (16-bit on a GPU, float32 on CPU unless the base checkpoint is stored in 16 bits; see
    `saved_dtype(folder)`).

    Default folder <run>/exports/merged. An existing folder is replaced only when it is an
    earlier merge of this run; the new one is built beside it and swapped in at the end.
    `progress(fraction, message)` is called at each stage. For method=full the saved model
    is copied as it is.
    """
    run = open_run(run)
    _require_adapter(run)
    cfg = run.config()
    out = Path(out_dir).expanduser().resolve() if out_dir else exports_dir(run) / "merged"
    _check_out_dir(run, out)

    def step(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, message)

    staging = _make_staging(out)
    try:
        if cfg.method == "full":
            _copy_full(run, staging, step)
        else:
            _merge_lora(run, cfg, staging, step)
        _save_tokenizer(run, cfg, staging)
        step(0.9, "Writing the model card")
        (staging / "README.md").write_text(model_card(run, merged=True), encoding="utf-8")
        write_adapter_card(run)
        marker = {"run": run.name, "run_path": str(run.path), "method": cfg.method, "created_at": time.time()}
        (staging / MERGE_MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
        _publish(staging, out)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise RunError(f"cannot write the merged model to {out}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    step(1.0, f"Saved to {out}")
    return out


# Hub ------------------------------------------------------------------------
def check_repo_id(repo_id: str) -> str:
    """`owner/name` with the Hub's characters; raises ConfigError otherwise."""
    repo_id = (repo_id or "").strip() if isinstance(repo_id, str) else ""
    if not is_hub_id(repo_id, owner=True) or "--" in repo_id or repo_id.endswith(".git"):
        raise ConfigError(
            [
                f"repo_id: {shown(repo_id)} is not a Hub repository id; use owner/name (e.g. alice/my-adapter) with "
                "letters, digits, '-', '_' and '.'"
            ]
        )
    return repo_id


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def push_to_hub(folder: str | Path, repo_id: str, token: str | None = None, private: bool = True) -> str:
    """Upload an adapter or merged-model folder to the Hub; returns the repository URL.

    The token comes from the argument, else HF_TOKEN / a stored `hf auth login`; it is only
    handed to huggingface_hub, never written or logged, and scrubbed from error messages.
    """
    repo_id = check_repo_id(repo_id)
    folder = Path(folder).expanduser()
    if not ((folder / "adapter_config.json").is_file() or (folder / "config.json").is_file()):
        raise RunError(f"{folder} holds no adapter or model to upload (no adapter_config.json / config.json)")
    if hub_offline():
        raise HubError(
            "Cannot upload: the Hugging Face Hub is in offline mode (HF_HUB_OFFLINE is set). Unset it and retry."
        )
    import huggingface_hub

    token = token or huggingface_hub.get_token()
    if not token:
        raise HubError("Cannot upload: no Hugging Face token. Paste a write token or set HF_TOKEN.")
    try:
        api = huggingface_hub.HfApi(token=token)
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            commit_message=f"Upload from {TAG}",
            ignore_patterns=[MERGE_MARKER, ".*", "*.tmp", "checkpoint-*/**"],
        )
    except Exception as exc:  # noqa: BLE001 - every failure becomes a clear, token-free message
        reason = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, token)
        raise HubError(f"Upload to {repo_id} failed: {reason[:300]}") from None
    return str(getattr(url, "url", None) or f"https://huggingface.co/{repo_id}")

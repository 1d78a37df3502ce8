"""Tokenized-dataset cache: a second run on the same data skips TRL's tokenization.

An entry is what `SFTTrainer` prepared (chat template applied, tokenized, labels masked,
truncated, packed), stored with `datasets.Dataset.save_to_disk` under
`<workspace>/cache/tokenized/<key>/{train,eval}` and loaded back memory-mapped. On a hit the
trainer gets the prepared datasets with `dataset_kwargs={"skip_prepare_dataset": True}`, so it
trains on exactly the tensors TRL made the first time (tests compare them).

The key hashes everything the prepared tensors depend on: the normalized rows (train and
validation), the tokenizer (its full serialized vocabulary/merges/normalizers, special tokens,
chat template), the data settings of the SFTConfig (max_length, packing, strategy, loss masks,
text field, truncation, EOS) and the versions of TRL, transformers, tokenizers and datasets.
Entries are written atomically (a temporary folder renamed into place); the least recently used
ones beyond MAX_ENTRIES are removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from finetune.runs import cache_dir
from finetune.train.distributed import is_main_process

FORMAT_VERSION = 1
MAX_ENTRIES = 16
KEEP_COLUMNS = ("input_ids", "labels", "seq_lengths")
# SFTConfig fields that change what `SFTTrainer._prepare_dataset` produces
ARG_FIELDS = (
    "max_length",
    "packing",
    "packing_strategy",
    "padding_free",
    "eval_packing",
    "assistant_only_loss",
    "completion_only_loss",
    "dataset_text_field",
    "truncation_mode",
    "shuffle_dataset",
    "eos_token",
    "pad_token",
    "chat_template_path",
    "dataset_kwargs",
)


def _sha(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, ensure_ascii=False, default=str)
        if isinstance(data, str):
            data = data.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of everything that decides how the tokenizer turns rows into ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        vocab = backend.to_str()  # vocabulary, merges, normalizer, pre-tokenizer, post-processor, added tokens
    else:
        vocab = sorted(tokenizer.get_vocab().items())
    settings = {
        "class": type(tokenizer).__name__,
        "chat_template": getattr(tokenizer, "chat_template", None),
        "special": {k: str(v) for k, v in (getattr(tokenizer, "special_tokens_map", None) or {}).items()},
        "added": sorted(str(t) for t in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values()),
        "padding_side": getattr(tokenizer, "padding_side", None),
        "truncation_side": getattr(tokenizer, "truncation_side", None),
        "add_bos": getattr(tokenizer, "add_bos_token", None),
        "add_eos": getattr(tokenizer, "add_eos_token", None),
    }
    return _sha(vocab, settings)


def _versions() -> dict[str, str]:
    import datasets
    import tokenizers
    import transformers
    import trl

    return {
        "trl": trl.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "datasets": datasets.__version__,
    }


def cache_key(train_rows: list[dict], eval_rows: list[dict] | None, tokenizer: Any, args: Any) -> str:
    """The cache key of the prepared datasets for these rows, tokenizer and SFTConfig."""
    settings = {name: getattr(args, name, None) for name in ARG_FIELDS}
    if settings["shuffle_dataset"]:
        settings["seed"] = getattr(args, "seed", None)
    return _sha(
        FORMAT_VERSION,
        _versions(),
        settings,
        tokenizer_fingerprint(tokenizer),
        _sha(train_rows),
        _sha(eval_rows or []),
    )[:40]


def cache_root(workspace: str | Path | None = None) -> Path:
    return cache_dir(workspace) / "tokenized"


def entry_dir(key: str, workspace: str | Path | None = None) -> Path:
    return cache_root(workspace) / key


def load(key: str, workspace: str | Path | None = None):
    """(train, eval or None) prepared datasets for `key`, or None when not cached (or unreadable)."""
    from datasets import load_from_disk

    folder = entry_dir(key, workspace)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        train = load_from_disk(str(folder / "train"))
        evaluation = load_from_disk(str(folder / "eval")) if meta.get("has_eval") else None
    except Exception:  # a broken entry is a miss; the next save replaces it
        shutil.rmtree(folder, ignore_errors=True)
        return None
    try:
        os.utime(meta_path)  # least recently used goes first when pruning
    except OSError:
        pass
    return train, evaluation


def _keep(dataset):
    return dataset.select_columns([c for c in KEEP_COLUMNS if c in dataset.column_names])


def save(key: str, train, evaluation, workspace: str | Path | None = None) -> Path | None:
    """Store prepared datasets under `key`; None when they cannot be stored (not a `Dataset`, read-only
    workspace, another rank's process, ...). Never raises: the cache only ever saves time."""
    from datasets import Dataset

    if not is_main_process() or not isinstance(train, Dataset):
        return None
    if evaluation is not None and not isinstance(evaluation, Dataset):
        return None
    final = entry_dir(key, workspace)
    if (final / "meta.json").is_file():
        return final
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _keep(train).save_to_disk(str(tmp / "train"))
        if evaluation is not None:
            _keep(evaluation).save_to_disk(str(tmp / "eval"))
        meta = {
            "format": FORMAT_VERSION,
            "created": time.time(),
            "has_eval": evaluation is not None,
            "train_rows": len(train),
            "eval_rows": len(evaluation) if evaluation is not None else 0,
            **_versions(),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return final if (final / "meta.json").is_file() else None
    prune(workspace)
    return final


def prune(workspace: str | Path | None = None, keep: int = MAX_ENTRIES) -> list[Path]:
    """Remove the least recently used entries beyond `keep`; returns what was removed."""
    root = cache_root(workspace)
    entries = [p for p in root.iterdir() if (p / "meta.json").is_file()] if root.is_dir() else []
    entries.sort(key=lambda p: (p / "meta.json").stat().st_mtime, reverse=True)
    removed = []
    for old in entries[keep:]:
        shutil.rmtree(old, ignore_errors=True)
        removed.append(old)
    return removed


def mark_prepared(args: Any) -> None:
    """Make an SFTConfig take cached datasets as they are: no second preparation. The loss masks are
    already in the `labels` column, so the flags that only steer preparation are turned off (TRL
    would otherwise insist that data given with `assistant_only_loss` be conversational)."""
    args.dataset_kwargs = {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    args.assistant_only_loss = False
    args.completion_only_loss = False

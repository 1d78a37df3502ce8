"""Hub dataset ids -> raw rows, failing fast and clearly when there is no network."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from finetune.data.raw import SUPPORTED_EXTENSIONS, RawData
from finetune.errors import DataError


def _offline() -> bool:
    return any(
        os.environ.get(name, "").lower() in ("1", "true", "yes") for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe: without it, `load_dataset` retries for ~25 s before failing offline."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def read_hub(dataset_id: str) -> RawData:
    """The `train` split (else the first split) of a Hub dataset."""
    no_network = (
        f"could not download dataset '{dataset_id}' from the Hugging Face Hub: no network access. "
        f"Use a local file ({', '.join(SUPPORTED_EXTENSIONS)}) instead"
    )
    if not _offline() and not _hub_reachable():
        raise DataError(no_network)
    try:
        import datasets

        loaded = datasets.load_dataset(dataset_id)
    except ConnectionError:
        raise DataError(no_network) from None
    except Exception as exc:
        name = type(exc).__name__
        if "NotFound" in name or "FileNotFound" in name:
            raise DataError(
                f"no dataset '{dataset_id}' on the Hugging Face Hub (check the name; private or gated "
                "datasets need you to log in with a token)"
            ) from None
        raise DataError(f"could not load dataset '{dataset_id}' from the Hugging Face Hub: {exc}") from None
    if hasattr(loaded, "keys"):
        splits = list(loaded.keys())
        if not splits:
            raise DataError(f"dataset '{dataset_id}' has no splits")
        split = "train" if "train" in splits else splits[0]
        dataset = loaded[split]
    else:
        split, dataset = "train", loaded
    raw = RawData(dataset_id, "row")
    if split != "train":
        raw.warnings.append(f"dataset '{dataset_id}' has no 'train' split; used '{split}'")
    for index, row in enumerate(dataset):
        raw.add(index + 1, row)
    if raw.total_rows == 0:
        raise DataError(f"dataset '{dataset_id}' holds no rows")
    raw.columns = list(dataset.column_names)
    return raw

"""Hub dataset ids -> raw rows, failing fast and clearly when there is no network."""

from __future__ import annotations

from finetune.data.raw import SUPPORTED_EXTENSIONS, RawData
from finetune.errors import DataError
from finetune.offline import hub_offline, hub_reachable


def read_hub(dataset_id: str) -> RawData:
    """The `train` split (else the first split) of a Hub dataset."""
    no_network = (
        f"could not download dataset '{dataset_id}' from the Hugging Face Hub: no network access. "
        f"Use a local file ({', '.join(SUPPORTED_EXTENSIONS)}) instead"
    )
    if not hub_offline(datasets=True) and not hub_reachable():
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

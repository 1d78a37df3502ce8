"""Whether the Hugging Face Hub may and can be reached: one answer for models, datasets, shapes and uploads."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

TRUE = ("1", "true", "yes", "on")


def hub_offline(datasets: bool = False) -> bool:
    """HF_HUB_OFFLINE (or, for `datasets`, HF_DATASETS_OFFLINE) is set: nothing may be fetched."""
    from huggingface_hub import constants

    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if datasets else ("HF_HUB_OFFLINE",)
    flagged = any(os.environ.get(name, "").strip().lower() in TRUE for name in names)
    return flagged or bool(constants.is_offline_mode())


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the Hub endpoint: without it a download retries for ~25 s before failing."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False

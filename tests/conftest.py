"""Shared fixtures: every test gets its own workspace; the demo model is built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """A workspace whose cache (demo model) is shared by every test in the session."""
    return tmp_path_factory.mktemp("shared-workspace")


@pytest.fixture
def workspace(tmp_path, shared_cache, monkeypatch) -> Path:
    """A fresh workspace per test, with the demo model cache shared to keep tests fast."""
    from finetune.demo import demo_model_path

    ws = tmp_path / "workspace"
    ws.mkdir()
    demo_model_path(shared_cache)  # build once
    (ws / "cache").symlink_to(shared_cache / "cache", target_is_directory=True)
    monkeypatch.setenv("FINETUNE_WORKSPACE", str(ws))
    return ws


@pytest.fixture
def demo_path(workspace) -> Path:
    from finetune.demo import demo_model_path

    return demo_model_path(workspace)

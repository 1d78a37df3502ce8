"""Failure messages: a full disk reads as a full disk whichever library hit it."""

from __future__ import annotations

import errno

from finetune.config import RunConfig
from finetune.train.failures import explain_failure


class SafetensorError(Exception):
    """Stands for safetensors' own error type, which is no OSError."""


def test_a_full_disk_is_named_whoever_reports_it():
    from_os = explain_failure(OSError(errno.ENOSPC, "No space left on device"), RunConfig())
    native = explain_failure(
        SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"), RunConfig()
    )
    for message in (from_os, native):
        assert message.startswith("The disk is full (No space left on device)") and "Resume" in message
    other = explain_failure(SafetensorError("header too large"), RunConfig())
    assert other.startswith("Training failed: SafetensorError: header too large")


def test_a_native_writer_failing_on_a_full_disk_reads_as_a_full_disk(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from finetune.train import failures

    error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10, 10, 0))
    assert failures.explain_failure(error, RunConfig(), tmp_path).startswith("The disk is full")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 0, 10**12))
    assert failures.explain_failure(error, RunConfig(), tmp_path).startswith("Training failed: RuntimeError")

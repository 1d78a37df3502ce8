"""The in-memory mirror of one metrics.jsonl: the writer (a training job) appends to both, readers
are served from memory, and the buffer follows the file: when another process appended, only the new
lines are read; when it was replaced or cut (a resume rewrites it), all of it. Damaged lines are
skipped and counted by the typed reader (finetune.runs.records.read_metrics)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from finetune.runs.records import MAX_DAMAGE_LISTED, Damage, file_signature, read_metrics

SUMMARY_KEYS = ("loss", "eval_loss")  # the metrics whose last value status.json keeps (final_<key>)


class MetricsBuffer:
    """Lock-guarded records of one metrics.jsonl, loaded lazily."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] | None = None
        self._sig: tuple[int, int, int] | None = None  # the file as the buffer last saw it
        self._offset = 0  # bytes of the file the buffer holds
        self._line = 1  # the line number the next read starts at
        self._damage: list[Damage] = []  # the first damaged lines consumed so far
        self._damaged = 0  # how many damaged lines were consumed
        self._pending: Damage | None = None  # a last line cut short, read again next time

    def append(self, record: dict[str, Any]) -> None:
        """Append one record to the file (flushed and synced) and to the buffer."""
        line = json.dumps(record, default=float)
        with self._lock:
            self._load()
            in_sync = self._pending is None and self._offset == (self._sig or (0, 0, 0))[1]
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            self._records.append(record)
            sig = file_signature(self.path)
            if in_sync and sig is not None:
                self._offset, self._line, self._sig = sig[1], self._line + 1, sig
            else:  # the file held more than the buffer: read it whole next time
                self._sig = None

    def _load(self) -> None:
        """Bring the buffer up to the file (the caller holds the lock)."""
        sig = file_signature(self.path)
        if self._records is not None and sig == self._sig:
            return
        old = self._sig
        grew = self._records is not None and old is not None and sig is not None
        if not (grew and sig[0] == old[0] and sig[1] >= self._offset):
            self._records, self._offset, self._line, self._damage, self._damaged = [], 0, 1, [], 0
        log = read_metrics(self.path, offset=self._offset, first_line=self._line)
        self._records.extend(log.records)
        self._offset, self._line = log.end_offset, log.next_line
        self._damage = (self._damage + log.damage)[:MAX_DAMAGE_LISTED]
        self._damaged += log.damaged_lines
        self._pending = log.pending
        self._sig = sig

    def records(self, since: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            self._load()
            return list(self._records[since:])

    def count(self) -> int:
        with self._lock:
            self._load()
            return len(self._records)

    def damage(self) -> tuple[list[Damage], int]:
        """(the first damaged lines, how many there are in all), a last line cut short included."""
        with self._lock:
            self._load()
            pending = [self._pending] if self._pending else []
            return self._damage + pending, self._damaged + len(pending)

    def forget(self) -> None:
        """The next read comes from disk, whole."""
        with self._lock:
            self._records, self._sig = None, None

    def summary(self) -> dict[str, Any]:
        """final_loss, final_eval_loss and the size and time of the file they summarize, for status.json,
        when the file holds no damage; else {} (the status keeps what it had, and a listing reads the log)."""
        with self._lock:
            self._load()
            sig = self._sig
            if self._damaged or self._pending:
                return {}
            out: dict[str, Any] = {}
            for key in SUMMARY_KEYS:
                values = (m[key] for m in reversed(self._records) if isinstance(m.get(key), (int, float)))
                out[f"final_{key}"] = next(values, None)
            out["metrics_bytes"], out["metrics_mtime_ns"] = (sig[1], sig[2]) if sig else (0, 0)
            return out

"""Errors that carry a message meant for the user: what is wrong, where, and what to change."""

from __future__ import annotations


class FinetuneError(Exception):
    """Base class: str(error) is a complete, user-facing explanation (never a traceback)."""


class ConfigError(FinetuneError):
    """One or more settings are invalid; `problems` lists every one of them."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("Invalid settings:\n" + "\n".join(f"  - {p}" for p in self.problems))


class DataError(FinetuneError):
    """A dataset cannot be used at all (unreadable, empty, no usable rows, unknown columns...)."""


class ModelError(FinetuneError):
    """A model cannot be found, loaded or run on this hardware."""


class BusyError(FinetuneError):
    """Another training job is already running in this process."""


class RunError(FinetuneError):
    """A run folder is missing, unsafe, or not in a state that allows the action."""

"""Unexpected errors (a bug, not a user's mistake): the traceback goes to a log file, the person sees one
line naming the error and where the details are. The CLI's `main()` and every app handler end here.

Details go to <workspace>/logs/errors.log (the last workspace a Studio opened in this process, else
$FINETUNE_WORKSPACE, else ./workspace); when that cannot be written, to the system's temporary folder.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import traceback
from pathlib import Path

from finetune.errors import bounded

LOG_NAME = "errors.log"
MAX_LOG_BYTES = 5 * 2**20  # the log is started afresh (the old one kept as errors.log.1) beyond this

_lock = threading.Lock()
_workspace: Path | None = None


def use_workspace(workspace: str | os.PathLike) -> None:
    """Write details into this workspace's logs/ from now on (a Studio calls it when it opens)."""
    global _workspace
    _workspace = Path(workspace)


def log_path() -> Path:
    workspace = _workspace or Path(os.environ.get("FINETUNE_WORKSPACE") or "workspace")
    return workspace / "logs" / LOG_NAME


def record(exc: BaseException, action: str = "") -> Path | None:
    """Append the traceback of `exc` (and what was being done) to the error log; returns where it went,
    None when no file could take it (then it goes to stderr)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    text = f"--- {stamp} pid {os.getpid()}{f' while {action}' if action else ''}\n"
    text += "".join(traceback.format_exception(exc)) + "\n"
    for path in (log_path(), Path(tempfile.gettempdir()) / f"finetune-{LOG_NAME}"):
        try:
            with _lock:
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.is_file() and path.stat().st_size > MAX_LOG_BYTES:
                    os.replace(path, path.with_name(path.name + ".1"))
                with open(path, "a", encoding="utf-8") as fh:
                    fh.write(text)
            return path.resolve()
        except OSError:
            continue
    import sys

    print(text, file=sys.stderr)
    return None


def describe(exc: BaseException, where: Path | None, *, workspace: str | os.PathLike | None = None) -> str:
    """One line: the error's type and first line, and where the details were written (relative to
    `workspace` when inside it: the app never shows a server's full paths)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    head = f"Unexpected error: {type(exc).__name__}" + (f": {bounded(first, 300)}" if first else "")
    if where is None:
        return f"{head}. The details were printed on the server's console."
    shown = str(where)
    if workspace is not None:
        try:
            shown = f"{where.relative_to(Path(workspace).resolve()).as_posix()} in the workspace"
        except ValueError:
            shown = f"{where.name} in the server's temporary folder"
    return f"{head}. This is a bug, not something you did; the details were written to {shown}."


def unexpected(exc: BaseException, action: str = "", *, hide_paths: bool = False) -> str:
    """Record `exc` and return the line to show (`hide_paths`: the app, paths relative to the workspace)."""
    where = record(exc, action)
    workspace = (_workspace or Path(os.environ.get("FINETUNE_WORKSPACE") or "workspace")) if hide_paths else None
    return describe(exc, where, workspace=workspace)

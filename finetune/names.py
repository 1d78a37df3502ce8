"""Every naming rule in one place: what a run, preset or file may be called, what a Hugging Face
Hub id looks like, and whether a name means a local folder rather than a Hub id.

Names that become folder or file names must never escape their folder (`..`, slashes, an absolute
path) and stay short enough for every file system. Callers raise their own error type with the
message `name_problem` gives, so a run name is a RunError and a preset name a ConfigError.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from finetune.errors import shown

MAX_NAME_CHARS = 100  # run names (and so run folders)
MAX_PRESET_CHARS = 64
# a folder or file name we create or accept: a letter or digit first, then letters, digits, . _ -
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# a Hugging Face Hub model id: `name` or `owner/name`
HUB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")
# a Hub repository id with its owner (datasets, uploads): `owner/name`, each at most 96 characters
HUB_REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
UPLOAD_PREFIX_CHARS = 10  # an uploaded file is stored as <sha256 prefix>-<its name> (studio.DataDesk)


def name_problem(name: object, what: str = "run name", max_chars: int = MAX_NAME_CHARS) -> str | None:
    """Why `name` may not name a folder of ours (a message naming `what`), or None when it may."""

    if isinstance(name, str) and len(name) > max_chars:
        return f"{what} {shown(name)} is not allowed: it is too long (at most {max_chars} characters)"
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".." in name:
        return f"{what} {shown(name)} is not allowed: use letters, digits, '-', '_' and '.' (no slashes or '..')"
    return None


def safe_name(text: str, fallback: str = "run", max_chars: int = 80) -> str:
    """`text` made into a file or folder name: runs of other characters become '-', no leading dot, no '..'."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text or ""))
    name = re.sub(r"\.{2,}", ".", name).strip(".-")[:max_chars].strip(".-")
    return name or fallback


def is_hub_id(text: str, *, owner: bool = False) -> bool:
    """`text` has the shape of a Hub id (`owner/name`; `name` alone too unless `owner`), never `..`."""
    pattern = HUB_REPO_RE if owner else HUB_ID_RE
    return isinstance(text, str) and ".." not in text and pattern.fullmatch(text) is not None


def is_local_path(text: str) -> bool:
    """Does `text` mean a local file or folder rather than a Hub id? An existing path always does (a
    relative folder shadows a Hub id of the same spelling); so does anything written like a path
    (`./x`, `/x`, `~/x`, a backslash) or a name with a separator that no Hub id could have."""
    text = (text or "").strip()
    if not text:
        return False
    if text.startswith((".", "/", "~")) or "\\" in text or "\x00" in text:
        return True
    if os.sep in text and not is_hub_id(text):
        return True
    try:
        return Path(text).expanduser().exists()
    except (OSError, ValueError):  # a name too long for the file system
        return True


def display_name(path: str | os.PathLike) -> str:
    """The name a person knows a file by in a message: its file name, an upload by its original name
    (never the <hash>- prefix the app stores it under, nor the server's folders)."""
    return upload_name(Path(path).name or str(path))


def upload_name(name: str) -> str:
    """The name a person gave a file the app stored as <hash>-<name>; any other name as it is."""
    prefix = name[:UPLOAD_PREFIX_CHARS]
    hashed = len(name) > UPLOAD_PREFIX_CHARS and name[UPLOAD_PREFIX_CHARS] == "-"
    return name[UPLOAD_PREFIX_CHARS + 1 :] if hashed and all(ch in "0123456789abcdef" for ch in prefix) else name


# words in a model's name that say it was instruction- or chat-tuned (Qwen2.5-0.5B-Instruct, gemma-2-2b-it...)
INSTRUCT_MARKERS = ("instruct", "chat", "sft", "dpo", "rlhf", "tulu", "hermes", "zephyr", "assistant")
IT_SUFFIX_RE = re.compile(r"[-_]it($|[-_.])")  # gemma-2-2b-it, but not ...-italian


def says_instruction_tuned(model: str) -> bool:
    """Does a model's name say it was instruction-tuned? (The built-in demo was not: it only read text.)"""
    last = str(model or "").strip().rstrip("/").split("/")[-1].lower()
    return any(marker in last for marker in INSTRUCT_MARKERS) or IT_SUFFIX_RE.search(last) is not None


_STORED_UPLOAD_RE = re.compile(rf"\b[0-9a-f]{{{UPLOAD_PREFIX_CHARS}}}-(?=[A-Za-z0-9])")


def public_text(text: str, workspace: str | os.PathLike) -> str:
    """A message as the web app may show it: paths inside the workspace relative to it, and uploads by
    the name their owner gave them (no <hash>- prefix); never the server's folders."""
    root = str(Path(workspace).resolve())
    text = text.replace(root + os.sep, "").replace(root, "the workspace")
    return _STORED_UPLOAD_RE.sub("", text)


# a checkpoint of a run, as `start_from_run` names it: `<run>@<step>`, or the checkpoint's folder
CHECKPOINT_SEP = "@"
CHECKPOINT_RE = re.compile(r"(?:checkpoint-)?(\d{1,12})")


def checkpoint_ref(run_name: str, step: int) -> str:
    """How a checkpoint of a run is named: `run@step`."""
    return f"{run_name}{CHECKPOINT_SEP}{int(step)}"


def split_checkpoint_ref(text: str) -> tuple[str, int | None]:
    """(run name or folder, step or None): `run@20` and `run@checkpoint-20` -> (run, 20); a checkpoint
    folder `<run>/checkpoints/checkpoint-20` -> (its run folder, 20); anything else -> (text, None).
    A malformed step (`run@x`) raises ValueError naming it."""
    text = (text or "").strip()
    if CHECKPOINT_SEP in text:
        run, _, step = text.rpartition(CHECKPOINT_SEP)
        match = CHECKPOINT_RE.fullmatch(step.strip())
        if not run.strip() or match is None:
            raise ValueError(f"{text!r}: write a checkpoint as <run>@<step>, e.g. my-run@20")
        return run.strip(), int(match.group(1))
    path = Path(text)
    match = CHECKPOINT_RE.fullmatch(path.name) if path.name.startswith("checkpoint-") else None
    if match and path.parent.name == "checkpoints":
        return str(path.parent.parent), int(match.group(1))
    return text, None

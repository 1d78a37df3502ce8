"""Writing files so that a reader never sees half of one: every file the engine rewrites goes
through `replacing` (a temporary file renamed over the target), and folders are zipped here.

And the files that ship with the engine but live at the top of the repository: `presets/` and
`accelerate_configs/` (`shipped_dir`). A built package carries copies in `finetune/shipped/` (setup.py's
build hook); a checkout (or an editable install) reads the repository's folders."""

from __future__ import annotations

import os
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed over `path`, on failure removed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def zip_folder(folder: Path, out: Path, *, deflate: bool = True) -> Path:
    """Zip the files of `folder` (at the zip's root; no links, no hidden files) into `out`, atomically.
    `deflate=False` stores them: safetensors weights barely compress and a merged model is large."""
    compression = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with replacing(out) as tmp, zipfile.ZipFile(tmp, "w", compression=compression, allowZip64=True) as zf:
        for file in sorted(folder.rglob("*")):
            if file.is_file() and not file.is_symlink() and not file.name.startswith("."):
                zf.write(file, file.relative_to(folder).as_posix())
    return out


# --- files shipped beside the package ----------------------------------------------------------------
PACKAGE = Path(__file__).resolve().parent
NAMES = ("presets", "accelerate_configs")


def shipped_dir(name: str) -> Path:
    """The folder `name` (one of NAMES): the installed package's copy, else the repository's."""
    if name not in NAMES:
        raise ValueError(f"no shipped folder {name!r}; expected one of {', '.join(NAMES)}")
    installed = PACKAGE / "shipped" / name
    return installed if installed.is_dir() else PACKAGE.parent / name

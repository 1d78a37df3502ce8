"""Files that ship with the engine but live at the top of the repository: `presets/` and
`accelerate_configs/`. A built package carries copies in `finetune/shipped/` (setup.py's build
hook); a checkout (or an editable install) reads the repository's folders."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
NAMES = ("presets", "accelerate_configs")


def shipped_dir(name: str) -> Path:
    """The folder `name` (one of NAMES): the installed package's copy, else the repository's."""
    if name not in NAMES:
        raise ValueError(f"no shipped folder {name!r}; expected one of {', '.join(NAMES)}")
    installed = PACKAGE / "shipped" / name
    return installed if installed.is_dir() else PACKAGE.parent / name

"""Shell commands that reproduce the app's training run elsewhere ("run this on your cluster").

The commands start the same engine (`finetune train`), so the run they make has the same run
folder layout the app opens, compares and exports: point FINETUNE_WORKSPACE (or --workspace)
at storage the app can see. They are meant to be run from a checkout of this repository, which
ships the accelerate configs in `accelerate_configs/`.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import yaml

# strategy -> shipped accelerate config (see accelerate_configs/*.yaml for when to use which)
STRATEGIES = {
    "ddp": "ddp.yaml",
    "deepspeed_zero2": "deepspeed_zero2.yaml",
    "deepspeed_zero3": "deepspeed_zero3.yaml",
    "fsdp": "fsdp.yaml",
}
CONFIGS_DIR = "accelerate_configs"  # relative to the repository root, where the command is run


def accelerate_config_path(strategy: str = "ddp") -> Path:
    """The shipped accelerate config for `strategy`, as a file in this checkout."""
    return Path(__file__).resolve().parent.parent / CONFIGS_DIR / _config_name(strategy)


def train_command(config_path: str, overrides: dict[str, Any] | None = None) -> str:
    """`finetune train --config PATH [--set key=value ...]`, quoted for a POSIX shell."""
    return _join(["finetune", "train", "--config", str(config_path), *_set_args(overrides)])


def accelerate_command(
    config_path: str,
    num_processes: int = 8,
    strategy: str = "ddp",
    *,
    overrides: dict[str, Any] | None = None,
) -> str:
    """`accelerate launch` of the same training, on `num_processes` GPUs with a shipped config.

    For several machines add accelerate's --num_machines/--machine_rank/--main_process_ip
    (docs/deploy.md); num_processes then counts the GPUs of all machines together."""
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"num_processes must be a positive whole number, got {num_processes!r}")
    words = [
        "accelerate",
        "launch",
        "--config_file",
        f"{CONFIGS_DIR}/{_config_name(strategy)}",
        "--num_processes",
        str(num_processes),
        "-m",
        "finetune.cli",
        "train",
        "--config",
        str(config_path),
        *_set_args(overrides),
    ]
    return _join(words)


def _config_name(strategy: str) -> str:
    try:
        return STRATEGIES[strategy]
    except KeyError:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}") from None


def _set_args(overrides: dict[str, Any] | None) -> list[str]:
    args: list[str] = []
    for key, value in (overrides or {}).items():
        args += ["--set", f"{key}={_yaml_scalar(value)}"]
    return args


def _yaml_scalar(value: Any) -> str:
    """A value as `finetune train --set` reads it back (a YAML scalar), so the type survives:
    1e-05 needs a dot for YAML (1.0e-05), and a string like "yes" or "1" needs quotes."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
    else:
        text = str(value)
    if _loads(text) == value and type(_loads(text)) is type(value):
        return text
    return json.dumps(value)  # JSON strings/lists are YAML too


def _loads(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def _join(words: list[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)

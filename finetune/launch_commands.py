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

from finetune.parallel import ACCELERATE_CONFIGS
from finetune.shipped import shipped_dir

# strategy -> shipped accelerate config (see accelerate_configs/*.yaml for when to use which);
# deepspeed_zero2/3 are the older names of zero2/3
STRATEGIES = {
    **ACCELERATE_CONFIGS,
    "deepspeed_zero2": ACCELERATE_CONFIGS["zero2"],
    "deepspeed_zero3": ACCELERATE_CONFIGS["zero3"],
}
CONFIGS_DIR = "accelerate_configs"  # relative to the repository root, where the command is run
MAIN_PROCESS_PORT = 29500
# shell variables the multi-machine command leaves to each machine (double-quoted: the shell expands them)
MACHINE_RANK_VAR, MAIN_IP_VAR = "$MACHINE_RANK", "$MAIN_PROCESS_IP"


def accelerate_config_path(strategy: str = "ddp") -> Path:
    """The shipped accelerate config for `strategy`, as a file of this checkout or installed package."""
    return shipped_dir(CONFIGS_DIR) / _config_name(strategy)


def train_command(config_path: str, overrides: dict[str, Any] | None = None) -> str:
    """`finetune train --config PATH [--set key=value ...]`, quoted for a POSIX shell."""
    return _join(["finetune", "train", "--config", str(config_path), *_set_args(overrides)])


def accelerate_command(
    config_path: str,
    num_processes: int = 8,
    strategy: str = "ddp",
    *,
    overrides: dict[str, Any] | None = None,
    num_machines: int = 1,
    main_process_port: int = MAIN_PROCESS_PORT,
) -> str:
    """`accelerate launch` of the same training, on `num_processes` GPUs (of all machines together)
    with a shipped config. With several machines the same command runs on each, with
    $MACHINE_RANK (0 on the main machine) and $MAIN_PROCESS_IP (its address) set there
    (docs/deploy.md has hostfile and SLURM examples)."""
    for name, value in (("num_processes", num_processes), ("num_machines", num_machines)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    if num_processes % num_machines:
        raise ValueError(f"{num_processes} processes cannot be spread evenly over {num_machines} machines")
    words = ["accelerate", "launch", "--config_file", f"{CONFIGS_DIR}/{_config_name(strategy)}"]
    words += ["--num_processes", str(num_processes)]
    machines: list[str] = []
    if num_machines > 1:
        words += ["--num_machines", str(num_machines)]
        machines = [
            "--machine_rank",
            f'"{MACHINE_RANK_VAR}"',
            "--main_process_ip",
            f'"{MAIN_IP_VAR}"',
            "--main_process_port",
            str(int(main_process_port)),
        ]
    rest = ["-m", "finetune.cli", "train", "--config", str(config_path), *_set_args(overrides)]
    return " ".join([_join(words), *machines, _join(rest)])


def cluster_command(config_path: str, num_gpus: int, strategy: str, num_machines: int = 1) -> str:
    """What the app shows for a run on `num_gpus` GPUs over `num_machines` machines: the command, and
    for several machines the variables each one sets first."""
    command = accelerate_command(config_path, num_gpus, strategy, num_machines=num_machines)
    if num_machines == 1:
        return command
    return (
        f"# on each of the {num_machines} machines, {num_gpus // num_machines} GPUs each, from a checkout of this "
        "repository\n# with the workspace on storage all machines and the app share:\n"
        "export MACHINE_RANK=0          # 0 on the main machine, 1, 2, ... on the others\n"
        "export MAIN_PROCESS_IP=10.0.0.1  # the main machine's address\n"
        f"{command}"
    )


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

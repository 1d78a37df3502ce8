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

from finetune.config import NUMBER_LIMITS, RunConfig
from finetune.demo import default_dataset
from finetune.files import shipped_dir
from finetune.plan.parallel import ACCELERATE_CONFIGS
from finetune.presets import apply_preset

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
    elif isinstance(value, int) and abs(value) >= 10**4000:
        text = hex(value)  # beyond Python's 4,300 decimal digits; YAML reads hex back (the run refuses it anyway)
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


# --- the app's "equivalent command line" ---------------------------------------------
def config_overrides(cfg: RunConfig, base: RunConfig | None = None) -> list[str]:
    """`key=value` strings for every field that differs from `base` (RunConfig() by default)."""
    base_d = (base or RunConfig()).to_dict()
    out = []
    for name, value in cfg.to_dict().items():
        if value == base_d[name] and type(value) is type(base_d[name]):
            continue
        if isinstance(value, dict):
            text = json.dumps(value, ensure_ascii=False)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif value == "":
            text = ""
        else:
            text = _yaml_scalar(value) if isinstance(value, int) else str(value)
        out.append(f"{name}={text}")
    return out


def explicit_data_path(cfg: RunConfig) -> str:
    """The training data as a path: an empty dataset_path means the bundled sample, so say which file."""

    return cfg.dataset_path or str(default_dataset(cfg.objective))


def train_command_lines(
    cfg: RunConfig, preset: str | None = None, yaml_name: str = "run.yaml", strategy: str | None = None
) -> str:
    """The `finetune train` command lines that reproduce this config, and for a config planned for
    several GPUs (num_gpus > 1) the `accelerate launch` command of `strategy` (default: the config's,
    ddp for auto), for one or several machines."""
    lines = [
        "# 1) with the config file (the “Save config as YAML” button above):",
        f"finetune train --config {shlex.quote(yaml_name)}",
        "",
        "# 2) or flags only: the model, the data, the preset, then every setting that differs from it",
    ]
    base = RunConfig()
    head = "finetune train"
    if preset:
        try:
            base = apply_preset(RunConfig(), preset)
            head += f" --preset {shlex.quote(preset)}"
        except Exception:
            base = RunConfig()
    # the model and the data always by name (the data as the path of the bundled sample when it is that)
    head += f" --model {shlex.quote(cfg.model_name_or_path)} --data {shlex.quote(explicit_data_path(cfg))}"
    named = ("model_name_or_path", "dataset_path")
    parts = [head] + [f"--set {shlex.quote(o)}" for o in config_overrides(cfg, base) if o.split("=", 1)[0] not in named]
    lines.append(" \\\n    ".join(parts))
    if 1 < cfg.num_gpus <= NUMBER_LIMITS["num_gpus"]:  # a number beyond any cluster is refused, not printed
        strategy = strategy or (cfg.strategy if cfg.strategy != "auto" else "ddp")
        lines += ["", f"# 3) on {cfg.num_gpus} GPUs ({strategy}), with the config file:"]
        lines.append(cluster_command(yaml_name, cfg.num_gpus, strategy, cfg.num_machines))
    return "\n".join(lines)

"""Checks a run must pass before its folder is made that need the model's own files: LoRA target modules
that match no layer of the model (read from the weights' safetensors headers, no tensor loaded), and a
token budget that leaves no answer token to train on (every example's prompt fills max_length, so TRL
drops them all and training would end in an IndexError).

Both check only what can be read here and now: a Hub model that is not in the local cache is checked
once its job has downloaded it (PEFT and TRL then refuse in the run's own words).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from finetune.config import RunConfig, lora_targets
from finetune.data.preview import first_trained_token
from finetune.errors import DataError, FinetuneError, shown
from finetune.models import load_tokenizer
from finetune.names import is_local_path

BUDGET_SAMPLE_ROWS = 2000  # rows whose prompt length is measured (all of them in smaller data sets)
MAX_HEADER_BYTES = 100 * 2**20


def model_folder(model_path: str) -> Path | None:
    """The local folder of a model: a folder as given, or a Hub id's snapshot in the local cache."""
    path = Path(model_path).expanduser()
    if path.is_dir():
        return path
    if is_local_path(model_path):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        for name in ("model.safetensors.index.json", "model.safetensors", "config.json"):
            found = try_to_load_from_cache(model_path, name)
            if isinstance(found, str):
                return Path(found).parent
    except Exception:  # noqa: BLE001 - not a Hub id the cache knows: nothing to read here
        return None
    return None


def weight_shapes(folder: Path) -> dict[str, list[int]] | None:
    """Tensor name -> shape of every *.safetensors file in `folder`, from their headers; None when the
    folder has no readable safetensors weights."""
    shapes: dict[str, list[int]] = {}
    files = sorted(folder.glob("*.safetensors"))
    for file in files:
        try:
            with open(file, "rb") as fh:
                length = int.from_bytes(fh.read(8), "little")
                if length > MAX_HEADER_BYTES:
                    return None
                header = json.loads(fh.read(length))
        except (OSError, ValueError):
            return None
        for name, info in header.items():
            if name != "__metadata__" and isinstance(info, dict):
                shapes[name] = list(info.get("shape") or [])
    return shapes or None


def _module_weights(shapes: dict[str, list[int]]) -> dict[str, int]:
    """Module name -> the number of dimensions of its `weight` (2 for a linear layer, 1 for a norm)."""
    modules = {}
    for name, shape in shapes.items():
        if name.endswith(".weight"):
            modules[name[: -len(".weight")]] = len(shape)
    return modules


def lora_target_match_problems(config: RunConfig, model_path: str) -> list[str]:
    """lora_target_modules names that match no layer of the model (as PEFT matches them: the module's
    name, or its last parts after a dot), or only layers PEFT cannot adapt (a norm has no matrix)."""
    if config.method == "full" or (config.start_from_run or "").strip():
        return []  # nothing to adapt, or the starting adapter's own targets are kept
    targets = lora_targets(config.lora_target_modules)
    if targets == "all-linear" or not targets:
        return []
    folder = model_folder(model_path)
    shapes = weight_shapes(folder) if folder is not None else None
    if shapes is None:
        return []
    modules = _module_weights(shapes)
    matrices = sorted({name.rsplit(".", 1)[-1] for name, dims in modules.items() if dims == 2})
    problems = []
    for target in targets:
        hits = [dims for name, dims in modules.items() if name == target or name.endswith("." + target)]
        if not hits:
            problems.append(
                f"lora_target_modules: {shown(target)} matches no layer of {config.model_name_or_path}; its layers "
                f"with weight matrices are {', '.join(matrices[:12])} (or use all-linear)"
            )
        elif all(dims != 2 for dims in hits):
            problems.append(
                f"lora_target_modules: {shown(target)} is not a linear layer of {config.model_name_or_path} (LoRA "
                f"adapts weight matrices: {', '.join(matrices[:12])})"
            )
    return problems


def local_tokenizer(config: RunConfig, model_path: str):
    """The model's tokenizer when it can be read without the network (demo, a folder, the Hub cache);
    None otherwise."""
    if model_folder(model_path) is None:
        return None

    try:
        return load_tokenizer(config, path=str(model_folder(model_path)))
    except (FinetuneError, OSError, ValueError):
        return None


def token_budget_problems(config: RunConfig, rows: list[dict], tokenizer: Any) -> list[str]:
    """max_length problems: every example (of a sample of BUDGET_SAMPLE_ROWS in larger data) has a prompt
    of at least max_length tokens, so truncation leaves no answer token and TRL drops every example."""
    if tokenizer is None or not rows or config.train_on_prompt or config.is_preference or config.objective == "grpo":
        return []  # preference pairs and GRPO's sampled completions have no answer column to truncate away

    sample = rows if len(rows) <= BUDGET_SAMPLE_ROWS else random.Random(0).sample(rows, BUDGET_SAMPLE_ROWS)
    shortest = None
    for row in sample:
        try:
            first = first_trained_token(row, tokenizer)
        except DataError:
            return []  # the template refuses a row: the job says so in its own words
        if first is None:
            continue
        if first < config.max_length:
            return []
        shortest = first if shortest is None else min(shortest, first)
    if shortest is None:
        return []
    checked = "every example" if sample is rows else f"all {len(sample):,} sampled examples"
    return [
        f"max_length: {config.max_length} tokens leaves no answer token to train on: in {checked} the prompt "
        f"alone is at least {shortest:,} tokens long, so truncation cuts every answer away; raise max_length "
        f"above {shortest:,} (the Data tab and `finetune validate` suggest a value) or shorten the prompts"
    ]

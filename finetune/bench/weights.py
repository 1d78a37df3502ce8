"""Models for the benchmark: `demo`, a local folder or Hub id, or a bundled shape
(`finetune/plan/model_shapes/*.json`, e.g. `llama-3.2-1b`) instantiated with random weights.

A shape model is built once into `<workspace>/cache/bench-models/<shape>-random-v1/` (bf16
safetensors, on the GPU when there is one) with the demo model's tokenizer: its ids (< 1024)
are valid in any larger vocabulary, and throughput does not depend on what the tokens mean.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from finetune.demo import demo_model_path
from finetune.models import resolve_model_path
from finetune.names import is_local_path
from finetune.plan import bundled_shapes
from finetune.runs import cache_dir

VERSION = 1


def is_shape_name(name: str) -> bool:
    return name.strip().lower() in bundled_shapes() and not is_local_path(name)


def shape_model_path(name: str, workspace=None) -> Path:
    """The folder of a random-weight model of bundled shape `name`, built on first use."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    key = name.strip().lower()
    target = cache_dir(workspace) / "bench-models" / f"{key}-random-v{VERSION}"
    if (target / "BENCH_MODEL.json").is_file():
        return target
    data = json.loads(bundled_shapes()[key].read_text(encoding="utf-8"))
    settings = {k: v for k, v in data.items() if not k.startswith("_") and k not in ("torch_dtype", "dtype")}
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(tmp)
    del model
    AutoTokenizer.from_pretrained(demo_model_path(workspace)).save_pretrained(tmp)
    (tmp / "BENCH_MODEL.json").write_text(json.dumps({"shape": key, "source": data.get("_source", key)}))
    try:
        os.replace(tmp, target)
    except OSError:  # built concurrently by another process
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_bench_model(name: str, workspace=None) -> str:
    """A loadable model path for `name`: demo, a bundled shape (random weights), a folder or a Hub id."""

    if is_shape_name(name):
        return str(shape_model_path(name, workspace))
    return resolve_model_path(name, workspace)

"""VRAM estimate: `estimate_memory(model, config) -> MemoryEstimate`, the `finetune estimate`
command (`register_cli`, `run_estimate_cli`) and what an out-of-memory message says (`oom_advice`).

Submodules: `shapes` (config.json -> ModelShape, parameter counts), `memory` (the terms),
`advice` (out-of-memory text), `cli` (the subcommand).
"""

from finetune.estimate.advice import oom_advice, ranked_knobs
from finetune.estimate.cli import register_cli, run_estimate_cli
from finetune.estimate.memory import GiB, MemoryEstimate, estimate_memory
from finetune.estimate.shapes import ModelShape, bundled_shapes, load_shape, shape_from_config
from finetune.estimate.terms import resolve_targets

__all__ = [
    "GiB",
    "MemoryEstimate",
    "ModelShape",
    "bundled_shapes",
    "estimate_memory",
    "load_shape",
    "oom_advice",
    "ranked_knobs",
    "register_cli",
    "resolve_targets",
    "run_estimate_cli",
    "shape_from_config",
]

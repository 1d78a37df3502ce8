"""The planner and what it asks: every `auto` decision of a run, made once into a frozen `Plan`.

Submodules: `planner` (make_plan, Plan, estimate), `hardware` (the machine: devices, world size),
`parallel` (strategies over several GPUs), and the memory model the planner consults: `shapes`
(config.json -> ModelShape), `terms` and `memory` (estimate_memory), `sharding` (per-GPU share),
`advice` (what an out-of-memory message says).
"""

from finetune.plan.advice import oom_advice, ranked_knobs
from finetune.plan.hardware import HardwareInfo, Machine, detect_hardware, detect_machine
from finetune.plan.memory import GiB, MemoryEstimate, estimate_memory
from finetune.plan.planner import Plan, estimate, make_plan, plan_for_inference, planned_machine
from finetune.plan.shapes import ModelShape, bundled_shapes, load_shape, shape_from_config

__all__ = [
    "GiB",
    "HardwareInfo",
    "Machine",
    "MemoryEstimate",
    "ModelShape",
    "Plan",
    "bundled_shapes",
    "detect_hardware",
    "detect_machine",
    "estimate",
    "estimate_memory",
    "load_shape",
    "make_plan",
    "oom_advice",
    "plan_for_inference",
    "planned_machine",
    "ranked_knobs",
    "shape_from_config",
]

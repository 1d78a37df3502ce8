"""Multi-process runs (`accelerate launch`): every rank trains, rank 0 alone writes the run folder."""

from __future__ import annotations

import os
from collections.abc import Callable

from finetune.runs import Run


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def shared_run(create: Callable[[], Run]) -> Run:
    """Rank 0 creates the run folder and tells the others its path; they get a read-only view."""
    if world_size() == 1:
        return create()
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    # joins the process group accelerate launch set up (gloo when there is no GPU)
    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes != world_size():
        raise RuntimeError(
            f"WORLD_SIZE is {world_size()} but the process group has {state.num_processes} processes: "
            "start multi-process runs with `accelerate launch`"
        )
    path = [str(create().path) if state.is_main_process else None]
    broadcast_object_list(path, from_process=0)
    return Run(path[0]) if state.is_main_process else Run(path[0], read_only=True)


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_parameter_share(model) -> dict[str, tuple[int, int]]:
    """{"all"|"frozen"|"trainable": (parameters this rank holds, parameters of the whole model)}:
    FSDP2 shards are DTensors, ZeRO-3 partitions keep their full size in `ds_numel`; anything else
    is held whole."""
    from torch.distributed.tensor import DTensor

    counts = {"all": [0, 0], "frozen": [0, 0], "trainable": [0, 0]}
    for param in model.parameters():
        if isinstance(param, DTensor):
            local, whole = param.to_local().numel(), param.numel()
        elif hasattr(param, "ds_numel"):
            local, whole = param.ds_tensor.numel(), param.ds_numel
        else:
            local = whole = param.numel()
        for key in ("all", "trainable" if param.requires_grad else "frozen"):
            counts[key][0] += local
            counts[key][1] += whole
    return {key: (held, whole) for key, (held, whole) in counts.items()}


def sharding_line(model) -> str:
    """e.g. `sharding: rank 1 of 2 holds 148,000 of 257,088 parameters (58%): frozen 109,088 of 218,176,
    trainable 38,912 of 38,912`, for train.log and stderr."""
    share = local_parameter_share(model)
    held, whole = share["all"]
    parts = ", ".join(f"{key} {share[key][0]:,} of {share[key][1]:,}" for key in ("frozen", "trainable"))
    percent = held / whole if whole else 1.0
    return f"sharding: rank {rank()} of {world_size()} holds {held:,} of {whole:,} parameters ({percent:.0%}): {parts}"

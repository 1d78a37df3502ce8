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

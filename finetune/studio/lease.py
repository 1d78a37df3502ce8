"""`GpuLease`: the one rule that a single model is in (GPU) memory at a time, process-wide.

Everything that loads a model takes it (`studio.lease`), a timing calibration too; a training job counts
as holding it for as long as it runs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from finetune.errors import BusyError
from finetune.evaluation.compare import release_comparer
from finetune.runs import FINAL_STATES
from finetune.train import registry

LEASE_WAIT_S = 600.0  # a model-loading request waits this long for another one (a merge) to finish
FINISHING_WAIT_S = 120.0  # a run that reported its final state may still be freeing memory


class GpuLease:
    """One model in memory at a time, process-wide: training, comparing, evaluating, grids and merges.

    Work that loads a model holds the lease for its duration (`hold`); a training job holds it for as
    long as it runs (checked through `finetune.train.registry.current_job`). Starting training releases the
    cached comparison model first, so the trainer gets that memory.
    """

    # process-wide: every Studio of this process shares the one accelerator. A plain Lock, not an RLock: a
    # streamed answer holds the lease across yields, and Gradio may resume the generator on another thread
    _lock = threading.Lock()
    holder = ""

    def __init__(self, wait_s: float = LEASE_WAIT_S):
        self.wait_s = wait_s

    @contextmanager
    def hold(self, action: str) -> Iterator[None]:
        """Hold the lease for `action` (e.g. "comparing answers"); refused while a run trains."""
        self.refuse_while_training(action)
        with self.locked(action):
            yield

    @contextmanager
    def locked(self, action: str) -> Iterator[None]:
        """The lease's lock alone: starting a run (training's own check names the busy run)."""
        if not self._lock.acquire(timeout=self.wait_s):
            raise BusyError(f"Busy {GpuLease.holder}: {action} waits for it; try again when it has finished.")
        previous, GpuLease.holder = GpuLease.holder, action
        try:
            yield
        finally:
            GpuLease.holder = previous
            self._lock.release()

    @staticmethod
    def refuse_while_training(action: str) -> None:
        job = registry.current_job()
        if job is not None and getattr(job, "state", None) in FINAL_STATES:
            job.wait(FINISHING_WAIT_S)  # the run has ended and is freeing its memory: let it finish
            job = registry.current_job()
        if job is not None:
            raise BusyError(
                f"The run '{job.run.name}' is training: {action} would load a second model into memory. "
                "Wait for it to finish or stop it, then try again."
            )

    @staticmethod
    def free_memory() -> None:
        """Drop the cached comparison model (before training or a merge loads its own copy)."""

        release_comparer()

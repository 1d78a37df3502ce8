"""The TrainerCallback that connects a training job to its run folder: progress, metrics
(buffer + metrics.jsonl), phase changes, the stop Event and the NaN check."""

from __future__ import annotations

import math
import sys
import threading
import time
from typing import Any, Protocol

from transformers import TrainerCallback

from finetune.errors import RunError
from finetune.runs import Run
from finetune.train.distributed import sharding_line, world_size


class ProgressSink(Protocol):
    """What the callback feeds: a training job (finetune.train.job.TrainingJob) or anything like it."""

    run: Run
    stop_event: threading.Event
    nan_step: int | None

    def report(
        self, state: str | None = None, message: str | None = None, persist: bool = False, **fields: Any
    ) -> None: ...


class StopRequested(Exception):
    """Raised between setup phases when the user pressed Stop before training began."""


class StopDuringEvaluation(Exception):
    """Raised from the evaluation loop (which never looks at our stop Event) when Stop is pressed."""


class RunCallback(TrainerCallback):
    """Feeds the run: progress, metrics (buffer + metrics.jsonl), phase changes, stop and NaN checks."""

    def __init__(self, job: ProgressSink, meter=None, on_end=None):
        """`meter` (finetune.train.timing.HardwareMeter): FLOPs per token and the GPU's peak, for the live
        achieved GFLOP/s and MFU beside tokens/s; `on_end(measured)`: what the training phase measured."""
        self.job = job
        self.meter = meter
        self.on_end = on_end
        self.start_time = time.time()
        self.start_step = 0
        self.last_tokens: tuple[float, float] | None = None  # (num_tokens, time) at the previous log
        self.clock: tuple[float, float] = (time.perf_counter(), time.process_time())  # this session's start
        self.tokens_seen: tuple[int, float] | None = None  # (step, num_tokens) at the latest log

    def on_train_begin(self, args, state, control, **kwargs):
        # a resumed run's clock goes on from the time logged at its checkpoint: time-based charts never
        # go backwards (metrics after the checkpoint were cut by train.start.truncate_metrics)
        before = [m.get("time", 0) for m in self.job.run.metrics() if m.get("step", 0) <= state.global_step]
        offset = max((t for t in before if isinstance(t, (int, float))), default=0.0) if state.global_step else 0.0
        self.start_time = time.time() - offset
        self.start_step = state.global_step
        self.clock = (time.perf_counter(), time.process_time())
        self.job.report(state="training", message="Training", step=state.global_step, total_steps=state.max_steps)
        if world_size() > 1 and kwargs.get("model") is not None:
            # what this rank really holds once the trainer has sharded (or replicated) the model
            line = sharding_line(kwargs["model"])
            self.job.run.log(line)
            print(line, file=sys.stderr, flush=True)

    def on_step_end(self, args, state, control, **kwargs):
        run = self.job.run
        if not run.read_only and not run.config_path.is_file():  # someone deleted or moved the run folder
            raise RunError(
                f"The run folder '{run.name}' was deleted (or moved) while the run trained, so nothing more could "
                f"be saved there; the run stopped at step {state.global_step}. Start a new run."
            )
        self.job.report(step=state.global_step, epoch=state.epoch)
        if self.job.stop_event.is_set():
            # Stop (the button, Ctrl-C, SIGTERM): a checkpoint of this very step, so Resume repeats no step
            control.should_training_stop = True
            control.should_save = True
            self.job.report(state="saving", message=f"Stopping: saving a checkpoint at step {state.global_step}")
        elif control.should_evaluate:
            self.job.report(state="evaluating", message=f"Evaluating at step {state.global_step}")
        elif control.should_save:
            self.job.report(state="saving", message=f"Saving checkpoint {state.global_step}")

    def on_prediction_step(self, args, state, control, **kwargs):
        if self.job.stop_event.is_set():  # a long evaluation stops at the next batch, not at its end
            raise StopDuringEvaluation

    def on_evaluate(self, args, state, control, **kwargs):
        if not self.job.stop_event.is_set():
            self.job.report(state="training", message="Training")

    def on_save(self, args, state, control, **kwargs):
        if not self.job.stop_event.is_set():
            self.job.report(state="training", message="Training")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        now = time.time()
        record: dict[str, Any] = {
            "step": state.global_step,
            "epoch": state.epoch,
            "time": round(now - self.start_time, 3),
        }
        record.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})
        if "num_tokens" in logs:
            if self.last_tokens is not None and now > self.last_tokens[1]:
                record["tokens_per_s"] = (logs["num_tokens"] - self.last_tokens[0]) / (now - self.last_tokens[1])
            self.last_tokens = (logs["num_tokens"], now)
            self.tokens_seen = (state.global_step, float(logs["num_tokens"]))
        if self.meter is not None and "tokens_per_s" in record:  # how well the hardware is used, beside tokens/s
            record.update(self.meter.fields(record["tokens_per_s"]))
        record.update(_cuda_memory())
        self.job.run.append_metrics(record)
        self.job.run.log(_format_log(record))
        speed = {k: record[k] for k in ("tokens_per_s", "achieved_gflops", "mfu") if k in record}
        self.job.report(persist=True, **speed)
        loss = logs.get("loss")
        if isinstance(loss, float) and not math.isfinite(loss):
            self.job.nan_step = state.global_step
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        if self.on_end is None or not state.is_world_process_zero:
            return
        steps = state.global_step - self.start_step
        tokens = None
        if self.tokens_seen is not None and self.tokens_seen[0] > self.start_step:
            # TRL counts this session's tokens; the last log may come a few steps before the end
            tokens = self.tokens_seen[1] * steps / (self.tokens_seen[0] - self.start_step)
        self.on_end(
            {
                "seconds": time.perf_counter() - self.clock[0],
                "cpu_seconds": time.process_time() - self.clock[1],
                "steps": steps,
                "tokens": tokens,
            }
        )


def _format_log(record: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())


def _cuda_memory() -> dict[str, float]:
    import torch

    if not torch.cuda.is_available():
        return {}
    return {
        "cuda_mem_allocated_gb": torch.cuda.memory_allocated() / 2**30,
        "cuda_mem_reserved_gb": torch.cuda.memory_reserved() / 2**30,
        "cuda_max_mem_allocated_gb": torch.cuda.max_memory_allocated() / 2**30,
    }

"""Time before, during and after a run: the prediction (the planner's workload and FLOPs model on the
device's throughput), the live hardware use the callback logs, and prediction.json in the run folder:

    {"predicted": {...TimeEstimate.to_dict()...}, "actual": {"seconds", "tokens", "tokens_per_s", ...}}

written when setup has made the plan (predicted) and when training ends (actual). Light at import: the
Studio reads the records of every run in the history.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.config import RunConfig
from finetune.files import write_text_atomic
from finetune.jsontext import dumps
from finetune.plan.gpus import device_name
from finetune.plan.prediction import predict_time
from finetune.plan.throughput import gpu_throughput
from finetune.plan.workload import plan_workload
from finetune.runs.records import read_prediction

RECORD = "prediction.json"


def throughput_for(config: RunConfig, plan, shape, workspace, *, measure_missing: bool = True):
    """(Throughput or None, why not): a CPU's calibration (cached, else measured now when allowed), a GPU's
    peak times its efficiency; None with the reason when neither is known."""

    if plan.device == "cpu":
        from finetune.train.calibrate import cpu_throughput  # transformers: only when a CPU is calibrated

        found = cpu_throughput(workspace, config, plan, shape, measure_missing=measure_missing)
        return found, "" if found else "this CPU is not calibrated yet (measured once, when nothing trains)"
    found = gpu_throughput(plan.machine)
    if found is None:
        return None, f"no peak figure for {device_name(plan.machine) or 'this GPU'} in finetune/plan/gpus.py"
    return found, ""


def predict(
    config: RunConfig,
    plan,
    shape,
    lengths: list[int],
    eval_lengths: list[int],
    workspace,
    *,
    kto_pairs: bool = False,
    measure_missing: bool = True,
):
    """(TimeEstimate or None, why not) of a run of `config` on `plan`'s device with data of these token lengths."""

    if not lengths:
        return None, "no training examples"
    found, why = throughput_for(config, plan, shape, workspace, measure_missing=measure_missing)
    if found is None:
        return None, why
    work = plan_workload(lengths, eval_lengths, config, plan, kto_pairs=kto_pairs)
    return predict_time(shape, config, plan, work, found, config.price_per_hour), ""


@dataclass(frozen=True)
class HardwareMeter:
    """Turns the live tokens/s into FLOP/s and MFU: useful training FLOPs per real token (the prediction's
    average over the data's lengths) and the GPU's peak (None on a CPU)."""

    flops_per_token: float
    peak_flops_per_s: float | None
    devices: int = 1

    @classmethod
    def from_estimate(cls, estimate) -> HardwareMeter | None:
        if estimate is None or not estimate.tokens:
            return None
        return cls(estimate.flops / estimate.tokens, estimate.throughput.peak_flops_per_s, estimate.devices)

    def fields(self, tokens_per_s: float) -> dict[str, float]:
        """What a metrics record gets beside tokens_per_s: achieved GFLOP/s per device, and MFU on a GPU."""
        per_device = tokens_per_s * self.flops_per_token / self.devices
        out = {"achieved_gflops": per_device / 1e9}
        if self.peak_flops_per_s:
            out["mfu"] = per_device / self.peak_flops_per_s
        return out


# --- prediction.json ------------------------------------------------------------------------------
def record_path(run_path: str | Path) -> Path:
    return Path(run_path) / RECORD


def read_record(run_path: str | Path) -> dict[str, Any]:
    """prediction.json of a run folder, typed ({} when it has none or it cannot be read: runs.records)."""
    return read_prediction(record_path(run_path))[0]


def write_record(run, **parts: Any) -> None:
    """Merge `parts` (predicted=..., actual=...) into the run's prediction.json (skipped for read-only runs)."""
    if getattr(run, "read_only", False):
        return

    data = read_record(run.path)
    data.update(parts)
    try:
        write_text_atomic(record_path(run.path), dumps(data, indent=1))
    except OSError:
        pass  # a full disk: the run goes on; the record is a report, not a result


def actual_record(
    *, seconds: float, cpu_seconds: float, steps: int, tokens: float | None, meter: HardwareMeter | None, price: float
) -> dict[str, Any]:
    """What a finished (or stopped) training phase measured, in the prediction's terms."""
    out: dict[str, Any] = {"seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2), "steps": steps}
    out["finished_at"] = time.time()
    if tokens:
        out["tokens"] = round(tokens)
        out["tokens_per_s"] = round(tokens / seconds, 1) if seconds > 0 else None
        if meter is not None and seconds > 0:
            out.update({f"mean_{k}": v for k, v in meter.fields(tokens / seconds).items()})
    devices = meter.devices if meter is not None else 1
    out["cost"] = round(seconds / 3600 * price * devices, 4) if price else None
    return out


def comparison(record: dict[str, Any]) -> dict[str, Any]:
    """Predicted vs actual seconds of a record: {predicted_s, actual_s, error} (error = actual / predicted - 1)."""
    predicted = (record.get("predicted") or {}).get("predicted_seconds")
    actual = (record.get("actual") or {}).get("seconds")
    out: dict[str, Any] = {"predicted_s": predicted, "actual_s": actual, "error": None}
    if isinstance(predicted, (int, float)) and isinstance(actual, (int, float)) and predicted > 0:
        out["error"] = actual / predicted - 1
    return out

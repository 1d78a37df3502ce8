"""The time (and cost) a run will take before it starts: the plan's workload (finetune.plan.workload)
priced in FLOPs (finetune.plan.throughput) on the device's throughput (measured on a CPU, a GPU's peak
times an efficiency), plus evaluations and checkpoints. Loading the model and the data is not included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from finetune.config import RunConfig
from finetune.plan.terms import resolve_targets
from finetune.plan.throughput import GENERATION_SHARE, FlopsModel, Throughput, flops_model
from finetune.plan.workload import Totals, Workload

SAVE_BYTES_PER_PARAM = 12  # a checkpoint: fp32 weights (4 bytes) and AdamW's two moments (8 bytes) per trainable


@dataclass
class TimeEstimate:
    """What a run will take: steps, tokens, seconds, throughput and cost, with how each was obtained."""

    steps: int
    epochs: float
    tokens: float  # real tokens trained (all devices)
    computed_tokens: float  # positions computed, padding included (all devices)
    train_seconds: float
    eval_seconds: float
    save_seconds: float
    flops: float  # useful training FLOPs (what MFU counts)
    devices: int
    throughput: Throughput
    price_per_hour: float = 0.0  # per device (GPU) hour; 0: no cost
    reasons: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.train_seconds + self.eval_seconds + self.save_seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def flops_per_s(self) -> float:
        """Useful FLOP/s per device over the whole training phase."""
        return self.flops / self.devices / self.seconds if self.seconds > 0 else 0.0

    @property
    def mfu(self) -> float | None:
        peak = self.throughput.peak_flops_per_s
        return self.flops_per_s / peak if peak else None

    @property
    def cost(self) -> float | None:
        if not self.price_per_hour:
            return None
        return self.seconds / 3600 * self.price_per_hour * self.devices

    def to_dict(self) -> dict[str, Any]:
        """The prediction as `finetune estimate --json` prints it and prediction.json records it."""
        return {
            "predicted_steps": self.steps,
            "predicted_tokens": round(self.tokens),
            "predicted_seconds": _sig(self.seconds),
            "predicted_cost": None if self.cost is None else _sig(self.cost),
            "predicted_tokens_per_s": round(self.tokens_per_s, 1),
            "predicted_flops_per_s": self.flops_per_s,
            "predicted_mfu": self.mfu,
            "epochs": round(self.epochs, 3),
            "computed_tokens": round(self.computed_tokens),
            "train_seconds": _sig(self.train_seconds),
            "eval_seconds": _sig(self.eval_seconds),
            "save_seconds": _sig(self.save_seconds),
            "flops": self.flops,
            "devices": self.devices,
            "price_per_hour": self.price_per_hour,
            "throughput": {
                "device": self.throughput.device,
                "flops_per_s": self.throughput.flops_per_s,
                "peak_flops_per_s": self.throughput.peak_flops_per_s,
                "pass_s": self.throughput.pass_s,
                "step_s": self.throughput.step_s,
                "measured": self.throughput.measured,
                "source": self.throughput.source,
            },
            "reasons": dict(self.reasons),
            "notes": list(self.notes),
        }


def _sig(value: float) -> float:
    """Four significant digits: a GPU run of the demo lasts milliseconds, a large one hours."""
    return float(f"{value:.4g}")


def format_seconds(seconds: float) -> str:
    """A duration as people say it: 45 s, 3 min 20 s, 2 h 10 min."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if minutes < 10 and secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _trainable_params(shape, config: RunConfig) -> float:
    if config.method == "full":
        return float(shape.param_counts()["total"])

    targets, _ = resolve_targets(config.lora_target_modules, shape)
    per_layer = sum(
        config.lora_r * (lin.d_in + lin.d_out) + (lin.d_out if config.method == "dora" else 0) for lin in targets
    )
    return float(per_layer * shape.num_layers)


def computed_parts(fm: FlopsModel, totals: Totals) -> tuple[float, float]:
    """FLOPs the device runs for `totals`, (matmuls with weights + per-pass work, attention): per computed
    position (padding included); attention grows with the context and may run at its own rate."""
    per_token = fm.computed_token(0.0)
    per_ctx = fm.computed_token(1.0) - per_token
    passes = 1 + int(fm.checkpointing) + fm.cost.no_grad_forwards
    return per_token * totals.computed + fm.per_pass * passes * totals.micro_batches, per_ctx * totals.computed_ctx


def computed_flops(fm: FlopsModel, totals: Totals) -> float:
    return sum(computed_parts(fm, totals))


def useful_flops(fm: FlopsModel, totals: Totals) -> float:
    """Training FLOPs of the real tokens only (the MFU numerator: no padding, recompute or reference)."""
    per_token = fm.train_token(0.0)
    return per_token * totals.real + (fm.train_token(1.0) - per_token) * totals.real_ctx


def eval_parts(fm: FlopsModel, totals: Totals) -> tuple[float, float]:
    """Forward-only FLOPs of an evaluation, (matmuls, attention)."""
    forwards = 1 + fm.cost.no_grad_forwards
    per_token = fm.forward_token(0.0)
    return forwards * per_token * totals.computed, forwards * (fm.forward_token(1.0) - per_token) * totals.computed_ctx


def eval_flops(fm: FlopsModel, totals: Totals) -> float:
    return sum(eval_parts(fm, totals))


def predict_time(
    shape, config: RunConfig, plan, workload: Workload, throughput: Throughput, price_per_hour: float = 0.0
) -> TimeEstimate:
    """Seconds of the training phase of `config` (steps, evaluations, checkpoints) on `throughput`."""
    fm = flops_model(shape, config, plan)
    rate = throughput.flops_per_s
    attention_rate = throughput.attention_flops_per_s or rate

    def seconds(parts: tuple[float, float]) -> float:
        return parts[0] / rate + parts[1] / attention_rate

    train = seconds(computed_parts(fm, workload.train))
    train += workload.steps * throughput.step_s + workload.train.micro_batches * throughput.pass_s
    if fm.cost.generated_tokens:  # an online objective decodes its completions before each update
        generated = fm.cost.generated_tokens * workload.train.rows * fm.forward_token(0.0)
        train += generated / (rate * GENERATION_SHARE)
    per_eval = (
        eval_flops(fm, workload.eval_per_run) / rate + workload.eval_per_run.micro_batches * throughput.eval_pass_s
    )
    saves = workload.saves * (
        throughput.save_s + _trainable_params(shape, config) * SAVE_BYTES_PER_PARAM / throughput.write_bytes_per_s
    )
    padding = workload.padding_share
    batches = (
        "bfd packing" if plan.packing else "padding-free" if plan.padding_free else f"padded ({padding:.0%} padding)"
    )
    reasons = [
        ("steps", _steps_reason(config, workload)),
        ("tokens", f"{workload.tokens:,.0f} real tokens trained, {batches}; from the data's token-length audit"),
        ("FLOPs", _flops_reason(fm, config)),
        ("throughput", throughput.source),
    ]
    if workload.eval_runs:
        reasons.append(("evaluation", f"{workload.eval_runs} evaluations of {workload.eval_per_run.rows} rows"))
    if workload.saves:
        reasons.append(("checkpoints", f"{workload.saves} checkpoints"))
    notes = list(workload.notes) + list(fm.notes) + list(throughput.reasons)
    if fm.cost.generated_tokens:
        notes.append("generation is priced at an unmeasured share of the training throughput")
    return TimeEstimate(
        steps=workload.steps,
        epochs=workload.epochs,
        tokens=workload.tokens,
        computed_tokens=workload.train.computed * workload.devices,
        train_seconds=train,
        eval_seconds=per_eval * workload.eval_runs,
        save_seconds=saves,
        flops=useful_flops(fm, workload.train) * workload.devices,
        devices=workload.devices,
        throughput=throughput,
        price_per_hour=float(price_per_hour or 0.0),
        reasons=reasons,
        notes=notes,
    )


def _steps_reason(config: RunConfig, workload: Workload) -> str:
    if config.max_steps > 0:
        return f"max_steps {config.max_steps} ({workload.epochs:.2f} epochs of {workload.examples} examples)"
    per_step = "" if workload.devices == 1 else f" on {workload.devices} devices"
    return f"{config.num_train_epochs:g} epochs of {workload.examples} examples{per_step}"


def _flops_reason(fm: FlopsModel, config: RunConfig) -> str:
    method = "full fine-tuning (6N)" if fm.full else f"{config.method} (4N + adapters)"
    extra = ", + a recompute forward (gradient checkpointing)" if fm.checkpointing else ""
    return f"{method}{extra}; {config.objective}: {fm.cost.why}"

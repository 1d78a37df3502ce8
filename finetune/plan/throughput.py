"""How fast a run trains: FLOPs per token for the method, the objective and checkpointing (the model),
over the device's sustained FLOP/s (the machine).

FLOPs of one decoder-only model on one token at context length s, N = the linear weights of every layer
plus the LM head's matmul (counted even when tied), the usual 2 FLOPs per multiply-add:
- forward: 2N + attention 4 * layers * q_dim * s (QK^T and AV, causal mask not halved, as PaLM counts it);
- backward: full fine-tuning twice the forward (input and weight gradients); LoRA/DoRA only the input
  gradients of the frozen weights (2N) plus the attention backward, and the adapters' own
  6 * r * (d_in + d_out) per adapted layer; DoRA also recomposes each adapted weight (B @ A and its
  column norms) once per forward pass, FLOPs per pass and not per token;
- gradient checkpointing: one more forward of the decoder layers;
- the objective, from OBJECTIVE_COSTS: how many sequences an example trains and how many no-grad
  forwards (a reference model, KTO's KL pairs) come with each trained token.

The device side (`Throughput`) is a sustained FLOP/s plus fixed seconds per forward/backward pass and per
optimizer step: on a CPU all measured by finetune.plan.calibration, on a GPU its peak (finetune.plan.gpus)
times an efficiency, with no fixed costs (folded into the efficiency).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from finetune.config import RunConfig
from finetune.plan.gpus import device_name, efficiency_for, peak_for
from finetune.plan.terms import resolve_targets


@dataclass(frozen=True)
class ObjectiveCost:
    """What one training example of an objective costs, relative to one SFT sequence of the same length."""

    sequences: int  # sequences trained per example (DPO/ORPO: chosen and rejected)
    no_grad_forwards: float  # extra forward passes per trained token without gradients (reference, KL pairs)
    generated_tokens: int = 0  # tokens generated per example before the update (online objectives)
    why: str = ""


# The objective factor table. An online objective that generates its completions (GRPO, issue 25) adds
# a row here with `generated_tokens` = completions x new tokens per prompt; generation is decoding, which
# runs far below the matmul throughput (memory-bound), so estimate_time prices it separately
# (GENERATION_SHARE) and says that the figure is unmeasured.
OBJECTIVE_COSTS: dict[str, ObjectiveCost] = {
    "sft": ObjectiveCost(1, 0.0, why="one sequence per example"),
    "dpo": ObjectiveCost(2, 1.0, why="chosen and rejected trained, plus a no-grad reference forward of both"),
    "orpo": ObjectiveCost(2, 0.0, why="chosen and rejected trained, no reference model"),
    "kto": ObjectiveCost(
        1, 3.0, why="each completion trained, plus no-grad forwards: its KL pair, and the reference of both"
    ),
    # GRPO: a trained sequence is one sampled completion (prompt + up to max_completion_length new tokens, all
    # generated first); with kl_coef > 0 a reference forward too. objective_cost fills in the config's figures.
    "grpo": ObjectiveCost(1, 0.0, generated_tokens=64, why="each completion generated, then trained"),
}
# decoding one token on a GPU reaches about this share of the training throughput: a stated default,
# unmeasured (only an objective with generated_tokens > 0 uses it)
GENERATION_SHARE = 0.1


def objective_cost(config: RunConfig) -> ObjectiveCost:
    """The row of OBJECTIVE_COSTS for the config's objective (an unknown one counts as SFT); GRPO's with the
    config's completion length and KL term."""
    if config.objective == "grpo":
        reference = 1.0 if config.kl_coef > 0 else 0.0
        why = f"each completion generated ({config.max_completion_length} new tokens at most), then trained"
        return ObjectiveCost(1, reference, generated_tokens=config.max_completion_length, why=why)
    return OBJECTIVE_COSTS.get(config.objective, OBJECTIVE_COSTS["sft"])


@dataclass(frozen=True)
class FlopsModel:
    """FLOPs of one run's model, split so that a batch of any length can be priced."""

    linear_fwd: float  # 2N: forward FLOPs per token of every matmul with a weight (layers + LM head)
    layers_fwd: float  # the decoder layers' share of linear_fwd (what checkpointing recomputes)
    attention_fwd_per_ctx: float  # forward attention FLOPs per token per token of context: 4 * layers * q_dim
    adapter_train: float  # the adapters' forward + backward FLOPs per token (0 for full fine-tuning)
    per_pass: float  # FLOPs per forward/backward pass independent of tokens (DoRA's weight recomposition)
    full: bool
    checkpointing: bool
    cost: ObjectiveCost
    notes: tuple[str, ...] = ()

    def train_token(self, context: float) -> float:
        """Training FLOPs of one trained token at context length `context` (what MFU counts: no recompute,
        no reference pass)."""
        attention = self.attention_fwd_per_ctx * context
        if self.full:
            return 3 * (self.linear_fwd + attention)
        return 2 * self.linear_fwd + 3 * attention + self.adapter_train

    def computed_token(self, context: float) -> float:
        """FLOPs the device really runs per trained token: training, the checkpointing recompute and the
        objective's no-grad forwards."""
        attention = self.attention_fwd_per_ctx * context
        extra = (self.layers_fwd + attention) if self.checkpointing else 0.0
        return self.train_token(context) + extra + self.cost.no_grad_forwards * (self.linear_fwd + attention)

    def forward_token(self, context: float) -> float:
        """Forward-only FLOPs of one token (evaluation)."""
        return self.linear_fwd + self.attention_fwd_per_ctx * context


def flops_model(shape, config: RunConfig, plan) -> FlopsModel:
    """The FLOPs model of `config` on a model of `shape` as `plan` trains it."""

    counts = shape.param_counts()
    layers_linear = counts["linear"] + counts["bias"]
    head = shape.vocab_size * shape.hidden_size
    linear_fwd = 2.0 * (layers_linear + head)
    attention = 4.0 * shape.num_layers * shape.q_dim
    notes = []
    adapter = per_pass = 0.0
    full = config.method == "full"
    if not full:
        targets, _ = resolve_targets(config.lora_target_modules, shape)
        r = config.lora_r
        adapter = 6.0 * r * sum(lin.d_in + lin.d_out for lin in targets) * shape.num_layers
        if config.method == "dora":
            adapted = sum(lin.d_in * lin.d_out for lin in targets) * shape.num_layers
            per_pass = 3.0 * (2 * r + 2) * adapted
            notes.append("DoRA recomposes every adapted weight once per forward pass")
    cost = objective_cost(config)
    return FlopsModel(
        linear_fwd=linear_fwd,
        layers_fwd=2.0 * layers_linear,
        attention_fwd_per_ctx=attention,
        adapter_train=adapter,
        per_pass=per_pass,
        full=full,
        checkpointing=bool(plan.gradient_checkpointing),
        cost=cost,
        notes=tuple(notes),
    )


@dataclass(frozen=True)
class Throughput:
    """What the device sustains for one kind of run, and how that was obtained."""

    device: str
    flops_per_s: float  # sustained FLOP/s of training matmuls
    attention_flops_per_s: float | None = None  # attention's own rate where measured (a CPU); None: flops_per_s
    pass_s: float = 0.0  # fixed seconds per forward/backward pass (kernel launches, Python, dequantization)
    step_s: float = 0.0  # fixed seconds per optimizer step (optimizer, clipping, scheduler, callbacks)
    eval_pass_s: float = 0.0  # fixed seconds per evaluation forward pass
    save_s: float = 0.0  # seconds per checkpoint, besides writing its bytes
    write_bytes_per_s: float = 500e6  # checkpoint writing speed (stated default, unmeasured)
    peak_flops_per_s: float | None = None  # the GPU's dense peak, for MFU; None on CPU
    measured: bool = False
    source: str = ""
    reasons: tuple[str, ...] = field(default=())

    @property
    def efficiency(self) -> float | None:
        return self.flops_per_s / self.peak_flops_per_s if self.peak_flops_per_s else None


def gpu_throughput(machine) -> Throughput | None:
    """A GPU's throughput: its peak from finetune.plan.gpus times the efficiency (measured in bench/results/
    where one exists, else the stated default); None for a GPU the peak table does not know."""

    name = device_name(machine)
    peak = peak_for(name)
    if peak is None:
        return None
    efficiency = efficiency_for(name)
    peak_flops = peak.tflops * 1e12
    source = f"{peak.key} peak {peak.tflops:g} TFLOP/s {peak.precision} ({peak.source}) x {efficiency.source}"
    return Throughput(
        device=machine.device,
        flops_per_s=peak_flops * efficiency.value,
        peak_flops_per_s=peak_flops,
        measured=efficiency.measured,
        source=source,
    )

"""Peak training memory of a run, by arithmetic over the model's shape and the RunConfig.

What is counted (bytes, then GiB; "GB" in this app means GiB, as nvidia-smi and torch report):
- base_weights: NF4 linears at 4 bits + 0.127 bit of double-quantized constants (our builder
  uses double quantization), 8-bit linears at 1 byte + an fp32 scale per row, 16-bit (or fp32
  on CPU) otherwise; embeddings, lm_head, norms and biases stay unquantized; tied embeddings once.
- adapter_weights / gradients / optimizer_states of the trainable parameters. TRL casts LoRA
  adapters of a quantized model to bf16; unquantized LoRA adapters stay fp32 (PEFT); full
  fine-tuning trains the weights in their load dtype. torch AdamW keeps 2 states in the
  parameter's dtype, 8-bit AdamW ~2 bytes, paged_adamw_32bit 8, Adafactor factored rows+cols, SGD 0.
- activations: what autograd saves, counted per op for a Llama-style layer (RMSNorms keep an
  fp32 copy of their input; SDPA keeps q, k, v, output and log-sum-exp; the gated MLP keeps
  3 x intermediate; each LoRA module with dropout keeps its dropout mask and output). With
  gradient checkpointing: one hidden state per layer boundary plus one layer recomputed.
  Sequences are taken at max_length (the worst batch; padding is to the longest example).
- logits_loss: TRL >= 1.x computes the loss with a fused, chunked LM head (4096 tokens x 32768
  vocabulary tiles, never the full logits); `loss="full"` models plain HF loss over full logits.
- workspace: temporaries of the backward pass beyond the loss buffers (gradients of one layer's
  activations, a dequantized weight), or of the optimizer step when that is the larger peak.
- cuda_context + allocator_slack (CUDA only): NOT in torch.cuda.max_memory_allocated; compare
  `allocated_gb` with max_memory_allocated and `total_gb` with what nvidia-smi shows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from finetune.config import RunConfig
from finetune.errors import ConfigError
from finetune.plan.generation import grpo_memory_terms
from finetune.plan.parallel import SHARD_STATES
from finetune.plan.shapes import ModelShape, load_shape
from finetune.plan.sharding import per_gpu, sharding_note
from finetune.plan.terms import (
    RunContext,
    activation_terms,
    make_context,
    optimizer_state_bytes,
    optimizer_transient,
    resolve_targets,
    trainable_matrices,
    weight_bytes,
)

GiB = 1024**3
CUDA_CONTEXT_GB = 0.5
ALLOCATOR_SLACK = 0.07  # caching-allocator fragmentation, share of the transient terms
CPU_RUNTIME_GB = 0.05
DEVICES = ("cuda", "cpu", "mps")
LOSSES = ("fused", "full")
TIGHT_BELOW, TIGHT_ABOVE = 0.90, 1.10


@dataclass
class MemoryEstimate:
    """An estimate of peak memory; `breakdown` (GiB per term) sums to `total_gb`."""

    model: str
    total_gb: float
    breakdown: dict[str, float]
    params: dict[str, int]
    notes: list[str]
    inputs: dict[str, Any]
    allocated_gb: float
    strategy: str = "none"  # none (one process) or a finetune.plan.parallel strategy
    gpus: int = 1  # total_gb is the peak of each of these GPUs
    shape: ModelShape | None = field(default=None, repr=False, compare=False)
    config: RunConfig | None = field(default=None, repr=False, compare=False)
    plan: Any = field(default=None, repr=False, compare=False)

    @property
    def per_gpu_gb(self) -> float:
        """The peak of one GPU (the whole estimate is per GPU; the same number as total_gb)."""
        return self.total_gb

    def verdict(self, gpu_total_gb: float) -> str:
        """fits / tight (within 10% of capacity either way) / will not fit."""
        if gpu_total_gb <= 0:
            return "will not fit"
        ratio = self.total_gb / gpu_total_gb
        if ratio <= TIGHT_BELOW:
            return "fits"
        return "tight" if ratio <= TIGHT_ABOVE else "will not fit"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (no shape/config objects)."""
        data = asdict(self)
        data.pop("shape", None)
        data.pop("config", None)
        data.pop("plan", None)
        data["per_gpu_gb"] = self.per_gpu_gb
        return data


# --- putting it together -------------------------------------------------------------------


def _notes(shape: ModelShape, config: RunConfig, ctx: RunContext, unknown: list[str]) -> list[str]:
    """The assumptions behind this estimate that a user may want to know."""
    notes = list(shape.notes)
    if ctx.device == "cuda":
        notes.append(
            "allocated_gb compares with torch.cuda.max_memory_allocated(); total_gb adds the CUDA context and "
            "allocator slack (what nvidia-smi shows)"
        )
    if ctx.loss == "fused":
        notes.append("loss: TRL's fused, chunked LM head (no full batch x seq x vocab logits)")
    if ctx.quantization != "none" and config.method != "full":
        notes.append("LoRA adapters of a quantized model are trained in bf16 (TRL), embeddings/lm_head unquantized")
    if ctx.optim.startswith("paged_") and ctx.device == "cuda":
        notes.append(
            "paged optimizer states live in CUDA unified memory: not in max_memory_allocated, may spill to RAM"
        )
    if ctx.device == "cpu":
        notes.append("device=cpu: fp32 compute and weights, peak process memory (RSS) growth, no CUDA context")
    if shape.max_position_embeddings and ctx.seq > shape.max_position_embeddings:
        notes.append(
            f"sequence length {ctx.seq} exceeds the model's max_position_embeddings {shape.max_position_embeddings}"
        )
    if config.method == "dora":
        notes.append("DoRA is approximate: its weight-norm temporaries depend on the PEFT version")
    if unknown and config.method != "full":
        notes.append(f"target modules not in a Llama-style layer, not counted: {', '.join(unknown)}")
    if ctx.padding_free:
        notes.append(
            f"padding-free micro-batches of {ctx.batch} examples counted at {ctx.seq} tokens each (the worst case)"
        )
    else:
        notes.append(f"sequences counted at {ctx.seq} tokens (batches are padded to their longest example)")
    if config.objective in ("dpo", "orpo"):
        notes.append(
            f"{config.objective}: chosen and rejected run through the model together, counted as "
            f"{ctx.batch} sequences per micro-batch; the no-grad reference pass peaks lower"
        )
    elif config.objective == "kto":
        notes.append("kto: the no-grad reference and KL passes peak below the training pass")
    elif config.objective == "grpo":
        notes.append(
            f"grpo: {ctx.batch} completions per micro-batch of up to {ctx.seq} tokens; generation counts the KV cache "
            "of the step's completions beyond the training pass (not yet calibrated)"
        )
    if ctx.liger:
        notes.append("Liger kernels: RMSNorm and SwiGLU keep less for backward (not yet calibrated on a GPU)")
    return notes


def estimate_memory(
    model: str | ModelShape,
    config: RunConfig,
    plan: Any,
    *,
    seq_len: int | None = None,
    loss: str = "fused",
) -> MemoryEstimate:
    """Estimate the peak memory of training `config` as `plan` (a finetune.plan.planner.Plan) settles it;
    reads only the model's config.json (see module docstring). `finetune.plan.planner.estimate` makes the
    plan and the estimate in one call."""
    if plan.device not in DEVICES:
        raise ConfigError([f"device: '{plan.device}' is not one of {', '.join(DEVICES)}"])
    if loss not in LOSSES:
        raise ConfigError([f"loss: '{loss}' is not one of {', '.join(LOSSES)}"])
    config.check()
    if seq_len is not None and seq_len < 1:
        raise ConfigError([f"seq_len: must be positive, got {seq_len}"])
    shape = model if isinstance(model, ModelShape) else load_shape(model)
    device = plan.device
    gpu_gb = plan.machine.gpu_gb or None
    ctx = make_context(shape, config, plan, seq_len, loss)
    _, unknown = resolve_targets(config.lora_target_modules, shape)
    if config.method != "full" and not ctx.targets:
        raise ConfigError([f"lora_target_modules: '{config.lora_target_modules}' matches no layer of {shape.name}"])
    mats, magnitude = trainable_matrices(shape, ctx)
    trainable = sum(r * c for r, c in mats) + magnitude
    weights = weight_bytes(shape, ctx)
    adapters = 0.0 if ctx.method == "full" else trainable * ctx.param_bytes + magnitude * (4 - ctx.param_bytes)
    kl_reference = config.objective in ("dpo", "kto") or (config.objective == "grpo" and config.kl_coef > 0)
    if kl_reference and config.start_from_run.strip() and ctx.method != "full":
        adapters *= 2  # TRL's frozen "ref" copy of the starting adapter (adapter weights only)
    grads = (trainable - magnitude) * ctx.param_bytes + magnitude * 4
    states = optimizer_state_bytes(mats, magnitude, ctx)
    saved, loss_b, workspace = activation_terms(shape, ctx)
    sampling = 0.0
    if config.objective == "grpo":  # its own loss path, and the sampling of completions before the training pass
        loss_b, sampling = grpo_memory_terms(shape, config, plan, ctx)
    strategy, world = getattr(plan, "strategy", "none"), plan.machine.world_size
    # the optimizer steps over this GPU's shard only when the states are sharded
    step_extra = optimizer_transient(mats, ctx) / (world if strategy in SHARD_STATES else 1) - (
        saved + loss_b + workspace
    )
    workspace += max(0.0, step_extra)
    transient = saved + loss_b + workspace
    generation = max(0.0, sampling - transient)  # sampling's peak beyond the training pass's (never both at once)
    breakdown = {
        "base_weights": weights,
        "adapter_weights": adapters,
        "gradients": grads,
        "optimizer_states": states,
        "activations": saved,
        "logits_loss": loss_b,
        "workspace": workspace,
    }
    if config.objective == "grpo":
        breakdown["generation"] = generation
    breakdown = per_gpu(breakdown, shape, ctx, trainable, strategy, world)
    transient += breakdown.get("gathered_weights", 0.0)
    if device == "cuda":
        breakdown["allocator_slack"] = ALLOCATOR_SLACK * transient
        breakdown["cuda_context"] = CUDA_CONTEXT_GB * GiB
    elif device == "cpu":
        breakdown["runtime"] = CPU_RUNTIME_GB * GiB
    gb = {key: value / GiB for key, value in breakdown.items()}
    not_allocated = gb.get("cuda_context", 0) + gb.get("allocator_slack", 0)
    if ctx.optim.startswith("paged_") and device == "cuda":
        not_allocated += gb["optimizer_states"]
    counts = shape.param_counts()
    params = {**counts, "trainable": trainable}
    inputs = {
        "model": shape.name,
        "source": shape.source,
        "device": device,
        "loss": loss,
        "batch_size": ctx.batch,
        "seq_len": ctx.seq,
        "method": config.method,
        "objective": config.objective,
        "quantization": ctx.quantization,
        "lora_r": config.lora_r if config.method != "full" else None,
        "lora_target_modules": config.lora_target_modules if config.method != "full" else None,
        "gradient_checkpointing": ctx.checkpointing,
        "padding_free": ctx.padding_free,
        "use_liger_kernel": ctx.liger,
        "optim": config.optim,
        "compute_dtype": "fp32" if ctx.compute_bytes == 4 else "bf16/fp16",
        "gpu_gb": gpu_gb,
        "strategy": strategy,
        "gpus": world,
    }
    total = sum(gb.values())
    notes = _notes(shape, config, ctx, unknown)
    if sharding_note(strategy, world):
        notes.insert(0, sharding_note(strategy, world))
    return MemoryEstimate(
        model=shape.name,
        total_gb=round(total, 3),
        breakdown={key: round(value, 3) for key, value in gb.items()},
        params=params,
        notes=notes,
        inputs=inputs,
        allocated_gb=round(total - not_allocated, 3),
        strategy=strategy,
        gpus=world,
        shape=shape,
        config=config,
        plan=plan,
    )

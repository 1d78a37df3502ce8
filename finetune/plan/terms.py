"""The byte counts behind `estimate_memory`: parameters, optimizer state, and what autograd
keeps for backward in a Llama-style layer (see `finetune.plan.memory` for the overview).

The per-op activation counts were checked against torch's saved-tensor hooks on a LoRA'd
Llama/Qwen2 layer (fp32 and bf16 autocast) and against measured peaks (bench/calibrate_memory.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from finetune.config import RunConfig, lora_targets
from finetune.plan.shapes import LINEAR_MODULES, Linear, ModelShape

NF4_BYTES = (4 + 0.127) / 8  # 4-bit codes + double-quantized absmax constants
FUSED_TOKENS, FUSED_VOCAB = 4096, 32768  # TRL's chunked log-prob tile
CPU_TILE_BYTES = 36  # measured peak bytes per tile element of TRL's torch fallback (fp32)


@dataclass
class RunContext:
    """Everything the terms need, derived once from config + device."""

    batch: int
    seq: int
    device: str
    loss: str
    method: str
    quantization: str
    compute_bytes: int  # activations and unquantized weights
    param_bytes: int  # trainable parameters, their gradients
    lora_in_bytes: int  # dtype of the LoRA branch input
    mask_bytes: int  # dropout mask element
    autocast: bool
    padded: bool
    attn: str
    rank: int
    dropout: float
    targets: list[Linear]
    optim: str
    checkpointing: bool
    padding_free: bool = False
    liger: bool = False

    @property
    def tokens(self) -> int:
        return self.batch * self.seq


def resolve_targets(spec: str, shape: ModelShape) -> tuple[list[Linear], list[str]]:
    """`all-linear` / `attention` / comma list -> the layer's Linear objects, plus unknown names."""
    targets = lora_targets(spec)
    wanted = list(LINEAR_MODULES) if targets == "all-linear" else list(targets)
    by_name = {lin.name: lin for lin in shape.linears()}
    known = [by_name[name] for name in LINEAR_MODULES if name in wanted]
    unknown = [name for name in wanted if name not in by_name]
    return known, unknown


def make_context(shape: ModelShape, config: RunConfig, plan, seq_len: int | None, loss: str) -> RunContext:
    """Derive dtypes and sizes the way the engine (TRL SFTTrainer + PEFT + bnb) sets them up for
    `plan` (a finetune.plan.planner.Plan: device, precision, attention, batches, micro-batch, checkpointing)."""
    device = plan.device
    cb = 2 if (plan.bf16 or plan.fp16) and device != "cpu" else 4
    quantized = config.method != "full" and config.quantization in ("4bit", "8bit")
    param_bytes = cb if config.method == "full" else (2 if quantized else 4)
    autocast = device != "cpu" and cb == 2
    targets, _ = resolve_targets(config.lora_target_modules, shape)
    lora_in = cb if autocast else param_bytes
    # DPO and ORPO run chosen and rejected through the policy in one batch: twice the sequences with
    # activations kept for backward. The reference (and KTO's KL) passes run without grad: their
    # transient peak is below the policy's, so they add no term.
    sequences = 2 if config.objective in ("dpo", "orpo") else 1
    batch = plan.per_device_train_batch_size * sequences
    flat = plan.padding_free or plan.packing
    return RunContext(
        batch=batch,
        seq=int(seq_len or config.max_length),
        device=device,
        loss=loss,
        method=config.method,
        quantization="none" if config.method == "full" else config.quantization,
        compute_bytes=cb,
        param_bytes=param_bytes,
        lora_in_bytes=lora_in,
        mask_bytes=1 if device == "cuda" else lora_in,
        autocast=autocast,
        padded=batch > 1 and not flat,
        attn=plan.attn_implementation,
        rank=config.lora_r,
        dropout=config.lora_dropout,
        targets=[] if config.method == "full" else targets,
        optim=config.optim,
        checkpointing=bool(plan.gradient_checkpointing),
        padding_free=flat,
        liger=bool(plan.use_liger_kernel),
    )


# --- parameters ------------------------------------------------------------------------


def weight_bytes(shape: ModelShape, ctx: RunContext) -> float:
    """Frozen (or fully trained) base weights as they sit in memory."""
    counts = shape.param_counts()
    unquantized = counts["total"] - counts["linear"]
    if ctx.quantization == "4bit":
        return counts["linear"] * NF4_BYTES + unquantized * ctx.compute_bytes
    if ctx.quantization == "8bit":
        rows = sum(lin.d_out for lin in shape.linears()) * shape.num_layers
        return counts["linear"] + rows * 4 + unquantized * ctx.compute_bytes
    return counts["total"] * ctx.compute_bytes


def trainable_matrices(shape: ModelShape, ctx: RunContext) -> tuple[list[tuple[int, int]], int]:
    """Trainable matrices as (rows, cols) (one entry per layer instance) and DoRA magnitude count."""
    if ctx.method == "full":
        mats = [(lin.d_out, lin.d_in) for lin in shape.linears()] * shape.num_layers
        counts = shape.param_counts()
        mats.append((shape.vocab_size, shape.hidden_size))
        if counts["lm_head"]:
            mats.append((shape.vocab_size, shape.hidden_size))
        mats.append((1, counts["norm"] + counts["bias"]))
        return mats, 0
    mats = []
    for lin in ctx.targets:
        mats += [(ctx.rank, lin.d_in), (lin.d_out, ctx.rank)] * shape.num_layers
    magnitude = sum(lin.d_out for lin in ctx.targets) * shape.num_layers if ctx.method == "dora" else 0
    return mats, magnitude


def optimizer_state_bytes(mats: list[tuple[int, int]], magnitude: int, ctx: RunContext) -> float:
    """Optimizer state for the trainable parameters (magnitude vectors are fp32)."""
    count = sum(r * c for r, c in mats)
    if ctx.optim in ("adamw_torch", "adamw_torch_fused"):
        return count * 2 * ctx.param_bytes + magnitude * 8
    if ctx.optim in ("adamw_8bit", "paged_adamw_8bit"):
        return (count + magnitude) * 2
    if ctx.optim == "paged_adamw_32bit":
        return (count + magnitude) * 8
    if ctx.optim == "adafactor":
        return sum((r + c) if r > 1 else c for r, c in mats) * 4 + magnitude * 4
    return 0.0  # sgd without momentum (HF's default)


def optimizer_transient(mats: list[tuple[int, int]], ctx: RunContext) -> float:
    """Temporaries of one optimizer step: foreach AdamW on CUDA copies the states once."""
    largest = max((r * c for r, c in mats), default=0)
    if ctx.optim == "adamw_torch" and ctx.device == "cuda":
        return sum(r * c for r, c in mats) * ctx.param_bytes
    if ctx.optim in ("adamw_torch", "adafactor"):
        return largest * 4
    return 0.0


# --- activations -------------------------------------------------------------------------


def _attention_token_bytes(shape: ModelShape, ctx: RunContext) -> float:
    """Per token: q, k, v (repeated to all heads when a padding mask forces it), output, LSE."""
    b = ctx.compute_bytes
    if ctx.attn == "eager":
        return 3 * shape.q_dim * b
    kv = shape.q_dim if (ctx.padded and "flash" not in ctx.attn) else shape.kv_dim
    return (2 * shape.q_dim + 2 * kv) * b + shape.num_heads * 4


def _adapter_token_bytes(shape: ModelShape, ctx: RunContext) -> float:
    """Per token: what the LoRA branches (or, for full fine-tuning, the linears) keep for backward."""
    b, h, i = ctx.compute_bytes, shape.hidden_size, shape.intermediate_size
    if ctx.method == "full":
        return (2 * h + i + (shape.q_dim if ctx.attn == "eager" else 0)) * b + (2 * h * b if b != 4 else 0)
    lb = ctx.lora_in_bytes
    total = float(len(ctx.targets) * ctx.rank * lb)
    if ctx.dropout > 0:
        total += sum(lin.d_in * (ctx.mask_bytes + lb) for lin in ctx.targets)
    elif lb != b:
        total += sum(lin.d_in * lb for lin in ctx.targets)
    else:  # lora_A keeps its input, shared by modules reading the same tensor
        group = {"q_proj": "n1", "k_proj": "n1", "v_proj": "n1", "o_proj": "attn", "gate_proj": "n2"}
        group.update({"up_proj": "n2", "down_proj": "mid"})
        inputs = {group[lin.name]: lin.d_in for lin in ctx.targets}
        if ctx.attn != "eager":
            inputs.pop("attn", None)  # the attention output is already kept by SDPA
        total += sum(inputs.values()) * b
    if ctx.method == "dora":
        total += sum(lin.d_out for lin in ctx.targets) * b
    return total


def layer_token_bytes(shape: ModelShape, ctx: RunContext) -> float:
    """Bytes one decoder layer keeps for backward per token (no checkpointing)."""
    b, h = ctx.compute_bytes, shape.hidden_size
    norm_bytes = b if ctx.liger else 4  # Liger's RMSNorm keeps its input as is and the rstd
    norms = 2 * (h * norm_bytes + 4) + ((shape.q_dim + shape.kv_dim) * norm_bytes if shape.qk_norm else 0)
    mlp = (2 if ctx.liger else 3) * shape.intermediate_size * b  # Liger's SwiGLU recomputes its product
    return norms + _attention_token_bytes(shape, ctx) + mlp + _adapter_token_bytes(shape, ctx)


def _layer_sequence_bytes(shape: ModelShape, ctx: RunContext) -> float:
    """Per layer, terms growing with seq^2: the float padding mask SDPA keeps, eager attention maps."""
    b, s = ctx.compute_bytes, ctx.seq
    if ctx.attn == "eager":
        return ctx.batch * shape.num_heads * s * s * (4 + b)
    if ctx.padded and "flash" not in ctx.attn:
        return ctx.batch * s * s * b
    return 0.0


def flat_mask_bytes(ctx: RunContext) -> float:
    """A padding-free micro-batch over sdpa: transformers builds one boolean block-diagonal mask over
    the flattened batch (shared by every layer); flash/varlen kernels take sequence boundaries instead."""
    if not ctx.padding_free or ctx.attn != "sdpa":
        return 0.0
    return float(ctx.tokens) ** 2


def _model_token_bytes(shape: ModelShape, ctx: RunContext) -> float:
    """Per token, outside the layers: final norm's fp32 copy, the LM head input, rotary tables."""
    b = ctx.compute_bytes
    return shape.hidden_size * (4 + b) + 2 * shape.head_dim * b + 32


def _loss_bytes(shape: ModelShape, ctx: RunContext) -> float:
    """Loss buffers at their peak (start of the backward pass)."""
    n, b = ctx.tokens, ctx.compute_bytes
    if ctx.loss == "full":
        upcast = 4 if b != 4 else 0
        forward = n * shape.vocab_size * (b + upcast + 4)
        backward = n * shape.vocab_size * (12 + (b if b != 4 else 0))
        return max(forward, backward)
    tile = min(n, FUSED_TOKENS) * min(shape.vocab_size, FUSED_VOCAB)
    if ctx.device != "cuda":  # no Triton: each tile is folded with torch ops, ~9 fp32 tile-sized temporaries
        return tile * CPU_TILE_BYTES + n * shape.hidden_size * (4 + b)
    return tile * b + n * shape.hidden_size * (4 + b)


def _backward_bytes(shape: ModelShape, ctx: RunContext) -> float:
    """Gradients of one layer's activations alive at once while it runs backward."""
    return ctx.tokens * (3 * shape.intermediate_size * ctx.compute_bytes + 2 * shape.hidden_size * 4)


def _dequant_bytes(shape: ModelShape, ctx: RunContext) -> float:
    """A quantized weight dequantized for a matmul (bnb's fallback for many-token batches);
    DoRA also materializes a full fp32 weight (base + B @ A) to take its column norms."""
    largest = max(lin.d_in * lin.d_out for lin in ctx.targets or shape.linears())
    dora = largest * 2 * 4 if ctx.method == "dora" else 0.0
    if ctx.quantization == "none":
        return dora
    largest = max(lin.d_in * lin.d_out for lin in shape.linears())
    return dora + largest * ctx.compute_bytes


def activation_terms(shape: ModelShape, ctx: RunContext) -> tuple[float, float, float]:
    """(saved activations at the peak, loss buffers, backward workspace beyond the loss buffers)."""
    n, layers = ctx.tokens, shape.num_layers
    full_layer = n * layer_token_bytes(shape, ctx) + _layer_sequence_bytes(shape, ctx)
    model_level = n * _model_token_bytes(shape, ctx) + flat_mask_bytes(ctx)
    if ctx.checkpointing:
        saved = layers * n * shape.hidden_size * ctx.compute_bytes + model_level
        layer_peak = full_layer + _backward_bytes(shape, ctx)  # one layer recomputed, then its backward
    else:
        saved = layers * full_layer + model_level
        layer_peak = _backward_bytes(shape, ctx)
    loss = _loss_bytes(shape, ctx)
    # the loss buffers are freed before the layers run backward: the larger of the two counts
    workspace = max(0.0, layer_peak - loss)
    return saved, loss, workspace + _dequant_bytes(shape, ctx)

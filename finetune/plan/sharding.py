"""Per-GPU memory under a multi-GPU strategy: what each one divides among the GPUs, and what it
gathers back while a layer runs.

- ddp: nothing is divided (every GPU holds the whole model and its training state).
- zero2: gradients and optimizer states divided by the number of GPUs.
- fsdp (FSDP2, one unit per decoder layer): also the layers' weights and adapters; the root unit
  (embedding, final norm, lm_head) is gathered for the whole step, and two decoder layers are
  whole at a time (the one computing and the one prefetched), plus one layer's gradients before
  they are reduce-scattered when every weight trains.
- zero3: every weight divided, gathered per layer (two at a time) and the embedding or lm_head
  while it is used.
- DeepSpeed with bf16/fp16 keeps fp32 master weights and fp32 Adam states of the trainable
  parameters in its (divided) optimizer partition.
Unmeasured on several GPUs here: `bench/multi_gpu_check.sh` measures it on a multi-GPU host.
"""

from __future__ import annotations

from finetune.plan.parallel import DEEPSPEED, SHARD_STATES, SHARD_WEIGHTS
from finetune.plan.shapes import ModelShape

PREFETCHED_LAYERS = 2  # the layer computing and the next one, gathered ahead


def per_gpu(breakdown: dict[str, float], shape: ModelShape, ctx, trainable: int, strategy: str, world: int):
    """The byte terms of one GPU of `world` under `strategy`; adds `gathered_weights` when weights are sharded."""
    if world <= 1 or strategy not in SHARD_STATES:
        return dict(breakdown)
    out = dict(breakdown)
    if strategy in DEEPSPEED and ctx.compute_bytes == 2:
        adam = ctx.optim in ("adamw_torch", "adamw_torch_fused")
        out["optimizer_states"] = trainable * 4 + (trainable * 8 if adam else out["optimizer_states"])
    out["gradients"] /= world
    out["optimizer_states"] /= world
    if strategy not in SHARD_WEIGHTS:
        return out
    counts = shape.param_counts()
    root = (counts["embedding"] + counts["lm_head"] + shape.hidden_size) * ctx.compute_bytes
    layers = max(0.0, out["base_weights"] - root)
    layer = layers / shape.num_layers
    gathered = PREFETCHED_LAYERS * layer
    if ctx.method == "full":
        gathered += layer / ctx.compute_bytes * ctx.param_bytes  # one layer's unreduced gradients
    if strategy == "fsdp":
        out["base_weights"] = layers / world + root
    else:
        out["base_weights"] /= world
        gathered += max(counts["embedding"], counts["lm_head"]) * ctx.compute_bytes
    out["adapter_weights"] /= world
    out["gathered_weights"] = gathered
    return out


def sharding_note(strategy: str, world: int) -> str:
    if world <= 1:
        return ""
    if strategy not in SHARD_STATES:
        return f"per GPU of {world} with ddp: every GPU holds the whole model and its training state"
    what = "weights, gradients and optimizer states" if strategy in SHARD_WEIGHTS else "gradients and optimizer states"
    return (
        f"per GPU of {world} with {strategy}: {what} divided by {world}; gathered layers counted whole "
        "(not yet measured on several GPUs)"
    )

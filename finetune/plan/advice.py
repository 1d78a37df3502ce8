"""What an out-of-memory failure tells the user: the estimate, a smaller preset that the
estimate says fits, and the knobs that save the most, each with its estimated saving."""

from __future__ import annotations

from finetune.config import RunConfig
from finetune.errors import FinetuneError
from finetune.plan.hardware import detect_hardware, detect_machine
from finetune.plan.memory import MemoryEstimate
from finetune.plan.planner import estimate as plan_estimate
from finetune.presets import TIER_ORDER, apply_preset, load_preset, smaller_tiers, suggest_preset

MIN_SAVING_GB = 0.05
MEMORY_TERMS = ("base_weights", "activations", "logits_loss", "optimizer_states", "workspace")


def knob_changes(config: RunConfig) -> list[tuple[str, dict]]:
    """Smaller-memory variants of `config`: (what to tell the user, the settings to change)."""
    c, changes = config, []
    if c.per_device_train_batch_size > 1:
        batch = c.per_device_train_batch_size // 2
        accum = c.gradient_accumulation_steps * 2
        text = (
            f"per_device_train_batch_size {c.per_device_train_batch_size} -> {batch} (and gradient_accumulation_steps "
            f"{c.gradient_accumulation_steps} -> {accum} to keep the effective batch)"
        )
        smaller = {"per_device_train_batch_size": batch, "gradient_accumulation_steps": accum}
        changes.append((text, {**smaller, "resize_micro_batch": False}))
    if c.max_length > 256:
        changes.append((f"max_length {c.max_length} -> {c.max_length // 2}", {"max_length": c.max_length // 2}))
    if c.gradient_checkpointing is not True:  # false, or auto (which may have left it off)
        changes.append(("gradient_checkpointing true", {"gradient_checkpointing": True}))
    if c.method == "full":
        changes.append(("method lora with quantization 4bit (QLoRA)", {"method": "lora", "quantization": "4bit"}))
    elif c.quantization != "4bit":
        changes.append((f"quantization {c.quantization} -> 4bit", {"quantization": "4bit"}))
    if c.method != "full" and c.lora_r > 8:
        changes.append(
            (
                f"lora_r {c.lora_r} -> {c.lora_r // 2}",
                {"lora_r": c.lora_r // 2, "lora_alpha": max(1, c.lora_alpha // 2)},
            )
        )
    if c.optim in ("adamw_torch", "adamw_torch_fused", "paged_adamw_32bit"):
        changes.append((f"optim {c.optim} -> paged_adamw_8bit", {"optim": "paged_adamw_8bit"}))
    if c.attn_implementation == "eager":
        changes.append(("attn_implementation eager -> sdpa", {"attn_implementation": "sdpa"}))
    return changes


def _re_estimate(estimate: MemoryEstimate, config: RunConfig) -> MemoryEstimate | None:
    """The same estimate (same machine) for another config, or None when that config is not valid."""

    try:
        return plan_estimate(config, estimate.plan.machine, model=estimate.shape)[1]
    except FinetuneError:
        return None


def ranked_knobs(config: RunConfig, estimate: MemoryEstimate) -> list[tuple[str, float]]:
    """Knob changes with their estimated saving in GB, biggest first."""
    ranked = []
    for text, change in knob_changes(config):
        smaller = _re_estimate(estimate, config.replace(**change))
        if smaller is not None and estimate.total_gb - smaller.total_gb >= MIN_SAVING_GB:
            ranked.append((text, estimate.total_gb - smaller.total_gb))
    return sorted(ranked, key=lambda item: -item[1])


def _current_tier(config: RunConfig) -> str | None:
    """The tier preset whose settings this config still has, if any."""

    for name in reversed(TIER_ORDER):
        settings = load_preset(name)
        if all(getattr(config, key) == value for key, value in settings.items()):
            return name
    return None


def smaller_preset(config: RunConfig, estimate: MemoryEstimate, gpu_gb: float, hw=None) -> tuple[str, float] | None:
    """The next smaller tier preset (by tier order) the estimate says fits, with its estimate."""

    current = _current_tier(config)
    if current is None and (hw is None or gpu_gb <= 0):
        return None  # neither the tier in use nor the GPU is known: nothing sensible to name
    start = current or suggest_preset(hw)
    candidates = smaller_tiers(start) if current else [start, *smaller_tiers(start)]
    fallback = None
    for name in candidates:
        if name == "cpu":
            continue
        smaller = _re_estimate(estimate, apply_preset(config, name))
        if smaller is None:
            continue
        fallback = (name, smaller.total_gb)
        if gpu_gb <= 0 or smaller.verdict(gpu_gb) == "fits":
            return fallback
    return fallback


def _breakdown_text(estimate: MemoryEstimate) -> str:
    names = {"base_weights": "weights", "logits_loss": "logits+loss", "optimizer_states": "optimizer"}
    parts = [
        f"{names.get(key, key)} {estimate.breakdown[key]:.1f}" for key in MEMORY_TERMS if key in estimate.breakdown
    ]
    return ", ".join(parts)


def _generic(config: RunConfig) -> str:
    """Advice when no estimate can be made (model config unreadable)."""
    knobs = [text for text, _ in knob_changes(config)[:4]]
    return "Out of GPU memory. Try: " + "; ".join(knobs or ["a smaller model"]) + "."


def oom_advice(config: RunConfig, estimate: MemoryEstimate | None = None, hw=None) -> str:
    """The paragraph an out-of-memory failure shows: estimate, a smaller preset, top knobs.

    `estimate` and `hw` are computed (estimate of config.model_name_or_path, detect_hardware())
    when not given, so `oom_advice(config)` works from an exception handler.
    """

    if hw is None:
        hw = detect_hardware()
    if estimate is None:
        try:
            estimate = plan_estimate(config, detect_machine(hw))[1]
        except FinetuneError:
            return _generic(config)
    gpu = hw.gpus[0] if hw is not None and getattr(hw, "gpus", None) else None
    gpu_gb = gpu.total_gb if gpu else 0.0
    where = f" on {gpu.name} ({gpu.total_gb:.1f} GB, {gpu.free_gb:.1f} GB free at start-up)" if gpu else ""
    lines = [
        f"Out of GPU memory{where}. This run was estimated at {estimate.total_gb:.1f} GB "
        f"({_breakdown_text(estimate)} GB) for {estimate.model} at batch {estimate.inputs.get('batch_size')} "
        f"x {estimate.inputs.get('seq_len')} tokens."
    ]
    if gpu and estimate.verdict(gpu_gb) == "fits":
        lines.append(
            "The estimate fits this GPU, so something else may hold GPU memory (another process, an open "
            "comparison model), or the estimate is off for this model; the changes below still help."
        )
    weights = estimate.breakdown.get("base_weights", 0.0)
    if gpu and weights > 0.8 * gpu_gb:
        lines.append(f"The model's weights alone take {weights:.1f} GB: choose a smaller model.")
    preset = smaller_preset(config, estimate, gpu_gb, hw)
    if preset:
        lines.append(f"Try the preset '{preset[0]}' (estimated {preset[1]:.1f} GB).")
    knobs = ranked_knobs(config, estimate)[:3]
    if knobs:
        lead = "Or change" if preset else "Change"
        lines.append(
            f"{lead}, biggest saving first: " + "; ".join(f"{text} (saves ~{gb:.1f} GB)" for text, gb in knobs) + "."
        )
    elif not preset:
        lines.append("These settings are already the smallest this app offers: try a smaller model.")
    return " ".join(lines)

"""The planner: every `auto` decision of a run, made once, for one machine and one model.

`make_plan(config, machine, model=...)` turns a RunConfig whose knobs may say `auto` into a
frozen `Plan`: device, precision, attention kernel, packing / padding-free batches, sampler,
micro-batch and accumulation, gradient checkpointing, Liger kernels and the loss path, each
with the reason it was taken. The builders only translate the plan into library objects, the
memory estimate reads the same plan, the Model & memory tab shows it before Start, and a run
writes it to train.log and plan.json.

GPU policy, from measurement (one H200, torch 2.11+cu130, transformers 5.23, trl 1.16,
QLoRA r16, batch 4 x 4, rows of 21-1008 tokens at max_length 1024; issue 9's table):
- padding-free batches over sdpa: 2.2-2.7x the padded, length-rebalanced engine at the 0.5B
  shape (bfd packing, the same padding-free collation); on CPU padding-free was 1.18x slower
  (bench/results/cpu_demo.md), so `auto` turns it on for CUDA only. bfd packing itself regroups
  rows (more rows per optimizer step), which changes what is learned: `auto` never packs.
- Liger kernels: 1.8x slower at the 0.5B shape: `auto` leaves them off.
- micro-batch: the GPU ran at 0.8% MFU with micro-batches of 4 short rows (launch-bound); with
  padding-free batches `auto` merges micro-batches of an optimizer step up to about
  MICRO_BATCH_TOKENS real tokens when the memory estimate of the worst case fits, with the
  accumulation lowered so the effective batch (and so the loss, see tests/test_plan.py) is the same.
- gradient checkpointing: off only when the estimate without it fits in GC_HEADROOM of the GPU.
Unmeasured choices are named as such in their reason; `bench/gpu_check.sh` measures each.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from finetune.config import RunConfig
from finetune.errors import FinetuneError
from finetune.names import says_instruction_tuned
from finetune.plan.generation import grpo_objective_reason, plan_generation
from finetune.plan.hardware import Machine
from finetune.plan.memory import estimate_memory
from finetune.plan.parallel import WHAT_IS_SHARDED
from finetune.plan.shapes import ModelShape, load_shape

GC_HEADROOM = 0.85  # auto checkpointing / micro-batch: the share of GPU memory a plan may fill
MICRO_BATCH_TOKENS = 8192  # auto micro-batch: real tokens per forward pass to aim for on a GPU
SAMPLERS = {"random": "random", "rebalance": "batch_rebalance", "group": "group_by_length"}
DTYPES = {(True, False): "bfloat16", (False, True): "float16", (False, False): "float32"}


@dataclass(frozen=True)
class Plan:
    """How one run trains on one machine; every field settled (no `auto`)."""

    machine: Machine
    device: str
    bf16: bool
    fp16: bool
    attn_implementation: str
    packing: bool = False  # TRL bfd packing (rows regrouped into max_length blocks)
    padding_free: bool = False  # each micro-batch flattened into one row, no padding
    sampler: str = "random"  # random | rebalance | group (see SAMPLERS)
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    use_liger_kernel: bool = False
    cpu_threads: int | None = None  # torch threads for CPU training; None: torch's default
    strategy: str = "none"  # none (one process) or one of finetune.plan.parallel.STRATEGIES
    shard_at_load: bool = False  # FSDP2 applied by transformers as the weights load (CPU: accelerate has no FSDP)
    memory_gb: float | None = None  # the estimate of this plan's peak, when the model's shape is known
    objective: str = "sft"  # sft | dpo | orpo | kto | grpo (config.objective), for the estimate and the decisions table
    eval_batch_size: int | None = None  # grpo: the eval batch rounded to whole groups of num_generations
    generation: str = ""  # grpo: how completions are sampled (finetune.plan.generation)
    reasons: tuple[tuple[str, str], ...] = ()

    @property
    def dtype_name(self) -> str:
        return DTYPES[(self.bf16, self.fp16)]

    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype_name)

    @property
    def train_sampling_strategy(self) -> str:
        return SAMPLERS[self.sampler]

    @property
    def effective_batch(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * self.machine.world_size

    def reason(self, name: str) -> str:
        return dict(self.reasons).get(name, "")

    def decisions(self) -> list[tuple[str, str, str]]:
        """(decision, value, why) rows for the Model & memory tab and train.log."""
        values = {
            "device": f"{self.device} ({self.machine.summary()})",
            "precision": self.dtype_name,
            "attention": self.attn_implementation,
            "batches": (
                "bfd packing (padding-free)"
                if self.packing
                else "padding-free"
                if self.padding_free
                else f"padded to the longest example, {self.train_sampling_strategy} sampler"
            ),
            "micro-batch": f"{self.per_device_train_batch_size} x {self.gradient_accumulation_steps} accumulation",
            "gradient checkpointing": "on" if self.gradient_checkpointing else "off",
            "kernels": "Liger (RMSNorm, RoPE, SwiGLU)" if self.use_liger_kernel else "PyTorch",
            "threads": str(self.cpu_threads or "torch's default"),
            "parallelism": self.parallelism(),
            "loss": "fused chunked LM head, label positions only"
            if self.objective != "grpo"
            else "TRL's GRPO loss over the completion tokens (clipped ratio x advantage)",
        }
        if self.reason("memory estimate"):  # a plan made by make_plan says what its memory figure rests on
            values["memory estimate"] = f"{self.memory_gb:.1f} GB peak" if self.memory_gb is not None else "unknown"
        if self.objective != "sft":
            values["objective"] = self.objective
        if self.generation:
            values["generation"] = self.generation
        if self.device != "cpu":
            values.pop("threads")
        return [(name, value, self.reason(name)) for name, value in values.items()]

    @property
    def world_size(self) -> int:
        return self.machine.world_size

    def parallelism(self) -> str:
        """e.g. `fsdp over 2 processes (weights, gradients and optimizer states sharded)`."""
        if self.strategy == "none":
            return "one process"

        shared = WHAT_IS_SHARDED[self.strategy]
        return (
            f"{self.strategy} over {self.world_size} processes ({shared}{' sharded' if self.strategy != 'ddp' else ''})"
        )

    def summary(self) -> str:
        """One line, e.g. `plan: cuda · bfloat16 · sdpa · padding-free · 8 x 2 · checkpointing off · PyTorch`."""
        parts = [value for name, value, _ in self.decisions() if name not in ("loss", "memory estimate")]
        return "plan: " + " · ".join(parts)

    def lines(self) -> list[str]:
        return [f"plan: {name}: {value}" + (f" ({why})" if why else "") for name, value, why in self.decisions()]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reasons"] = dict(self.reasons)
        data["dtype"] = self.dtype_name
        data["train_sampling_strategy"] = self.train_sampling_strategy
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, default=str)


def _explicit(value: Any) -> bool:
    return value is True or value is False


def _shape(model: Any, config: RunConfig):
    """(the model's shape for the memory estimate, "") or (None, why it could not be read: an offline Hub
    id, a folder without a readable config.json...)."""

    if isinstance(model, ModelShape):
        return model, ""
    try:
        return load_shape(model or config.model_name_or_path), ""
    except FinetuneError as exc:  # ModelError: the shape cannot be read; nothing else is expected here
        return None, f"the model's shape could not be read ({_first_line(exc)})"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _precision(config: RunConfig, machine: Machine) -> tuple[bool, bool, str]:
    cuda = machine.device == "cuda"
    bf16 = (cuda and machine.bf16) if config.bf16 == "auto" else bool(config.bf16)
    fp16 = (cuda and not bf16) if config.fp16 == "auto" else bool(config.fp16)
    if bf16 and fp16:
        fp16 = False
    if config.bf16 == "auto" and config.fp16 == "auto":
        why = "the GPU supports bfloat16" if bf16 else "GPU without bfloat16" if fp16 else "no GPU: float32"
    else:
        why = "set in the config"
    return bf16, fp16, why


def _attention(config: RunConfig, machine: Machine, loaded: str | None) -> tuple[str, str]:
    if loaded:
        return loaded, "the kernel the loaded model uses"
    if config.attn_implementation != "auto":
        return config.attn_implementation, "set in the config"
    if machine.flash_attn:
        return "flash_attention_2", "flash-attn is installed and the GPU supports it"
    return "sdpa", "PyTorch's scaled-dot-product attention (flash-attn not installed)"


def _batches(config: RunConfig, machine: Machine, attn: str) -> tuple[bool, bool, list[tuple[str, str]]]:
    """(packing, padding_free, reasons)."""
    if config.objective == "grpo":
        return False, False, [("batches", "TRL's GRPO trainer pads the prompts and completions it generates itself")]
    if config.is_preference:
        return (
            False,
            False,
            [
                (
                    "batches",
                    f"TRL's {config.objective.upper()} trainer pads each pair (no packing or padding-free in TRL 1.16)",
                )
            ],
        )
    if _explicit(config.packing) and config.packing:
        return True, True, [("batches", "packing set in the config")]
    if _explicit(config.padding_free):
        return False, bool(config.padding_free), [("batches", "padding_free set in the config")]
    if machine.device != "cuda":
        return False, False, [("batches", f"{machine.device}: padding-free measured 1.18x slower than padded batches")]
    if attn == "eager":
        return False, False, [("batches", "eager attention cannot keep packed examples apart")]
    return False, True, [("batches", "padding-free measured 2.2-2.7x faster than padded batches on an H200")]


def _sampler(config: RunConfig, machine: Machine, padding_free: bool, accumulation: int) -> tuple[str, str]:
    if config.objective == "grpo":
        return (
            "random",
            f"TRL's GRPO sampler: random prompts, each repeated num_generations = {config.num_generations} times",
        )
    if config.is_preference:
        return "random", "preference pairs in random order (the length-rebalancing samplers read SFT's input_ids)"
    if not _explicit(config.group_by_length):
        if padding_free:
            return "random", "padding-free batches have no padding to save"
        if accumulation * machine.world_size > 1:
            return "rebalance", "each step's examples as random order picks them, micro-batches of similar length"
        return "random", "one micro-batch per step: nothing to rebalance"
    return ("group", "set in the config") if config.group_by_length else ("random", "set in the config")


def _liger(config: RunConfig, machine: Machine) -> tuple[bool, str]:
    if _explicit(config.use_liger_kernel):
        if config.use_liger_kernel and not machine.liger:
            return False, "asked for, but liger-kernel is not installed or there is no CUDA GPU"
        return bool(config.use_liger_kernel), "set in the config"
    return False, "measured 1.8x slower at the 0.5B shape on an H200"


def cpu_threads(machine: Machine) -> tuple[int | None, str]:
    """Torch threads for CPU work on `machine` (None: torch's default), and why."""
    if machine.device != "cpu":
        return None, "the GPU does the work"
    if machine.cpu_count > 1 and machine.load_average >= machine.cpu_count / 2:
        why = (
            f"load average {machine.load_average:.1f} on {machine.cpu_count} cores: other work keeps them busy, "
            "where one thread is much faster and steadier (bench/README.md, CPU threads)"
        )
        return 1, why
    return None, f"load average {machine.load_average:.1f} on {machine.cpu_count} cores: the cores are free"


def _parallelism(config: RunConfig, machine: Machine, shape, plan: Plan) -> Plan:
    """The strategy over several processes: the launcher's when launched, else the config's, else
    (auto) ddp when a whole copy trains on one GPU within GC_HEADROOM (checkpointing allowed), else fsdp."""
    if machine.world_size <= 1:
        return replace(plan, reasons=plan.reasons + (("parallelism", "one process"),))
    if machine.strategy:
        strategy = machine.strategy
        why = "the accelerate config this run was launched with"
        if machine.sharded_loading and strategy in ("fsdp", "zero3"):
            why += "; weights are sharded as they load"
    elif config.strategy != "auto":
        strategy, why = config.strategy, "set in the config"
    elif machine.device != "cuda":
        strategy, why = "ddp", f"{machine.device}: memory is not the limit"
    else:
        checkpointed = replace(plan, strategy="ddp", gradient_checkpointing=config.gradient_checkpointing is not False)
        whole = _memory(shape, config, checkpointed) if shape is not None else None
        budget = GC_HEADROOM * machine.gpu_gb
        if whole is None:
            strategy, why = "ddp", "no memory estimate for this model: the usual data-parallel run"
        elif whole <= budget:
            strategy, why = "ddp", f"a whole copy, {whole:.1f} GB, trains on one GPU ({budget:.1f} GB)"
        else:
            strategy = "fsdp"
            why = f"a whole copy, {whole:.1f} GB, exceeds one GPU ({budget:.1f} GB): FSDP shards it"
    shard_at_load = strategy == "fsdp" and machine.device == "cpu"
    if shard_at_load:
        why += "; on CPU transformers shards the model as it loads (accelerate's FSDP needs GPUs)"
    return replace(plan, strategy=strategy, shard_at_load=shard_at_load, reasons=plan.reasons + (("parallelism", why),))


def planned_machine(config: RunConfig, machine: Machine) -> Machine:
    """`machine` as the config plans it: `num_gpus` of its GPU when it is one process (an estimate
    for a cluster run made on a workstation); a launched machine stays as launched."""
    if machine.world_size > 1 or config.num_gpus <= 1:
        return machine
    return machine.with_world_size(config.num_gpus)


def _memory(shape, config: RunConfig, plan: Plan) -> float | None:
    """The estimated peak in GB, None when the estimate refuses this config (e.g. LoRA targets that match
    no layer of the shape): the decisions that need it then take the memory-safe choice, and the plan's
    "memory estimate" reason says why (see make_plan)."""
    return _memory_and_why(shape, config, plan)[0]


def _memory_and_why(shape, config: RunConfig, plan: Plan) -> tuple[float | None, str]:
    try:
        return estimate_memory(shape, config, plan).total_gb, ""
    except FinetuneError as exc:  # ConfigError / ModelError: the estimate's own refusals
        return None, f"no estimate for this config ({_first_line(exc)})"


def _checkpointing(config: RunConfig, machine: Machine, shape, plan: Plan) -> tuple[bool, str]:
    if _explicit(config.gradient_checkpointing):
        return bool(config.gradient_checkpointing), "set in the config"
    if machine.device != "cuda":
        return False, f"{machine.device}: memory is not the limit"
    if shape is None:
        return True, "no memory estimate for this model: kept on (memory-safe)"
    without = _memory(shape, config, replace(plan, gradient_checkpointing=False))
    budget = GC_HEADROOM * machine.gpu_gb
    if without is None:
        return True, "no memory estimate for this model: kept on (memory-safe)"
    if machine.gpu_gb and without <= budget:
        return False, f"the estimate without it, {without:.1f} GB, fits in {budget:.1f} GB"
    return True, f"the estimate without it, {without:.1f} GB, exceeds {budget:.1f} GB"


def _micro_batch(config: RunConfig, machine: Machine, shape, plan: Plan, mean_tokens: float | None) -> Plan:
    """Merge the micro-batches of an optimizer step (same effective batch) while memory allows."""
    batch, accumulation = config.per_device_train_batch_size, config.gradient_accumulation_steps
    wanted = config.resize_micro_batch
    if _explicit(wanted) and not wanted:
        return replace(plan, reasons=plan.reasons + (("micro-batch", "set in the config"),))
    if not _explicit(wanted) and not (machine.device == "cuda" and plan.padding_free):
        why = "as set (merging micro-batches pays only with padding-free batches on a GPU)"
        return replace(plan, reasons=plan.reasons + (("micro-batch", why),))
    if accumulation == 1:
        return replace(plan, reasons=plan.reasons + (("micro-batch", "one micro-batch per step already"),))
    per_example = mean_tokens or config.max_length / 2
    total = batch * accumulation
    budget = GC_HEADROOM * machine.gpu_gb if machine.device == "cuda" else None
    best, why = plan, "as set: no larger micro-batch passes the token target and the memory check"
    for size in sorted(d for d in range(batch + 1, total + 1) if total % d == 0):
        if size * per_example > MICRO_BATCH_TOKENS:
            break
        candidate = replace(plan, per_device_train_batch_size=size, gradient_accumulation_steps=total // size)
        if budget is not None:
            peak = _memory(shape, config, candidate) if shape is not None else None
            if peak is None or peak > budget:
                break
        best = candidate
        why = (
            f"{size} examples of ~{per_example:.0f} tokens per forward pass (target {MICRO_BATCH_TOKENS}), "
            f"same effective batch {total}; unmeasured on a GPU: bench/gpu_check.sh"
        )
    return replace(best, reasons=plan.reasons + (("micro-batch", why),))


def objective_reason(config: RunConfig) -> str:
    """What each optimizer step computes for the objective, and where the reference comes from."""
    if config.objective == "sft":
        return "one forward pass per example"
    if config.objective == "grpo":
        return grpo_objective_reason(config)
    if config.objective == "orpo":
        return f"chosen and rejected in one policy forward pass, no reference model (beta {config.beta})" + (
            _sft_first_hint(config)
        )
    if config.method == "full":
        reference = "reference log-probabilities computed once before training (no second copy of the weights)"
    elif config.start_from_run.strip():
        reference = f"reference = the adapter of {config.start_from_run}, a frozen copy of the adapter only"
    else:
        reference = "reference = the base with the adapter disabled (no second copy of the weights)"
    passes = (
        "chosen and rejected in one policy forward pass" if config.objective == "dpo" else "completions and KL pairs"
    )
    extra = f", {config.dpo_loss_type} loss" if config.objective == "dpo" else ""
    return f"{passes} plus a no-grad reference pass; {reference} (beta {config.beta}{extra})" + _sft_first_hint(config)


def _sft_first_hint(config: RunConfig) -> str:
    """Preference tuning of a base that was never instruction-tuned: SFT usually comes first."""
    if not config.is_preference or config.start_from_run.strip() or says_instruction_tuned(config.model_name_or_path):
        return ""
    return (
        f". Note: {config.model_name_or_path} does not look instruction-tuned, and SFT usually comes first: a base "
        f"model has no answers of its own worth preferring between; train an SFT run, then continue it with "
        "start_from_run"
    )


def make_plan(
    config: RunConfig,
    machine: Machine,
    *,
    model: Any = None,
    attn_implementation: str | None = None,
    mean_tokens: float | None = None,
) -> Plan:
    """Settle every `auto` knob of `config` for `machine`.

    `model`: a name, folder or ModelShape for the memory estimate (default config.model_name_or_path);
    `attn_implementation`: the kernel a loaded model really uses; `mean_tokens`: the data's mean
    tokens per example, when known, for the micro-batch size."""
    bf16, fp16, precision_why = _precision(config, machine)
    attn, attn_why = _attention(config, machine, attn_implementation)
    packing, padding_free, batch_reasons = _batches(config, machine, attn)
    liger, liger_why = _liger(config, machine)
    threads, threads_why = cpu_threads(machine)
    reasons = [
        ("objective", objective_reason(config)),
        ("device", "detected" if machine.device != "cpu" else "no CUDA or MPS GPU"),
        ("precision", precision_why),
        ("attention", attn_why),
        *batch_reasons,
        ("kernels", liger_why),
        ("threads", threads_why),
        (
            "loss",
            "TRL's fused LM head scores only the positions that carry loss"
            if config.objective != "grpo"
            else "TRL's default loss_type dapo: each token's clipped advantage, normalized over the step's tokens",
        ),
    ]
    plan = Plan(
        machine=machine,
        device=machine.device,
        bf16=bf16,
        fp16=fp16,
        attn_implementation=attn,
        packing=packing,
        padding_free=padding_free,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        gradient_checkpointing=False,
        use_liger_kernel=liger,
        cpu_threads=threads,
        reasons=tuple(reasons),
        objective=config.objective,
    )
    shape, shape_why = _shape(model, config)
    plan = _parallelism(config, machine, shape, plan)
    checkpointing, checkpointing_why = _checkpointing(config, machine, shape, plan)
    plan = replace(
        plan,
        gradient_checkpointing=checkpointing,
        reasons=plan.reasons + (("gradient checkpointing", checkpointing_why),),
    )
    plan = _micro_batch(config, machine, shape, plan, mean_tokens)
    # the sampler splits an optimizer step into the micro-batches the plan ended with
    sampler, sampler_why = _sampler(config, machine, plan.padding_free, plan.gradient_accumulation_steps)
    plan = replace(plan, sampler=sampler, reasons=plan.reasons + (("sampler", sampler_why),))
    if config.objective == "grpo":
        plan = plan_generation(config, plan)
    memory, memory_why = _memory_and_why(shape, config, plan) if shape is not None else (None, shape_why)
    if memory is None:  # said, never guessed silently: the decisions above took their memory-safe choice
        memory_why += "; the decisions that need a memory figure took their memory-safe choice"
    else:
        memory_why = f"from the model's shape ({shape.name}) and this plan"
    return replace(plan, memory_gb=memory, reasons=plan.reasons + (("memory estimate", memory_why),))


def plan_for_inference(config: RunConfig, machine: Machine) -> Plan:
    """The plan's device, precision and attention for loading a model to generate or merge."""
    bf16, fp16, why = _precision(config, machine)
    attn, attn_why = _attention(config, machine, None)
    reasons = (("precision", why), ("attention", attn_why))
    return Plan(machine=machine, device=machine.device, bf16=bf16, fp16=fp16, attn_implementation=attn, reasons=reasons)


def estimate(
    config: RunConfig,
    machine: Machine,
    *,
    model: Any = None,
    seq_len: int | None = None,
    loss: str = "fused",
    mean_tokens: float | None = None,
):
    """(plan, memory estimate) of `config` on `machine`: the estimate of exactly what will run, per GPU
    for the config's `num_gpus` and strategy (see planned_machine). Raises ConfigError / ModelError when the model's shape cannot be read."""

    shape = model if isinstance(model, ModelShape) else load_shape(model or config.model_name_or_path)
    plan = make_plan(config.check(), planned_machine(config, machine), model=shape, mean_tokens=mean_tokens)
    return plan, estimate_memory(shape, config, plan, seq_len=seq_len, loss=loss)

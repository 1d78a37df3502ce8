"""What a run will compute, from the data's real token lengths and the plan's batching: optimizer steps,
micro-batches, the tokens trained and the positions computed (with padding), evaluations and checkpoints.

The lengths are the token-length audit of the data (finetune/data/stats.py: the chat template applied,
as the trainer tokenizes; a preference pair counts prompt + its longer answer), truncated at max_length
as TRL truncates. Batches are drawn the way the plan says: bfd packing into max_length blocks, padding-free
micro-batches (no padding), or micro-batches padded to their longest example with the random,
length-rebalancing or length-grouped sampler, simulated with the run's seed (the trainer's own order
differs; the padding it leads to is the same on average). The step count follows transformers'
Trainer: ceil(micro-batches per epoch / accumulation) per epoch, epochs rounded up to whole steps.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from finetune.config import RunConfig
from finetune.plan.throughput import objective_cost

SIMULATED_EPOCHS = 3  # distinct shuffles simulated; longer runs cycle them
MEGABATCH = 50  # transformers' LengthGroupedSampler: sorted groups of 50 micro-batches


@dataclass
class Totals:
    """Sums over micro-batches: rows, real tokens (and tokens x context), computed positions (and x context)."""

    micro_batches: int = 0
    rows: int = 0
    real: float = 0.0
    real_ctx: float = 0.0
    computed: float = 0.0
    computed_ctx: float = 0.0

    def add(self, lengths: list[int], padded: bool, sequences: int) -> None:
        self.micro_batches += 1
        self.rows += len(lengths)
        self.real += sequences * sum(lengths)
        self.real_ctx += sequences * sum(n * n for n in lengths)
        if padded:
            longest = max(lengths)
            self.computed += sequences * len(lengths) * longest
            self.computed_ctx += sequences * len(lengths) * longest * longest
        else:
            self.computed += sequences * sum(lengths)
            self.computed_ctx += sequences * sum(n * n for n in lengths)


@dataclass
class Workload:
    steps: int
    epochs: float
    examples: int  # training examples per epoch (packed blocks when packing)
    train: Totals  # per device, summed over the whole run
    eval_runs: int
    eval_per_run: Totals  # one evaluation, per device
    saves: int
    devices: int
    notes: list[str]

    @property
    def tokens(self) -> float:
        """Real tokens trained, on all devices together."""
        return self.train.real * self.devices

    @property
    def padding_share(self) -> float:
        return 1 - self.train.real / self.train.computed if self.train.computed else 0.0


def _pack(lengths: list[int], block: int) -> int:
    """How many blocks of `block` tokens best-fit decreasing (TRL's bfd) packs `lengths` into."""
    import bisect

    rooms: list[int] = []  # room left in each open block, sorted
    for n in sorted(lengths, reverse=True):
        at = bisect.bisect_left(rooms, n)  # the fullest block that still takes n
        room = block if at == len(rooms) else rooms.pop(at)
        bisect.insort(rooms, room - n)
    return len(rooms)


def _micro_batches(lengths: list[int], size: int, sampler: str, step_rows: int, rng: random.Random) -> list[list]:
    """One epoch of micro-batches (lists of lengths) on one device, in the sampler's grouping."""
    order = list(lengths)
    rng.shuffle(order)
    if sampler == "rebalance":  # each optimizer step's rows, sorted, split into micro-batches
        groups = [sorted(order[i : i + step_rows]) for i in range(0, len(order), step_rows)]
        order = [n for group in groups for n in group]
    elif sampler == "group":
        span = size * MEGABATCH
        order = [n for i in range(0, len(order), span) for n in sorted(order[i : i + span], reverse=True)]
    return [order[i : i + size] for i in range(0, len(order), size)]


def _interval(value: float, steps: int) -> int:
    """A logging/eval/save interval as transformers reads it: below 1 a fraction of the steps, rounded up."""
    if value <= 0:
        return 0
    return max(1, math.ceil(value * steps)) if value < 1 else int(value)


def plan_workload(
    lengths: list[int],
    eval_lengths: list[int],
    config: RunConfig,
    plan,
    *,
    kto_pairs: bool = False,
) -> Workload:
    """The run's workload on one device of `plan` (several devices split each epoch between them).
    `kto_pairs`: KTO on chosen/rejected pairs, which TRL trains as two labelled completions each."""

    notes: list[str] = []
    cap = config.max_length
    train = [min(max(1, n), cap) for n in lengths]
    truncated = sum(1 for n in lengths if n > cap)
    if truncated:
        notes.append(f"{truncated} of {len(lengths)} examples truncated at max_length {cap}")
    sequences = objective_cost(config).sequences
    if kto_pairs:
        train = train + train  # chosen and rejected become two completions (counted at the longer one)
    if config.objective == "grpo":  # each prompt is answered num_generations times; batches count completions
        grown = [min(n + config.max_completion_length, cap) for n in train]
        train = [n for n in grown for _ in range(config.num_generations)]
        notes.append(
            f"GRPO: {config.num_generations} completions of up to {config.max_completion_length} tokens per prompt"
        )
    padded = not (plan.padding_free or plan.packing)
    devices = max(1, plan.world_size)
    size, accum = plan.per_device_train_batch_size, plan.gradient_accumulation_steps
    rows = len(train)
    if plan.packing:  # a micro-batch holds `size` blocks; each example still attends only to itself
        rows = _pack(train, cap)
        notes.append(f"bfd packing: {len(train)} examples in {rows} blocks of up to {cap} tokens")
    per_device = math.ceil(rows / devices) if rows else 0
    micro_per_epoch = math.ceil(per_device / size) if per_device else 0
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / accum))
    if config.max_steps > 0:
        steps = config.max_steps
    else:
        steps = math.ceil(config.num_train_epochs * steps_per_epoch)
    epochs = steps / steps_per_epoch
    if plan.packing and micro_per_epoch:
        size = math.ceil(math.ceil(len(train) / devices) / micro_per_epoch)  # examples per packed micro-batch
    totals = Totals()
    rng = random.Random(config.seed)
    shard = train[::devices] if devices > 1 else train  # one device's share of each epoch
    epochs_seen: list[list[list[int]]] = []
    done = epoch_index = 0
    while done < steps and shard:
        slot = epoch_index % SIMULATED_EPOCHS
        if slot == len(epochs_seen):
            epochs_seen.append(_micro_batches(shard, size, plan.sampler if padded else "random", size * accum, rng))
        epoch = epochs_seen[slot]
        for start in range(0, len(epoch), accum):
            for micro in epoch[start : start + accum]:
                totals.add(micro, padded, sequences)
            done += 1
            if done >= steps:
                break
        epoch_index += 1
    evaluations = Totals()
    eval_runs = 0
    every = _interval(config.eval_steps, steps)
    if eval_lengths and every:
        eval_runs = steps // every
        held = [min(max(1, n), cap) for n in eval_lengths]
        held = held[::devices] if devices > 1 else held
        batch = config.per_device_eval_batch_size
        for i in range(0, len(held), batch):
            evaluations.add(held[i : i + batch], padded, sequences)
    wants_best = eval_runs and (config.load_best_model_at_end or config.early_stopping_patience > 0)
    save_every = _interval(config.eval_steps if wants_best else config.save_steps, steps)
    saves = steps // save_every if save_every else 0
    return Workload(steps, epochs, rows, totals, eval_runs, evaluations, saves, devices, notes)

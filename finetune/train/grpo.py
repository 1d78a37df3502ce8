"""GRPO (objective grpo): a RunConfig and its Plan -> TRL's GRPOConfig and GRPOTrainer. No decisions here.

What each knob becomes (TRL 1.16): `num_generations`, `max_completion_length`, `temperature` and `kl_coef`
(TRL's `beta`) as they are; the reward functions of finetune.train.rewards with their weights
(`reward_weights`); per_device_train_batch_size x gradient_accumulation_steps counts completions, so
an optimizer step trains on that many / num_generations prompts, each generated once per step
(steps_per_generation = accumulation, TRL's default). Generation is transformers' `generate` (vLLM is
not installable with our pins: docs in README). The reference of the KL term is never a second copy of
the weights: the base with the adapter disabled, or TRL's frozen "ref" copy of a start run's adapter.
Prompts longer than max_length - max_completion_length are left out before training, and logged.
"""

from __future__ import annotations

import warnings
from typing import Any

from transformers import TrainerCallback

from finetune.config import RunConfig
from finetune.data.prompts import SOURCE_ROW, prompt_lengths
from finetune.errors import DataError
from finetune.plan.planner import Plan
from finetune.reward_spec import parse_reward_functions
from finetune.train.completions import CompletionLog
from finetune.train.distributed import is_main_process
from finetune.train.rewards import build_reward_functions
from finetune.train.sft import build_lora_config, training_kwargs


def build_grpo_config(config: RunConfig, plan: Plan, output_dir: str, *, has_eval: bool, disable_tqdm: bool = True):
    """GRPOConfig for `config` as `plan` settles it."""
    from trl import GRPOConfig

    kwargs: dict[str, Any] = training_kwargs(config, plan, output_dir, has_eval=has_eval, disable_tqdm=disable_tqdm)
    for name in ("max_length", "dataset_num_proc"):  # GRPO has no such knob: prompts are filtered by the builder
        kwargs.pop(name)
    kwargs["gradient_checkpointing"] = plan.gradient_checkpointing  # TRL's GRPOConfig defaults it to True
    kwargs["per_device_eval_batch_size"] = plan.eval_batch_size or config.per_device_eval_batch_size
    weights = [weight for _, weight in parse_reward_functions(config.reward_functions)[0]]
    return GRPOConfig(
        **kwargs,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        beta=config.kl_coef,
        reward_weights=weights,
        log_completions=False,  # the run folder gets its own samples (finetune.train.completions)
    )


def fitting_prompts(rows: list[dict], tokenizer, config: RunConfig) -> tuple[list[dict], list[str]]:
    """The rows whose prompt leaves room for max_completion_length within max_length, and a note per row left out."""

    room = config.max_length - config.max_completion_length
    lengths = prompt_lengths(rows, tokenizer)
    kept = [row for row, n in zip(rows, lengths) if n <= room]
    notes = [
        f"row {row.get(SOURCE_ROW)}: its prompt has {n} tokens, more than max_length - max_completion_length = {room}"
        for row, n in zip(rows, lengths)
        if n > room
    ]
    return kept, notes


class SamplesCallback(TrainerCallback):
    """Tells the completion log when completions are sampled for an evaluation (those are not saved)."""

    def __init__(self, log: CompletionLog):
        self.log = log

    def on_step_end(self, args, state, control, **kwargs):
        self.log.evaluating = bool(control.should_evaluate)

    def on_evaluate(self, args, state, control, **kwargs):
        self.log.evaluating = False


def build_grpo_trainer(
    config: RunConfig,
    plan: Plan,
    *,
    model,
    tokenizer,
    train_rows: list[dict],
    eval_rows: list[dict],
    output_dir: str,
    callbacks: list | None = None,
    args=None,
    run_path=None,
    log=None,
):
    """The GRPOTrainer of a run. `model` is the base, or a trainable PeftModel when the run starts from another
    run's adapter. `run_path`: where sampled completions are saved (None: not saved). `log` gets one-line notes."""
    from datasets import Dataset
    from peft import PeftModel
    from trl import GRPOTrainer

    note = log or (lambda _line: None)
    args = args or build_grpo_config(config, plan, output_dir, has_eval=bool(eval_rows))
    train_rows, dropped = fitting_prompts(train_rows, tokenizer, config)
    eval_rows, dropped_eval = fitting_prompts(eval_rows, tokenizer, config) if eval_rows else ([], [])
    for line in (dropped + dropped_eval)[:50]:
        note(f"left out {line}")
    if dropped or dropped_eval:
        note(
            f"left out {len(dropped)} training and {len(dropped_eval)} validation prompts that leave no room to answer"
        )
    if not train_rows:
        raise DataError(
            f"every training prompt is longer than max_length - max_completion_length = "
            f"{config.max_length - config.max_completion_length} tokens: raise max_length or lower max_completion_length"
        )
    functions, weights = build_reward_functions(config)
    samples = CompletionLog(
        run_path if is_main_process() else None, functions, weights, config.sample_completions_steps
    )
    peft_config = None if isinstance(model, PeftModel) else build_lora_config(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        return GRPOTrainer(
            model=model,
            reward_funcs=samples.wrapped,
            args=args,
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(eval_rows) if eval_rows and args.eval_strategy != "no" else None,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[*(callbacks or []), SamplesCallback(samples)],
        )

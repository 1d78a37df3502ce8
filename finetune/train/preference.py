"""Builders for the preference objectives: a RunConfig and its Plan -> TRL's DPOConfig/DPOTrainer,
ORPOConfig/ORPOTrainer (trl.experimental in TRL 1.16) or KTOConfig/KTOTrainer. No decisions here.

The reference model never costs a second copy of the weights:
- a fresh LoRA/DoRA adapter: TRL computes the reference with the adapter disabled (the base);
- a run started from another run's adapter (`start_from_run`, e.g. DPO after SFT): TRL adds a frozen
  "ref" copy of that adapter (adapter weights only) and computes the reference with it;
- full fine-tuning: the reference log-probabilities are computed once, before training, by the model
  itself (`precompute_ref_log_probs`), instead of TRL loading a second copy;
- ORPO has no reference model.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from finetune.config import RunConfig
from finetune.errors import ConfigError, FinetuneError
from finetune.names import split_checkpoint_ref
from finetune.plan.planner import Plan
from finetune.runs import open_run
from finetune.runs.records import folder_file_problems, read_adapter_settings
from finetune.train.sft import build_lora_config, training_kwargs


def build_preference_config(
    config: RunConfig, plan: Plan, output_dir: str, *, has_eval: bool, disable_tqdm: bool = True
):
    """DPOConfig, ORPOConfig or KTOConfig for `config.objective`, as `plan` settles it."""
    kwargs: dict[str, Any] = training_kwargs(config, plan, output_dir, has_eval=has_eval, disable_tqdm=disable_tqdm)
    kwargs["gradient_checkpointing"] = plan.gradient_checkpointing  # TRL's preference configs default it to True
    if config.objective == "dpo":
        from trl import DPOConfig

        return DPOConfig(
            **kwargs,
            beta=config.beta,
            loss_type=config.dpo_loss_type.split("+"),  # sigmoid+sft: TRL sums the two losses
            precompute_ref_log_probs=config.method == "full",
        )
    if config.objective == "kto":
        from trl import KTOConfig

        # KTO's KL estimate pairs each completion with its neighbours in a fixed-order batch
        kwargs["train_sampling_strategy"] = "sequential"
        return KTOConfig(**kwargs, beta=config.beta, precompute_ref_log_probs=config.method == "full")
    if config.objective == "orpo":
        kwargs.pop("model_init_kwargs")
        with warnings.catch_warnings():  # experimental in TRL 1.16: it warns on import/use
            warnings.simplefilter("ignore")
            from trl.experimental.orpo import ORPOConfig

            return ORPOConfig(**kwargs, beta=config.beta)
    raise ValueError(f"not a preference objective: {config.objective}")


def build_preference_trainer(
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
):
    """The TRL trainer of a preference run. `model` is the base, or a trainable PeftModel when the run
    starts from another run's adapter (then no new adapter is made). `args`: the run's preference
    config when it was built already (before the model, see TrainingJob.setup)."""
    from datasets import Dataset
    from peft import PeftModel

    args = args or build_preference_config(config, plan, output_dir, has_eval=bool(eval_rows))
    peft_config = None if isinstance(model, PeftModel) else build_lora_config(config)
    if config.objective == "dpo":
        from trl import DPOTrainer as Trainer
    elif config.objective == "kto":
        from trl import KTOTrainer as Trainer
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from trl.experimental.orpo import ORPOTrainer as Trainer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        return Trainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )


def load_start_adapter(model, adapter_dir, plan: Plan):
    """The base `model` with a finished run's adapter attached, trainable, to continue from."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
    if plan.gradient_checkpointing:
        peft_model.enable_input_require_grads()
    return peft_model


def start_adapter_settings(config: RunConfig, workspace: str | Path | None) -> dict[str, Any]:
    """The LoRA settings of `config.start_from_run`'s adapter (rank, alpha, targets, LoRA or DoRA): a run that
    starts from it trains that adapter, whatever the config's own lora_* say. ConfigError as start_adapter_dir."""

    return read_adapter_settings(start_adapter_dir(config, workspace))


def start_adapter_dir(config: RunConfig, workspace: str | Path | None) -> Path:
    """The adapter folder of `config.start_from_run`, checked: a finished LoRA/DoRA run on the same base model,
    or one of its checkpoints (`run@step`, or the checkpoint folder: finetune.names.split_checkpoint_ref)."""

    try:
        name, step = split_checkpoint_ref(config.start_from_run)
        start = open_run(name, workspace)
    except ValueError as exc:
        raise ConfigError([f"start_from_run: {exc}"]) from None
    except FinetuneError as exc:
        raise ConfigError([f"start_from_run: {exc}"]) from None
    folder = start.adapter_dir if step is None else start.checkpoints_dir / f"checkpoint-{step}"
    if step is not None and not folder.is_dir():
        kept = ", ".join(p.name.split("-")[-1] for p in start.checkpoints()) or "none"
        raise ConfigError([f"start_from_run: the run '{start.name}' has no checkpoint at step {step} (kept: {kept})"])
    if not (folder / "adapter_config.json").is_file():
        what = "adapter/adapter_config.json" if step is None else f"checkpoints/checkpoint-{step}/adapter_config.json"
        raise ConfigError([f"start_from_run: the run '{start.name}' has no saved LoRA/DoRA adapter ({what})"])
    damaged = folder_file_problems(folder, start.path)
    if damaged:
        raise ConfigError([f"start_from_run: the run '{start.name}' has a damaged adapter: {damaged[0]}"])
    base = start.config().model_name_or_path
    if base.strip().lower() != config.model_name_or_path.strip().lower():
        raise ConfigError(
            [
                f"start_from_run: the run '{start.name}' trained an adapter for {base}, but this run's model is "
                f"{config.model_name_or_path}; use the same base model"
            ]
        )
    return folder

"""The model card (README.md with Hub front matter) written next to an adapter or a merged model:
base model, training settings, data used and final metrics, plus how to load it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from finetune.demo import is_demo
from finetune.names import is_hub_id, is_local_path
from finetune.runs import Run, open_run
from finetune.runs.records import read_adapter_settings

TAG = "finetune-studio"


def _is_hub_id(name: str) -> bool:
    return not is_demo(name) and is_hub_id(name) and not is_local_path(name)


def _method_tags(cfg) -> list[str]:
    if cfg.method == "full":
        return ["full-finetune"]
    tags = ["dora"] if cfg.method == "dora" else ["lora"]
    if cfg.quantization == "4bit":
        tags.insert(0, "qlora")
    return tags


TRAINERS = {"sft": "SFTTrainer", "dpo": "DPOTrainer", "orpo": "ORPOTrainer", "kto": "KTOTrainer", "grpo": "GRPOTrainer"}


def _config_rows(cfg) -> list[tuple[str, Any]]:
    rows = [("method", cfg.method), ("quantization", cfg.quantization)]
    if cfg.objective == "grpo":  # GRPO: the reward functions and the sampling, not the preference beta
        rows += [("objective", "grpo"), ("reward_functions", cfg.reward_functions)]
        rows += [("num_generations", cfg.num_generations), ("max_completion_length", cfg.max_completion_length)]
        rows += [("temperature", cfg.temperature), ("kl_coef", cfg.kl_coef)]
        rows += [("started from the adapter of", cfg.start_from_run)] if cfg.start_from_run else []
    elif cfg.objective != "sft":
        rows += [("objective", cfg.objective), ("beta", cfg.beta)]
        rows += [("dpo_loss_type", cfg.dpo_loss_type)] if cfg.objective == "dpo" else []
        rows += [("started from the adapter of", cfg.start_from_run)] if cfg.start_from_run else []
    if cfg.method != "full":
        rows += [("lora_r", cfg.lora_r), ("lora_alpha", cfg.lora_alpha), ("lora_dropout", cfg.lora_dropout)]
        rows += [("lora_target_modules", cfg.lora_target_modules)]
    effective = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    rows += [
        ("learning_rate", cfg.learning_rate),
        ("lr_scheduler_type", cfg.lr_scheduler_type),
        (
            "max_steps" if cfg.max_steps > 0 else "num_train_epochs",
            cfg.max_steps if cfg.max_steps > 0 else cfg.num_train_epochs,
        ),
        (
            "batch size (per device x accumulation)",
            f"{cfg.per_device_train_batch_size} x {cfg.gradient_accumulation_steps} = {effective}",
        ),
        ("max_length", cfg.max_length),
        ("packing", cfg.packing),
        ("loss on prompt tokens", cfg.train_on_prompt),
        ("optim", cfg.optim),
        ("weight_decay", cfg.weight_decay),
        ("warmup", cfg.warmup_steps if cfg.warmup_steps > 0 else f"{cfg.warmup_ratio:g} of steps"),
        ("seed", cfg.seed),
    ]
    return rows


def _public_value(value: Any) -> Any:
    """Local file paths become file names: a published card must not reveal a user's folders."""
    if isinstance(value, str) and (value.startswith(("/", "~")) or re.match(r"[A-Za-z]:[\\/]", value)):
        return Path(value).name
    return value


def _data_rows(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    """Scalar facts of data_summary.json (one level of nesting flattened); lists are skipped."""
    rows: list[tuple[str, Any]] = []
    for key, value in summary.items():
        if isinstance(value, dict):
            rows += [(f"{key}.{k}", v) for k, v in value.items() if isinstance(v, (str, int, float, bool))]
        elif isinstance(value, (str, int, float, bool)):
            rows.append((key, value))
    return [(k, _public_value(v)) for k, v in rows][:30]


def _final_metrics(run: Run) -> list[tuple[str, Any]]:
    records = run.metrics()
    rows = []
    for key in ("loss", "eval_loss", "rewards/accuracies", "eval_rewards/accuracies", "eval_rewards/margins"):
        values = [(m.get("step"), m[key]) for m in records if isinstance(m.get(key), (int, float))]
        if values:
            step, value = values[-1]
            rows.append((f"final {key}", f"{value:.4f} (step {step})"))
    status = run.status()
    rows.append(("state", status.get("state", "unknown")))
    if status.get("step"):
        rows.append(("steps", status.get("step")))
    return rows


def _table(rows: list[tuple[str, Any]], header: str = "setting") -> str:
    lines = [f"| {header} | value |", "|---|---|"]
    lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows]
    return "\n".join(lines)


def model_card(run: Run | str | Path, *, merged: bool = False) -> str:
    """README.md for the adapter (`library_name: peft`) or the merged model (`transformers`).

    `base_model` is written only for Hub ids: the Hub rejects metadata naming a local
    folder, and the built-in demo model is not on the Hub.
    """
    run = open_run(run)
    cfg = run.config()
    if cfg.method != "full":  # the adapter as saved: a run started from another run trained that one's rank
        cfg = cfg.replace(**read_adapter_settings(run.adapter_dir))
    base = cfg.model_name_or_path
    adapter = cfg.method != "full" and not merged
    meta: dict[str, Any] = {}
    if _is_hub_id(base):
        meta["base_model"] = base
    meta["library_name"] = "peft" if adapter else "transformers"
    meta["tags"] = [TAG, *_method_tags(cfg), "trl", cfg.objective] + (["merged"] if merged else [])
    meta["pipeline_tag"] = "text-generation"
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    shown_base = (
        base
        if _is_hub_id(base)
        else ("the built-in demo model" if is_demo(base) else f"a local model ({_public_value(base)})")
    )
    what = {
        "full": "Full fine-tune",
        "dora": "DoRA adapter",
        "lora": "QLoRA adapter" if cfg.quantization == "4bit" else "LoRA adapter",
    }
    kind = what[cfg.method] + (" merged into the base weights" if merged and cfg.method != "full" else "")
    parts = [
        f"---\n{front}---\n",
        f"# {run.name}\n",
        f"{kind} of {'`' + base + '`' if _is_hub_id(base) else shown_base}, trained with {TAG} "
        f"(TRL {TRAINERS[cfg.objective]} + PEFT).\n",
        "## Training configuration\n",
        _table(_config_rows(cfg)) + "\n",
    ]
    data = _data_rows(run.data_summary())
    if data:
        parts += ["## Data\n", _table(data, "data") + "\n"]
    parts += ["## Results\n", _table(_final_metrics(run), "metric") + "\n"]
    if merged and cfg.quantization != "none" and cfg.method != "full":
        parts.append(
            f"Note: the adapter was trained against the {cfg.quantization} base and merged into the unquantized base, "
            "so outputs can differ slightly from the quantized base + adapter.\n"
        )
    parts += _usage(base if _is_hub_id(base) else "<base model>", adapter)
    return "\n".join(parts)


def _usage(base: str, adapter: bool) -> list[str]:
    if adapter:
        code = (
            "```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'base = AutoModelForCausalLM.from_pretrained("{base}", dtype="auto", device_map="auto")\n'
            'model = PeftModel.from_pretrained(base, "<this repo or folder>")\n'
            'tokenizer = AutoTokenizer.from_pretrained("<this repo or folder>")\n'
            "model = model.merge_and_unload()  # optional: a plain transformers model\n```\n"
        )
    else:
        code = (
            "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            'model = AutoModelForCausalLM.from_pretrained("<this repo or folder>", dtype="auto", device_map="auto")\n'
            'tokenizer = AutoTokenizer.from_pretrained("<this repo or folder>")\n```\n'
        )
    chat = (
        '```python\nmessages = [{"role": "user", "content": "Hello!"}]\n'
        "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, "
        'return_tensors="pt").to(model.device)\n'
        "out = model.generate(**inputs, max_new_tokens=128)\n"
        'print(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))\n```\n'
    )
    return ["## Usage\n", code, chat]

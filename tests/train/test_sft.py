"""Builders: every RunConfig knob lands in the right library object; the fast path's `auto` decisions."""

from __future__ import annotations

import pytest
import torch

from finetune.config import RunConfig
from finetune.errors import ConfigError
from finetune.models import build_bnb_config
from finetune.plan.hardware import Machine
from finetune.plan.planner import make_plan
from finetune.train.sft import (
    build_collator,
    build_lora_config,
    build_sft_config,
    lora_target_modules,
)

CPU = Machine.virtual("cpu")


def cpu_plan(config: RunConfig | None = None, **changes):
    """The plan of `config` on a CPU machine, with `changes` to the plan itself."""
    from dataclasses import replace

    return replace(make_plan(config or RunConfig(), CPU), **changes)


# --- bitsandbytes / LoRA ---------------------------------------------------------------------


def test_bnb_config_per_quantization():
    four = build_bnb_config(RunConfig(quantization="4bit"), cpu_plan())
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "nf4" and four.bnb_4bit_use_double_quant
    assert four.bnb_4bit_compute_dtype == torch.float32  # no GPU: fp32 compute
    eight = build_bnb_config(RunConfig(quantization="8bit"), cpu_plan())
    assert eight.load_in_8bit and not eight.load_in_4bit
    assert build_bnb_config(RunConfig(quantization="none"), cpu_plan()) is None
    assert build_bnb_config(RunConfig(quantization="none"), cpu_plan(), quantization="4bit").load_in_4bit
    gpu = make_plan(RunConfig(), Machine.virtual("cuda", 80.0), model="demo")
    assert build_bnb_config(RunConfig(), gpu).bnb_4bit_compute_dtype == torch.bfloat16


def test_lora_config_knobs():
    cfg = RunConfig(lora_r=8, lora_alpha=24, lora_dropout=0.1, lora_target_modules="q_proj, v_proj")
    lora = build_lora_config(cfg)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (8, 24, 0.1)
    assert set(lora.target_modules) == {"q_proj", "v_proj"} and lora.task_type == "CAUSAL_LM"
    assert not lora.use_dora and lora.bias == "none"
    assert build_lora_config(RunConfig(method="dora")).use_dora
    assert build_lora_config(RunConfig(method="full", quantization="none")) is None
    assert lora_target_modules(RunConfig(lora_target_modules="attention")) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert lora_target_modules(RunConfig()) == "all-linear"


# --- SFTConfig ---------------------------------------------------------------------------------


def test_sft_config_carries_every_training_knob(tmp_path):
    cfg = RunConfig(
        learning_rate=1e-4,
        num_train_epochs=2.0,
        max_steps=50,
        per_device_train_batch_size=3,
        per_device_eval_batch_size=5,
        gradient_accumulation_steps=2,
        warmup_steps=7,
        lr_scheduler_type="linear",
        weight_decay=0.05,
        max_grad_norm=0.5,
        optim="adafactor",
        max_length=300,
        logging_steps=3,
        eval_steps=10,
        save_steps=20,
        save_total_limit=2,
        seed=7,
        report_to="tensorboard",
    )
    args = build_sft_config(cfg, cpu_plan(cfg), str(tmp_path), has_eval=True, loss_mode="assistant_only")
    assert args.learning_rate == 1e-4 and args.num_train_epochs == 2.0 and args.max_steps == 50
    assert args.per_device_train_batch_size == 3 and args.per_device_eval_batch_size == 5
    assert args.gradient_accumulation_steps == 2 and args.warmup_steps == 7
    assert args.lr_scheduler_type.value == "linear" and args.weight_decay == 0.05 and args.max_grad_norm == 0.5
    assert args.optim.value == "adafactor" and args.max_length == 300 and args.logging_steps == 3
    assert args.eval_strategy.value == "steps" and args.eval_steps == 10 and args.save_steps == 20
    assert args.save_total_limit == 2 and args.seed == 7 and args.data_seed == 7
    assert args.report_to == ["tensorboard"] and args.output_dir == str(tmp_path)
    assert args.assistant_only_loss and not args.completion_only_loss
    assert not args.bf16 and not args.fp16 and args.use_cpu  # CPU: fp32
    assert args.loss_type == "nll"  # TRL 1.16's fused, chunked loss ("chunked_nll" is a deprecated alias)


def test_sft_config_warmup_ratio_eval_off_and_best_model(tmp_path):
    cfg = RunConfig(warmup_ratio=0.1, eval_steps=0, save_steps=0.25, report_to="none")
    args = build_sft_config(cfg, cpu_plan(cfg), str(tmp_path), has_eval=True, loss_mode="completion_only")
    assert args.warmup_steps == 0.1 and args.eval_strategy.value == "no" and args.report_to == []
    assert args.completion_only_loss and not args.assistant_only_loss
    best = RunConfig(eval_steps=5, load_best_model_at_end=True)
    args = build_sft_config(best, cpu_plan(best), str(tmp_path), has_eval=True, loss_mode="full_sequence")
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss" and args.save_steps == 5
    assert not args.completion_only_loss and not args.assistant_only_loss
    no_eval = build_sft_config(best, cpu_plan(best), str(tmp_path), has_eval=False, loss_mode="full_sequence")
    assert no_eval.eval_strategy.value == "no" and not no_eval.load_best_model_at_end


def test_sft_config_follows_the_plan(tmp_path):
    plan = cpu_plan(packing=True, padding_free=True, sampler="rebalance", gradient_checkpointing=True)
    args = build_sft_config(RunConfig(), plan, str(tmp_path), has_eval=False, loss_mode="assistant_only")
    assert args.packing and args.padding_free and args.packing_strategy == "bfd"
    assert args.train_sampling_strategy == "batch_rebalance"
    assert args.activation_checkpointing and args.gradient_checkpointing
    assert args.activation_checkpointing_kwargs == {"use_reentrant": False}
    plain = build_sft_config(RunConfig(), cpu_plan(sampler="random"), str(tmp_path), has_eval=False, loss_mode="x")
    assert not plain.packing and not plain.padding_free and plain.train_sampling_strategy == "random"
    assert not plain.activation_checkpointing and plain.pad_to_multiple_of is None  # padded to the longest only
    resized = cpu_plan(per_device_train_batch_size=16, gradient_accumulation_steps=1, padding_free=True)
    args = build_sft_config(RunConfig(), resized, str(tmp_path), has_eval=False, loss_mode="assistant_only")
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (16, 1)
    assert not args.padding_free  # TRL refuses padding_free without packing: our collator does it


def test_collator_follows_the_plan(demo_path):
    from finetune.models import load_tokenizer

    tokenizer = load_tokenizer(RunConfig(), path=str(demo_path))
    assert build_collator(cpu_plan(padding_free=False), tokenizer) is None  # TRL's default (padded)
    assert build_collator(cpu_plan(packing=True, padding_free=True), tokenizer) is None  # TRL's packing
    flat = build_collator(cpu_plan(padding_free=True), tokenizer)
    batch = flat([{"input_ids": [5, 6, 7]}, {"input_ids": [8, 9]}])
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]] and "attention_mask" not in batch


# --- the config fields behind it -------------------------------------------------------------------


def test_auto_fields_parse_and_validate():
    cfg = RunConfig().with_overrides(["gradient_checkpointing=auto", "packing=true", "group_by_length=false"])
    assert (cfg.gradient_checkpointing, cfg.packing, cfg.group_by_length) == ("auto", True, False)
    assert RunConfig.from_dict({"gradient_checkpointing": "False"}).gradient_checkpointing is False
    assert RunConfig().gradient_checkpointing == "auto" and RunConfig().packing == "auto"
    with pytest.raises(ConfigError, match="gradient_checkpointing"):
        RunConfig.from_dict({"gradient_checkpointing": "sometimes"})
    assert RunConfig(packing="maybe").validate()


# --- padding-free packing keeps examples apart without flash attention ---------------------------------


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_position_ids_keep_examples_apart(demo_path, attn):
    """TRL's padding-free batch (one flattened row, position_ids restarting per example, varlen kwargs, no
    attention mask) gives the logits the examples get alone: transformers 5 builds a block-diagonal mask
    from the position_ids for sdpa/eager when no cache is used (TRL's compute_loss sets use_cache=False),
    so `packing: true` is correct without flash attention, only slower."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model = AutoModelForCausalLM.from_pretrained(demo_path, attn_implementation=attn).eval()
    a, b = [5, 6, 7, 8, 9], [10, 11, 12]
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)([{"input_ids": a}, {"input_ids": b}])
    assert "attention_mask" not in batch and batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2]]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        packed = model(**inputs, use_cache=False).logits[0]
        alone_a = model(input_ids=torch.tensor([a]), use_cache=False).logits[0]
        alone_b = model(input_ids=torch.tensor([b]), use_cache=False).logits[0]
        leaky = model(input_ids=batch["input_ids"], use_cache=False).logits[0]  # no position_ids: b sees a
    torch.testing.assert_close(packed[: len(a)], alone_a, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed[len(a) :], alone_b, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(leaky[len(a) :], alone_b, atol=1e-3)

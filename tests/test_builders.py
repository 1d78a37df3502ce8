"""Builders: every RunConfig knob lands in the right library object; the fast path's `auto` decisions."""

from __future__ import annotations

import pytest
import torch

from finetune import builders
from finetune.builders import (
    FastPath,
    build_bnb_config,
    build_lora_config,
    build_sft_config,
    lora_target_modules,
    resolve_fast_path,
)
from finetune.config import RunConfig
from finetune.errors import ConfigError


def cpu_fast(**changes) -> FastPath:
    base = dict(
        device="cpu",
        attn_implementation="sdpa",
        packing=False,
        padding_free=False,
        sampler="random",
        gradient_checkpointing=False,
        use_liger_kernel=False,
    )
    return FastPath(**{**base, **changes})


# --- bitsandbytes / LoRA ---------------------------------------------------------------------


def test_bnb_config_per_quantization():
    four = build_bnb_config(RunConfig(quantization="4bit"))
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "nf4" and four.bnb_4bit_use_double_quant
    assert four.bnb_4bit_compute_dtype == torch.float32  # no GPU: fp32 compute
    eight = build_bnb_config(RunConfig(quantization="8bit"))
    assert eight.load_in_8bit and not eight.load_in_4bit
    assert build_bnb_config(RunConfig(quantization="none")) is None
    assert build_bnb_config(RunConfig(quantization="none"), quantization="4bit").load_in_4bit


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
    args = build_sft_config(cfg, str(tmp_path), has_eval=True, loss_mode="assistant_only", fast=cpu_fast())
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
    args = build_sft_config(cfg, str(tmp_path), has_eval=True, loss_mode="completion_only", fast=cpu_fast())
    assert args.warmup_steps == 0.1 and args.eval_strategy.value == "no" and args.report_to == []
    assert args.completion_only_loss and not args.assistant_only_loss
    best = RunConfig(eval_steps=5, load_best_model_at_end=True)
    args = build_sft_config(best, str(tmp_path), has_eval=True, loss_mode="full_sequence", fast=cpu_fast())
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss" and args.save_steps == 5
    assert not args.completion_only_loss and not args.assistant_only_loss
    no_eval = build_sft_config(best, str(tmp_path), has_eval=False, loss_mode="full_sequence", fast=cpu_fast())
    assert no_eval.eval_strategy.value == "no" and not no_eval.load_best_model_at_end


def test_sft_config_takes_the_fast_path(tmp_path):
    fast = cpu_fast(packing=True, padding_free=True, sampler="rebalance", gradient_checkpointing=True)
    args = build_sft_config(RunConfig(), str(tmp_path), has_eval=False, loss_mode="assistant_only", fast=fast)
    assert args.packing and args.padding_free and args.packing_strategy == "bfd"
    assert args.train_sampling_strategy == "batch_rebalance"
    assert args.activation_checkpointing and args.gradient_checkpointing
    assert args.activation_checkpointing_kwargs == {"use_reentrant": False}
    plain = build_sft_config(RunConfig(), str(tmp_path), has_eval=False, loss_mode="assistant_only", fast=cpu_fast())
    assert not plain.packing and not plain.padding_free and plain.train_sampling_strategy == "random"
    assert not plain.activation_checkpointing and plain.pad_to_multiple_of is None  # padded to the longest only


# --- resolve_fast_path ---------------------------------------------------------------------------


def test_auto_knobs_on_cpu():
    fast = resolve_fast_path(RunConfig(gradient_accumulation_steps=4))
    assert fast.device == "cpu" and fast.attn_implementation == "sdpa"
    assert not fast.packing and not fast.padding_free  # sdpa: no varlen kernels
    assert fast.sampler == "rebalance" and fast.train_sampling_strategy == "batch_rebalance"
    assert not fast.gradient_checkpointing and not fast.use_liger_kernel
    assert "packing" in fast.summary() and "rebalance" in fast.summary()
    assert resolve_fast_path(RunConfig(gradient_accumulation_steps=1)).sampler == "random"


def test_explicit_values_win():
    cfg = RunConfig(packing=True, group_by_length=True, gradient_checkpointing=True)
    fast = resolve_fast_path(cfg)
    assert fast.packing and fast.padding_free and fast.sampler == "group" and fast.gradient_checkpointing
    off = resolve_fast_path(RunConfig(group_by_length=False, gradient_accumulation_steps=8))
    assert off.sampler == "random"


def test_flash_attention_packs_padding_free():
    fast = resolve_fast_path(RunConfig(), attn_implementation="flash_attention_2", device="cuda", model="demo")
    assert fast.packing and fast.padding_free and fast.sampler == "random"
    assert not resolve_fast_path(RunConfig(packing=False), attn_implementation="flash_attention_2").packing


@pytest.mark.parametrize(("gpu_gb", "expected"), [(80.0, False), (0.5, True)])
def test_gradient_checkpointing_auto_follows_the_memory_estimate(monkeypatch, gpu_gb, expected):
    monkeypatch.setattr(builders, "_gpu_total_gb", lambda: gpu_gb)
    cfg = RunConfig(max_length=2048, per_device_train_batch_size=4)
    fast = resolve_fast_path(cfg, attn_implementation="sdpa", device="cuda", model="qwen2.5-0.5b")
    assert fast.gradient_checkpointing is expected
    assert "estimate without it" in fast.reasons["gradient checkpointing"]


def test_gradient_checkpointing_auto_without_an_estimate_stays_on(monkeypatch):
    monkeypatch.setattr(builders, "_gpu_total_gb", lambda: 80.0)
    fast = resolve_fast_path(RunConfig(), attn_implementation="sdpa", device="cuda", model="/no/such/model")
    assert fast.gradient_checkpointing and "no memory estimate" in fast.reasons["gradient checkpointing"]


def test_liger_only_on_cuda_when_installed(monkeypatch):
    monkeypatch.setattr(builders, "_gpu_total_gb", lambda: 80.0)
    real = builders.importlib.util.find_spec
    monkeypatch.setattr(
        builders.importlib.util, "find_spec", lambda name: object() if name == "liger_kernel" else real(name)
    )
    assert resolve_fast_path(RunConfig(), device="cuda", model="demo").use_liger_kernel
    assert not resolve_fast_path(RunConfig(), device="cpu").use_liger_kernel
    monkeypatch.setenv("FINETUNE_LIGER", "0")
    assert not resolve_fast_path(RunConfig(), device="cuda", model="demo").use_liger_kernel


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

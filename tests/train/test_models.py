"""Loading models for training: 4-bit layers stay differentiable on a CPU after an evaluation."""

from __future__ import annotations

import pytest
import torch

from finetune.config import RunConfig
from finetune.plan.hardware import Machine
from finetune.plan.planner import make_plan


def first_layer_lora_grads(workspace, *, training: bool, evaluate_first: bool) -> dict[str, torch.Tensor]:
    """Gradients of the first decoder layer's LoRA weights for one batch, after an optional
    eval-mode forward without gradients (what the trainer's evaluation does between steps)."""
    from peft import LoraConfig, get_peft_model

    from finetune.models import load_model

    cfg = RunConfig(quantization="4bit", bf16=False, fp16=False)
    plan = make_plan(cfg, Machine.virtual("cpu", 0.0))
    model = load_model(cfg, workspace, plan=plan, training=training)
    torch.manual_seed(0)
    lora = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    ids = torch.tensor([[1, 5, 9, 13, 17, 21, 25, 29]])
    if evaluate_first:
        model.eval()
        with torch.no_grad():
            model(input_ids=ids)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None and "layers.0." in n}


@pytest.mark.slow
def test_an_evaluation_does_not_change_the_training_gradients_of_a_4bit_model(workspace):
    before = first_layer_lora_grads(workspace, training=True, evaluate_first=False)
    after = first_layer_lora_grads(workspace, training=True, evaluate_first=True)
    assert before and before.keys() == after.keys()
    for name in before:
        assert torch.allclose(before[name], after[name], rtol=1e-4, atol=1e-6), name


@pytest.mark.slow
def test_the_inference_kernels_would_drop_the_gradients(workspace):
    from bitsandbytes.functional import has_avx512bf16

    if not has_avx512bf16():
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes never repacks the weights here")
    before = first_layer_lora_grads(workspace, training=False, evaluate_first=False)
    after = first_layer_lora_grads(workspace, training=False, evaluate_first=True)
    assert any(not torch.allclose(before[n], after[n], rtol=1e-4, atol=1e-6) for n in before)

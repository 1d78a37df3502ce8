"""`finetune bench`: the generated data, the measurements, the variants, and one tiny end-to-end run."""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
import torch

from finetune.bench import make_rows
from finetune.bench.data import length_stats
from finetune.bench.measure import StepMark, StepMeter, TokenCounter, flops_params, gpu_peak_tflops
from finetune.bench.runner import variants_for
from finetune.config import RunConfig
from finetune.plan.hardware import Machine
from finetune.plan.planner import make_plan


@pytest.fixture
def tokenizer(demo_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_path)


def test_rows_are_deterministic_and_span_the_lengths(tokenizer):
    rows = make_rows(tokenizer, n_rows=120, min_tokens=20, max_tokens=500, seed=3)
    assert rows == make_rows(tokenizer, n_rows=120, min_tokens=20, max_tokens=500, seed=3)
    assert rows != make_rows(tokenizer, n_rows=120, min_tokens=20, max_tokens=500, seed=4)
    stats = length_stats(rows, tokenizer)
    assert stats["rows"] == 120 and stats["min"] < 60 and 400 < stats["max"] <= 500
    assert 180 < stats["mean"] < 320  # uniform targets
    assert all(m["role"] in ("user", "assistant") for r in rows for m in r["messages"])
    assert all(r["messages"][-1]["role"] == "assistant" for r in rows)


def test_token_counter_counts_real_computed_and_loss_tokens():
    def collate(examples):
        longest = max(len(e["input_ids"]) for e in examples)
        ids = torch.tensor([e["input_ids"] + [0] * (longest - len(e["input_ids"])) for e in examples])
        labels = ids.clone()
        labels[ids == 0] = -100
        labels[:, 0] = -100
        return {"input_ids": ids, "labels": labels}

    counter = TokenCounter(collate)
    counter([{"input_ids": [5, 6, 7]}, {"input_ids": [5]}])
    assert (counter.real, counter.computed, counter.loss) == (4, 6, 2)


def test_step_meter_window_skips_the_warmup():
    meter = StepMeter(TokenCounter(lambda e: e))
    # step ends at t = 10 (warm-up), 11, 13: 300 real tokens in 3 s after the warm-up
    meter.marks = [StepMark(10, 5, 100, 200, 50), StepMark(11, 6, 200, 400, 90), StepMark(13, 8, 400, 800, 170)]
    w = meter.window(warmup=1)
    assert w["steps"] == 2 and w["tokens_per_s"] == pytest.approx(100.0)
    assert w["cpu_tokens_per_s"] == pytest.approx(100.0) and w["step_time_s"] == pytest.approx(1.5)
    assert w["padding_fraction"] == pytest.approx(0.5) and w["loss_tokens_per_step"] == pytest.approx(60)
    assert meter.window(warmup=3) == {}


def test_mfu_inputs(demo_path):
    assert gpu_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu_peak_tflops("Some Future GPU") is None
    vocab = json.loads((demo_path / "config.json").read_text())["vocab_size"]
    # demo: 2 layers x (q,o 64x64 + k,v 64x32 + gate,up,down 64x192) + 5 RMSNorms + the LM head (no input embedding)
    assert flops_params(str(demo_path)) == 2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 192) + 5 * 64 + vocab * 64


def test_variants_follow_the_plan():
    cpu = make_plan(RunConfig(), Machine.virtual("cpu"), model="demo")
    names = [v.name for v in variants_for(cpu, ablate=True, unsloth=False)]
    assert names[:3] == ["engine", "TRL defaults", "seed script"] and "Unsloth" not in names
    assert "engine, gradient checkpointing on" in names and "engine, random batches" in names
    assert "engine, padding-free on" in names and "engine, bfd packing" in names
    assert "TRL defaults, checkpointing off" in names and "engine, loss on every token" in names
    assert not any("sdpa attention" in n or "Liger" in n for n in names)
    machine = Machine.virtual("cuda", 139.8, flash_attn=True, liger=True)
    gpu = make_plan(RunConfig(), machine, model="qwen2.5-0.5b")
    names = [v.name for v in variants_for(gpu, ablate=True, unsloth=True)]
    assert names[3] == "Unsloth"
    assert {"engine, padding-free off", "engine, sdpa attention", "engine, Liger on"} <= set(names)
    assert "engine, micro-batch as set" in names and "engine, gradient checkpointing on" in names
    assert [v.name for v in variants_for(cpu, ablate=False, unsloth=False)] == ["engine", "TRL defaults", "seed script"]


def test_shape_models_get_random_weights_and_the_demo_tokenizer(workspace, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from finetune.bench import weights

    shape = tmp_path / "tiny-llama.json"
    shape.write_text(
        json.dumps(
            {
                "_source": "test",
                "model_type": "llama",
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "vocab_size": 2048,
                "torch_dtype": "bfloat16",
            }
        )
    )
    monkeypatch.setattr(weights, "bundled_shapes", lambda: {"tiny-llama": shape})
    assert weights.is_shape_name("tiny-llama") and not weights.is_shape_name("demo")
    path = weights.resolve_bench_model("tiny-llama", workspace)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.vocab_size == 2048 and model.config.hidden_size == 32
    assert weights.resolve_bench_model("tiny-llama", workspace) == path  # built once


@pytest.mark.slow
def test_bench_cli_json_has_the_numbers(workspace):
    from finetune.cli import main as cli_main

    prefix = workspace / "out" / "cpu_demo2.5-128"  # a dot in the name must survive
    argv = "--steps 3 --repeats 1 --rows 48 --max-length 128 --json".split()
    argv += ["--workspace", str(workspace), "--save", str(prefix)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(["bench", *argv])
    assert code == 0
    result = json.loads(out.getvalue())
    for key in ("engine_tokens_per_s", "baseline_tokens_per_s", "ratio", "engine_step_time_s", "engine_peak_mem_gb"):
        assert key in result, key
    assert result["engine_tokens_per_s"] > 0 and result["baseline_tokens_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["engine_tokens_per_s"] / result["baseline_tokens_per_s"])
    assert result["baseline"] == "TRL defaults" and result["seed_tokens_per_s"] > 0
    assert result["ratio_vs_seed"] == pytest.approx(result["engine_tokens_per_s"] / result["seed_tokens_per_s"])
    engine, trl_defaults, seed = result["variants"][:3]
    assert trl_defaults["settings"]["pad_to_multiple_of"] is None and trl_defaults["settings"]["gradient_checkpointing"]
    assert seed["settings"]["pad_to_multiple_of"] == 128 and seed["settings"]["gradient_checkpointing"]
    assert engine["settings"]["pad_to_multiple_of"] is None and not engine["settings"]["gradient_checkpointing"]
    assert engine["padding_fraction"] < seed["padding_fraction"]
    assert result["plan"]["device"] == "cpu" and engine["plan"].startswith("plan: cpu")
    assert result["device"] == "cpu" and result["engine_mfu"] is None and result["machine"]["nproc"] >= 1
    assert json.loads((workspace / "out" / "cpu_demo2.5-128.json").read_text())["model"] == "demo"
    assert "engine / TRL defaults" in (workspace / "out" / "cpu_demo2.5-128.md").read_text()


def test_dpo_variants_and_pair_token_counts():
    dpo = make_plan(RunConfig(objective="dpo"), Machine.virtual("cpu"), model="demo")
    assert [v.kind for v in variants_for(dpo, ablate=False, unsloth=True)] == ["engine", "trl_dpo"]
    from finetune.bench.measure import TokenCounter

    def collate(examples):
        import torch

        return {"input_ids": torch.zeros(4, 5), "completion_mask": torch.ones(4, 5)}

    counter = TokenCounter(collate)
    counter([{"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4, 5]}] * 2)
    assert counter.real == 2 * (2 * 2 + 1 + 2) and counter.computed == 20 and counter.loss == 20


@pytest.mark.slow
def test_bench_dpo_against_a_plain_trl_dpo_script(workspace):
    from finetune.cli import main as cli_main

    argv = "bench --objective dpo --steps 2 --repeats 1 --rows 32 --max-length 96 --quantization none --json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main([*argv.split(), "--workspace", str(workspace)]) == 0
    result = json.loads(out.getvalue())
    assert result["baseline"] == "TRL DPO defaults"
    assert result["engine_tokens_per_s"] > 0 and result["baseline_tokens_per_s"] > 0
    engine, script = result["variants"]
    assert script["kind"] == "trl_dpo" and script["settings"]["gradient_checkpointing"]
    # both arms really trained DPO: a fresh adapter is its own reference, so the first sigmoid loss is
    # -log(sigmoid(0)) = ln 2 (an SFT loss on these rows would be several nats)
    assert engine["loss_first"] == pytest.approx(math.log(2), abs=0.02), engine["loss_first"]
    assert script["loss_first"] == pytest.approx(math.log(2), abs=0.02), script["loss_first"]

"""GGUF files run by the runtime they are for: llama.cpp (llama-cpp-python, the optional .[gguf] extra), each
in a child process, so a crash of llama.cpp fails the test instead of killing the suite.

The llama.cpp tests skip, saying why, where llama-cpp-python is not installed (it compiles from source;
CI does not have it).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from finetune.export.gguf_process import WorkerFailed, llama_cpp_installed, run_child

needs_llama_cpp = pytest.mark.skipif(
    not llama_cpp_installed(),
    reason='llama-cpp-python is not installed (pip install torch==2.13.0 -e ".[gguf]"; compiles llama.cpp)',
)
MAX_NEW = 24


def test_a_crashing_child_fails_the_step_not_the_caller():
    segfault = [sys.executable, "-c", "import ctypes; print('loading', flush=True); ctypes.string_at(0)"]
    with pytest.raises(WorkerFailed, match=r"running x crashed the llama\.cpp process \(SIGSEGV\)") as caught:
        run_child(segfault, "running x")
    assert caught.value.kind == "crash"


def test_the_workers_own_error_line_is_the_message():
    from finetune.export.gguf_worker import ERROR_PREFIX

    command = [sys.executable, "-c", f"import sys; print('noise', file=sys.stderr); sys.exit(print('{ERROR_PREFIX} kind-x: what went wrong', file=sys.stderr) or 3)"]  # fmt: skip
    with pytest.raises(WorkerFailed, match="^converting failed: what went wrong$") as caught:
        run_child(command, "converting")
    assert caught.value.kind == "kind-x"


# --- in llama.cpp ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_exports(trained_sft_run, tmp_path_factory, shared_cache):
    """Every GGUF type the app offers for the demo, exported from a copy of the session's trained run."""
    from finetune.demo import demo_model_path
    from finetune.export.gguf import export_gguf
    from finetune.export.gguf_types import type_choices
    from finetune.runs import Run

    ws = tmp_path_factory.mktemp("gguf-llama-ws")
    (ws / "cache").symlink_to(shared_cache / "cache", target_is_directory=True)
    target = ws / "runs" / "gguf-llama"
    shutil.copytree(trained_sft_run.path, target, symlinks=True)
    run = Run(target)
    offered = [c.type for c in type_choices(demo_model_path(ws)) if c.available]  # what the app offers
    return run, {t: export_gguf(run, t) for t in offered}


def _merged_reference(merged: Path, messages) -> tuple[list[int], str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    answer = out[0, inputs["input_ids"].shape[1] :].tolist()
    if answer and answer[-1] == tokenizer.eos_token_id:
        answer = answer[:-1]  # llama.cpp stops at the end-of-generation token without returning it
    return inputs["input_ids"][0].tolist(), tokenizer.decode(answer, skip_special_tokens=True)


@pytest.mark.slow
@needs_llama_cpp
def test_every_type_offered_for_the_demo_runs_in_llama_cpp(demo_exports):
    from finetune.evaluation.examples import examples_from_rows, load_eval_rows
    from finetune.export.gguf_process import generate_in_llama_cpp

    run, exports = demo_exports
    assert set(exports) == {"f16", "bf16", "q8_0"}  # the K-quants are refused for the 64-wide demo
    rows, _, _ = load_eval_rows(run)
    examples, _ = examples_from_rows(rows, 3)
    merged = exports["f16"].merged
    for example in examples:
        prompt_ids, expected = _merged_reference(merged, example.prompt_input)
        prompt_text = _prompt_text(merged, example.prompt_input)
        for type_name, export in exports.items():
            got = generate_in_llama_cpp(export.path, prompt_text, max_tokens=MAX_NEW)  # a crash raises here
            assert got["prompt_ids"] == prompt_ids, f"{type_name}: the GGUF's tokenizer differs"
            if type_name in ("f16", "q8_0"):
                assert got["text"] == expected, f"{type_name}: {got['text']!r} != {expected!r}"
            else:
                assert got["ids"], type_name


def _prompt_text(merged: Path, messages) -> str:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(merged).apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )


@pytest.mark.slow
@needs_llama_cpp
def test_k_quants_of_a_256_wide_model_run_in_llama_cpp(demo_path, tmp_path):
    """llama_model_quantize on a model whose rows are multiples of 256: the file holds K-quant tensors
    and runs (random weights: only that it runs and stops is checked)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from finetune.export.gguf import DEMO_PRE_TOKENIZER, read_metadata
    from finetune.export.gguf_converter import converter_dir
    from finetune.export.gguf_process import generate_in_llama_cpp, quantize, run_worker

    folder = tmp_path / "wide"
    tokenizer = AutoTokenizer.from_pretrained(demo_path)
    config = json.loads((demo_path / "config.json").read_text())
    config.update(hidden_size=256, intermediate_size=512, head_dim=64, num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**{k: v for k, v in config.items() if k != "architectures"})).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    sixteen = tmp_path / "wide.f16.gguf"
    args = ["convert", str(converter_dir()), "--pre-tokenizer", DEMO_PRE_TOKENIZER, "--"]
    run_worker([*args, str(folder), "--outfile", str(sixteen), "--outtype", "f16"], "converting")
    for type_name, tensor_type in (("q4_k_m", "Q4_K"), ("q5_k_m", "Q5_K"), ("q6_k", "Q6_K")):
        out = tmp_path / f"wide.{type_name}.gguf"
        quantize(sixteen, out, type_name)
        assert tensor_type in read_metadata(out)["tensor_types"], type_name
        got = generate_in_llama_cpp(out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", max_tokens=8)
        assert got["prompt_ids"] == tokenizer("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")["input_ids"]


@pytest.mark.slow
@needs_llama_cpp
def test_a_file_llama_cpp_cannot_run_fails_the_export_check(demo_path, tmp_path):
    from finetune.config import RunConfig
    from finetune.errors import ModelError
    from finetune.export.gguf import run_check

    broken = tmp_path / "broken.q8_0.gguf"
    broken.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)  # a header, then nonsense
    with pytest.raises(ModelError, match=r"The q8_0 file does not run in llama\.cpp .*it was removed"):
        run_check(broken, RunConfig(model_name_or_path="demo"), demo_path, "q8_0")


@pytest.mark.slow
@needs_llama_cpp
def test_the_gguf_lora_on_the_base_answers_like_the_merged_model(demo_exports, demo_path, tmp_path):
    """llama.cpp's --lora: the base converted as it is plus the adapter's GGUF LoRA = the merged fine-tune."""
    from finetune.evaluation.examples import examples_from_rows, load_eval_rows
    from finetune.export.gguf import DEMO_PRE_TOKENIZER, export_lora_gguf
    from finetune.export.gguf_converter import converter_dir
    from finetune.export.gguf_process import generate_in_llama_cpp, run_worker

    run, exports = demo_exports
    lora = export_lora_gguf(run)
    base = tmp_path / "demo.f16.gguf"
    args = ["convert", str(converter_dir()), "--pre-tokenizer", DEMO_PRE_TOKENIZER, "--"]
    run_worker([*args, str(demo_path), "--outfile", str(base), "--outtype", "f16"], "converting the base")
    rows, _, _ = load_eval_rows(run)
    examples, _ = examples_from_rows(rows, 2)
    merged = exports["f16"].merged
    for example in examples:
        prompt = _prompt_text(merged, example.prompt_input)
        with_lora = generate_in_llama_cpp(base, prompt, max_tokens=MAX_NEW, lora=lora)
        assert with_lora["text"] == generate_in_llama_cpp(exports["f16"].path, prompt, max_tokens=MAX_NEW)["text"]
        assert with_lora["text"] != generate_in_llama_cpp(base, prompt, max_tokens=MAX_NEW)["text"]

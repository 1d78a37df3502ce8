"""Ollama Modelfiles from a model folder's chat template: only for templates we can reproduce exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from finetune.export.serving import ollama_modelfile

LLAMA3_TEMPLATE = (  # Meta's Llama 3 template
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
LLAMA31_LIKE_TEMPLATE = (  # Llama 3.1 style: a system turn always, with date lines before any given system text
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}"
    "{{ '<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n\n' + system + '<|eot_id|>' }}"
    "{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
QWEN_LIKE_TEMPLATE = (  # ChatML with a default system prompt, as Qwen2.5 has
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}"
)


def _model_dir(demo_path: Path, tmp_path: Path, template: str | None, bos: str | None = None, **generation) -> Path:
    """The demo tokenizer with another chat template (and generation_config), as an export would hold it."""
    from transformers import AutoTokenizer

    folder = tmp_path / "model"
    tokenizer = AutoTokenizer.from_pretrained(demo_path)
    tokenizer.chat_template = template
    if bos:
        tokenizer.bos_token = bos
    tokenizer.save_pretrained(folder)
    if template is None:
        (folder / "chat_template.jinja").unlink(missing_ok=True)
    shutil.copy(demo_path / "config.json", folder / "config.json")
    config = json.loads((demo_path / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, **generation}))
    return folder


def test_chatml_demo_model(demo_path):
    modelfile = ollama_modelfile(demo_path)
    assert modelfile.startswith("FROM ./model.gguf\n")
    assert 'TEMPLATE """' in modelfile and "<|im_start|>{{ .Role }}" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "SYSTEM" not in modelfile  # the demo template has no default system prompt
    assert "temperature" not in modelfile  # greedy generation_config: Ollama's defaults stay


def test_llama3_and_gguf_name(demo_path, tmp_path):
    folder = _model_dir(demo_path, tmp_path, LLAMA3_TEMPLATE, bos="<|begin_of_text|>")
    modelfile = ollama_modelfile(folder, gguf_name="tuned-q8_0.gguf")
    assert modelfile.startswith("FROM ./tuned-q8_0.gguf\n")
    assert "<|start_header_id|>{{ .Role }}<|end_header_id|>" in modelfile
    assert 'PARAMETER stop "<|eot_id|>"' in modelfile
    assert "<|begin_of_text|>" not in modelfile  # BOS is added by the tokenizer, not the template


def test_default_system_prompt_becomes_system(demo_path, tmp_path):
    folder = _model_dir(demo_path, tmp_path, QWEN_LIKE_TEMPLATE)
    assert 'SYSTEM """You are a helpful assistant."""' in ollama_modelfile(folder)
    folder = _model_dir(demo_path, tmp_path / "b", LLAMA31_LIKE_TEMPLATE, bos="<|begin_of_text|>")
    assert 'SYSTEM """Cutting Knowledge Date: December 2023\n\n"""' in ollama_modelfile(folder)


def test_sampling_defaults_are_carried_over(demo_path, tmp_path):
    folder = _model_dir(
        demo_path, tmp_path, QWEN_LIKE_TEMPLATE, do_sample=True, temperature=0.7, top_p=0.8, top_k=20,
        repetition_penalty=1.05,
    )  # fmt: skip
    modelfile = ollama_modelfile(folder)
    for line in ("temperature 0.7", "top_p 0.8", "top_k 20", "repeat_penalty 1.05"):
        assert f"PARAMETER {line}\n" in modelfile


@pytest.mark.parametrize("template", [MISTRAL_TEMPLATE, None])
def test_unknown_or_missing_template_is_refused(demo_path, tmp_path, template):
    folder = _model_dir(demo_path, tmp_path, template, bos="<s>")
    with pytest.raises(ValueError, match="TEMPLATE by hand|no chat template"):
        ollama_modelfile(folder)


def test_chatml_lookalike_that_renders_differently_is_refused(demo_path, tmp_path):
    odd = QWEN_LIKE_TEMPLATE.replace("'\n' + m['content']", "': ' + m['content']")
    assert odd != QWEN_LIKE_TEMPLATE
    folder = _model_dir(demo_path, tmp_path, odd)
    with pytest.raises(ValueError, match="renders differently"):
        ollama_modelfile(folder)


@pytest.mark.slow
def test_merged_export_has_what_servers_read(workspace):
    """vLLM, llama.cpp's converter and Ollama read these files of `finetune export --merge`."""
    from helpers_runs import make_run

    from finetune.export.merge import merge_adapter

    out = merge_adapter(make_run(workspace), workspace / "merged")
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).is_file(), name
    assert list(out.glob("model*.safetensors"))
    assert (out / "chat_template.jinja").is_file() or "chat_template" in (out / "tokenizer_config.json").read_text()
    assert ollama_modelfile(out).startswith("FROM ./model.gguf")

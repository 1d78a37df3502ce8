"""GGUF export, proven by loading the files back: transformers' GGUF loader must give the merged model's
greedy answers on the held-out prompts, and the metadata must carry what a runtime needs.

The converter is llama.cpp's own (fetched with pip on first use into the user cache, about a minute once).
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
import torch

from finetune.errors import ConfigError, ModelError

PROMPTS = 4  # held-out prompts compared token for token
MAX_NEW = 24


# --- types and refusals (fast) -----------------------------------------------------------------------
def test_k_quants_are_refused_for_the_64_wide_demo_with_the_reason(demo_path):
    from finetune.export.gguf_types import refusal, type_choices

    choices = {c.type: c for c in type_choices(demo_path)}
    assert all(choices[t].available for t in ("f16", "bf16", "q8_0"))
    for t in ("q4_k_m", "q5_k_m", "q6_k"):
        assert not choices[t].available
        assert "divisible by 256" in choices[t].reason and "hidden_size 64" in choices[t].reason
    assert "q8_0" in refusal("q4_k_m", demo_path)


def test_k_quants_of_a_real_shape_need_only_the_quantizer():
    from finetune.export.gguf_process import llama_cpp_installed
    from finetune.export.gguf_types import type_choices

    qwen_05b = {"hidden_size": 896, "intermediate_size": 4864}  # 896 is not a multiple of 256, 4864 is
    choices = {c.type: c for c in type_choices(config=qwen_05b)}
    if llama_cpp_installed():
        assert choices["q4_k_m"].available
    else:
        assert not choices["q4_k_m"].available and ".[gguf]" in choices["q4_k_m"].reason


def test_unknown_type_names_the_choices():
    from finetune.export.gguf_types import check_type

    with pytest.raises(ConfigError, match="q4_0 is not a GGUF type.*f16, bf16, q8_0, q4_k_m"):
        check_type("Q4_0")
    assert check_type(" Q8_0 ") == "q8_0"


def test_turn_end_token_of_the_demo_chat_template(demo_path):
    from transformers import AutoTokenizer

    from finetune.export.gguf import turn_end_token

    tokenizer = AutoTokenizer.from_pretrained(demo_path)
    assert turn_end_token(tokenizer) == tokenizer.convert_tokens_to_ids("<|im_end|>")
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n\n{% endfor %}"
    assert turn_end_token(tokenizer) is None  # a turn that ends in plain text has no token to stop on
    tokenizer.chat_template = None
    assert turn_end_token(tokenizer) is None


def test_a_file_without_eos_or_with_a_training_template_is_refused():
    from finetune.export.gguf import check_metadata

    good = {"eos_token_id": 2, "chat_template": "{{ messages[0]['content'] }}"}
    check_metadata(good, had_template=True)
    with pytest.raises(ModelError, match="no EOS token"):
        check_metadata({**good, "eos_token_id": None}, had_template=True)
    with pytest.raises(ModelError, match="chat template did not reach the file"):
        check_metadata({**good, "chat_template": None}, had_template=True)
    check_metadata({**good, "chat_template": None}, had_template=False)  # a model without one: nothing lost
    with pytest.raises(ModelError, match="generation %} markers"):
        check_metadata({**good, "chat_template": "{% generation %}x{% endgeneration %}"}, had_template=True)


# --- the converter's cache (fast) ----------------------------------------------------------------------
def _fake_sdist(path: Path, with_converter: bool = True) -> Path:
    from finetune.export.gguf_converter import LLAMA_CPP_PYTHON_VERSION

    src = path.parent / "src"
    root = src / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}" / "vendor" / "llama.cpp"
    (root / "conversion").mkdir(parents=True)
    (root / "gguf-py" / "gguf").mkdir(parents=True)
    (root / "ggml" / "src").mkdir(parents=True)
    if with_converter:
        (root / "convert_hf_to_gguf.py").write_text("# converter\n")
    (root / "conversion" / "base.py").write_text("# base\n")
    (root / "gguf-py" / "gguf" / "__init__.py").write_text("")
    (root / "ggml" / "src" / "ggml.c").write_text("/* native code: not wanted */\n")
    with tarfile.open(path, "w:gz") as tar:
        tar.add(
            src / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}", arcname=f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}"
        )
    return path


def test_unpack_takes_only_the_converter_files(tmp_path):
    from finetune.export.gguf_converter import MARKER, is_ready, unpack_sdist

    target = unpack_sdist(_fake_sdist(tmp_path / "sdist.tar.gz"), tmp_path / "cache" / "converter")
    assert is_ready(target)
    assert (target / "conversion" / "base.py").is_file() and (target / "gguf-py" / "gguf" / "__init__.py").is_file()
    assert not (target / "ggml").exists()
    assert json.loads((target / MARKER).read_text())["sdist_sha256"]
    assert [p.name for p in target.parent.iterdir()] == ["converter"]  # no staging folder left


def test_a_wrong_archive_or_folder_is_refused_with_what_to_do(tmp_path, monkeypatch):
    from finetune.export.gguf_converter import ENV_VAR, converter_dir, unpack_sdist

    with pytest.raises(ModelError, match="is not the llama-cpp-python"):
        unpack_sdist(_fake_sdist(tmp_path / "bad.tar.gz", with_converter=False), tmp_path / "cache" / "c")
    assert not (tmp_path / "cache" / "c").exists()
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(ModelError, match="holds no convert_hf_to_gguf.py; run `finetune gguf-converter`"):
        converter_dir()


# --- exports of a trained run, loaded back (slow) --------------------------------------------------------
@pytest.fixture(scope="module")
def gguf_run(trained_sft_run, tmp_path_factory, shared_cache):
    """A copy of the session's trained run with f16 (through the desk) and q8_0 (through the CLI) exports."""
    from finetune.cli import main
    from finetune.runs import Run
    from finetune.studio import Studio

    ws = tmp_path_factory.mktemp("gguf-ws")
    (ws / "cache").symlink_to(shared_cache / "cache", target_is_directory=True)
    target = ws / "runs" / "gguf-sft"  # not the session run's name: a finished job there still answers to it
    shutil.copytree(trained_sft_run.path, target, symlinks=True)
    run = Run(target)
    seen = []
    f16 = Studio(ws, restrict_paths=False).export.gguf(run.name, "f16", progress=lambda f, m: seen.append((f, m)))
    return run, ws, f16, seen, main


def _merged_answers(merged: Path, prompts) -> list[list[int]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    return _answers(model, AutoTokenizer.from_pretrained(merged), prompts)


def _answers(model, tokenizer, prompts) -> list[list[int]]:
    out = []
    for messages in prompts:
        inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
        ids = model.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        out.append(ids[0, inputs["input_ids"].shape[1] :].tolist())
    return out


def _held_out_prompts(run):
    from finetune.evaluation.examples import examples_from_rows, load_eval_rows

    rows, _, _ = load_eval_rows(run)
    examples, _ = examples_from_rows(rows, PROMPTS)
    return [e.prompt_input for e in examples]


@pytest.mark.slow
def test_f16_and_q8_0_answer_like_the_merged_model(gguf_run, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, ws, f16, seen, cli_main = gguf_run
    assert cli_main(["export", "--run", str(run.path), "--gguf", "q8_0", "--workspace", str(ws)]) == 0
    printed = capsys.readouterr()
    q8_path = Path(printed.out.strip().splitlines()[-1])  # the file's path is the last line
    assert q8_path.name == f"{run.name}.q8_0.gguf" and q8_path.is_file()
    assert "MB in" in printed.err and "ollama create" in printed.err and "llama-server -m" in printed.err

    assert f16.path == run.path / "exports" / "gguf" / f"{run.name}.f16.gguf"
    assert f16.merged == run.path / "exports" / "merged"  # merged first, then converted
    assert [f for f, _ in seen] == sorted(f for f, _ in seen) and seen[-1][0] == 1.0
    assert any("tensor" in m for _, m in seen)
    assert 0 < q8_path.stat().st_size < f16.path.stat().st_size

    prompts = _held_out_prompts(run)
    reference = _merged_answers(f16.merged, prompts)
    assert any(len(a) > 3 for a in reference)
    for path in (f16.path, q8_path):
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)  # the file's own tokenizer
        assert _answers(model, tokenizer, prompts) == reference, path.name
    leftovers = [p.name for p in q8_path.parent.iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers


@pytest.mark.slow
def test_the_file_carries_what_a_runtime_needs(gguf_run):
    from finetune.export.gguf import read_metadata

    run, _, f16, _, _ = gguf_run
    meta = read_metadata(f16.path)
    assert meta == f16.metadata
    assert meta["name"] == run.name and meta["base_model"].startswith("demo")
    assert meta["eos_token"] == "<|im_end|>" and meta["eot_token"] == "<|im_end|>"
    assert meta["padding_token"] == "<|endoftext|>" and meta["tokenizer_pre"] == "gpt-2"
    template = meta["chat_template"]
    assert "<|im_start|>" in template and "{% generation %}" not in template  # the plain template
    assert meta["tensor_types"] == ["F16", "F32"]
    modelfile = f16.modelfile.read_text()
    assert f16.modelfile == f16.path.with_name(f"{run.name}.f16.Modelfile")
    assert modelfile.startswith(f"FROM ./{f16.path.name}\n")
    assert 'TEMPLATE """' in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert f16.commands["ollama_create"] == f"ollama create {run.name}:f16 -f {f16.modelfile}"
    assert f16.commands["llama_server"].startswith(f"llama-server -m {f16.path} --jinja")


@pytest.mark.slow
def test_trained_system_prompt_goes_into_the_modelfile(gguf_run, tmp_path):
    from finetune.export.ollama import trained_system_prompt, write_modelfile

    run, _, f16, _, _ = gguf_run
    system, note = trained_system_prompt(run)  # the sample's rows: a system turn in some, not most
    assert system is None and "none in most" in note
    rows = [
        {"messages": [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": f"q{i}"},
                      {"role": "assistant", "content": f"a{i}"}]}
        for i in range(6)
    ]  # fmt: skip
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run.config().replace(dataset_path=str(data)).to_yaml(run.config_path)
    try:
        path, note = write_modelfile(run, f16.merged, tmp_path / "x.q8_0.gguf")
    finally:
        run.config().replace(dataset_path="").to_yaml(run.config_path)
    assert 'SYSTEM """Answer in one word."""' in path.read_text() and "system message of" in note


@pytest.mark.slow
def test_lora_gguf_holds_the_adapter(gguf_run):
    from gguf import GGUFReader

    run, ws, _, _, _ = gguf_run
    from finetune.studio import Studio

    path = Studio(ws, restrict_paths=False).export.lora_gguf(run.name)
    assert path == run.path / "exports" / "gguf" / f"{run.name}.lora.f16.gguf"
    reader = GGUFReader(str(path))
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    names = [t.name for t in reader.tensors]
    assert names and all(n.endswith((".lora_a", ".lora_b")) for n in names)


@pytest.mark.slow
def test_an_unknown_tokenizer_names_the_model_and_leaves_nothing(copy_run, trained_sft_run, workspace, demo_path):
    """A local model the converter has no pre-tokenizer hash for (the demo under another name)."""
    from finetune.export.gguf import export_gguf, gguf_dir

    local = workspace / "my-model"
    shutil.copytree(demo_path, local)
    run = copy_run(trained_sft_run)
    run.config().replace(model_name_or_path=str(local)).to_yaml(run.config_path)
    with pytest.raises(ModelError, match=f"{local}: llama.cpp's converter .* does not know this model's tokenizer"):
        export_gguf(run, "q8_0")
    assert not any(gguf_dir(run).iterdir())


@pytest.mark.slow
def test_gguf_side_in_the_judging_desk(gguf_run):
    """A GGUF export can stand opposite the fine-tune: the side by side and batch evaluation use the file."""
    from transformers import AutoTokenizer

    from finetune.errors import RunError
    from finetune.evaluation.compare import release_comparer
    from finetune.studio import GenerationSettings, Studio

    run, ws, f16, _, _ = gguf_run
    judge = Studio(ws, restrict_paths=False).judge
    side = f"gguf:{f16.path.name}"
    assert (f"GGUF f16 ({f16.path.name})", side) in judge.sides(run.name)
    prompt = _held_out_prompts(run)[0][-1]["content"]
    settings = GenerationSettings(max_new_tokens=MAX_NEW)
    tokenizer = AutoTokenizer.from_pretrained(f16.merged)
    try:
        from_gguf = list(judge.stream(run.name, prompt, False, settings, against=side))[-1]
        base = list(judge.stream(run.name, prompt, False, settings))[-1]
        (merged,) = _merged_answers(f16.merged, [[{"role": "user", "content": prompt}]])
        assert from_gguf == tokenizer.decode(merged, skip_special_tokens=True) and from_gguf != base
        evaluation = judge.evaluate(run.name, None, limit=2, settings=settings, against=side)
        assert evaluation.summary["against"] == side and evaluation.summary["against_label"].startswith("GGUF f16")
        merged_rows = _merged_answers(f16.merged, _held_out_prompts(run)[:2])
        assert [r.base for r in evaluation.rows] == [tokenizer.decode(a, skip_special_tokens=True) for a in merged_rows]
        with pytest.raises(RunError, match="is not a GGUF file of"):
            list(judge.stream(run.name, prompt, False, settings, against="gguf:../../adapter/x.gguf"))
    finally:
        release_comparer()

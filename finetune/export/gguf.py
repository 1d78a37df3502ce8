"""A finished run as a GGUF file for llama.cpp, Ollama and LM Studio, with an Ollama Modelfile beside it.

`export_gguf(run, type)`:
 1. refuses a type this machine or this model cannot take (gguf_types), before anything is written;
 2. merges the adapter first unless <run>/exports/merged is a merge of the current adapter;
 3. converts the merged folder with llama.cpp's own converter (gguf_converter: fetched by pip, run in a
    child process by gguf_worker) straight to f16/bf16/q8_0, or to a 16-bit file that llama.cpp's
    quantizer then turns into a K-quant (llama-cpp-python, the `.[gguf]` extra);
 4. reads the file back and checks what a runtime needs: the chat template (the plain one, no
    {% generation %} markers), EOS and the token a chat turn ends with (written as EOT), a name and
    the base model;
 5. where llama-cpp-python is installed, runs the file in llama.cpp (a child process): a file that
    crashes the runtime it is made for is removed and the export fails, saying so;
 6. writes `<run>.<type>.Modelfile` beside `<run>.<type>.gguf` (default folder <run>/exports/gguf/).

The file is written under a temporary name and renamed when complete: a failed export leaves nothing.
`export_lora_gguf(run)` writes the adapter alone (convert_lora_to_gguf.py), for llama.cpp's `--lora`.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.demo import is_demo
from finetune.errors import ModelError, RunError
from finetune.export.gguf_converter import LLAMA_CPP_PYTHON_VERSION, converter_dir
from finetune.export.gguf_process import WorkerFailed, generate_in_llama_cpp, llama_cpp_installed, quantize, run_worker
from finetune.export.gguf_types import CONVERTER_TYPES, check_type, refusal
from finetune.export.merge import MERGE_MARKER, exports_dir, merge_adapter, saved_dtype
from finetune.export.ollama import ollama_model_name, serve_commands, write_modelfile
from finetune.models import load_tokenizer, resolve_model_path
from finetune.names import is_hub_id, is_local_path, safe_name
from finetune.runs import NO_ADAPTER_MESSAGE, Run, open_run

Progress = Callable[[float, str], Any]
DEMO_PRE_TOKENIZER = "gpt-2"  # demo.py builds a ByteLevel BPE with GPT-2's pre-tokenizer (regex and all)
TENSOR_LINE = re.compile(r"^INFO:hf-to-gguf:(\S+),\s+torch\.\w+ -->")
GENERATION_MARKER = re.compile(r"\{%-?\s*(end)?generation\s*-?%\}")


@dataclass(frozen=True)
class GgufExport:
    """What an export wrote, and what a runtime will find in it."""

    path: Path
    type: str
    size_mb: float
    seconds: float
    merged: Path  # the merged folder it was converted from
    modelfile: Path | None
    modelfile_note: str
    metadata: dict[str, Any] = field(default_factory=dict)  # read back from the file (read_metadata)
    commands: dict[str, str] = field(default_factory=dict)  # ollama_create, ollama_run, llama_server...
    runtime_check: str = ""  # what running the file in llama.cpp showed (when llama-cpp-python is installed)


def gguf_dir(run: Run) -> Path:
    return exports_dir(run) / "gguf"


def gguf_file_name(run: Run, type_name: str) -> str:
    return f"{safe_name(run.name)}.{type_name}.gguf"


def list_gguf(run: Run | str | Path) -> list[Path]:
    """The GGUF files exported into the run's default folder, newest first."""
    folder = gguf_dir(open_run(run))
    files = [p for p in folder.glob("*.gguf") if p.is_file()] if folder.is_dir() else []
    return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)


def _target(run: Run, type_name: str, out: str | Path | None) -> Path:
    """Where the file goes: `out` as a folder or as a .gguf file name; never over a file we did not write."""
    name = gguf_file_name(run, type_name)
    if out is None:
        return gguf_dir(run) / name
    path = Path(out).expanduser().resolve()
    if path.is_dir() or str(out).endswith(("/", os.sep)) or path.suffix.lower() != ".gguf":
        path = path / name
    if path.exists() and not path.is_file():
        raise RunError(f"{path} exists and is not a file; choose another --out")
    if path.is_file() and not path.resolve().is_relative_to(exports_dir(run).resolve()):
        raise RunError(f"{path} already exists; choose another file name or remove it first (nothing was changed)")
    return path


def _fresh_merge(run: Run) -> Path | None:
    """<run>/exports/merged when it is a merge of the adapter as it is now, else None."""
    folder = exports_dir(run) / "merged"
    try:
        marker = json.loads((folder / MERGE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    weights = [p for p in run.adapter_dir.iterdir() if p.suffix in (".safetensors", ".bin")]
    newest = max((p.stat().st_mtime for p in weights), default=0.0)
    if not (folder / "config.json").is_file() or float(marker.get("created_at", 0)) < newest:
        return None
    return folder


def turn_end_token(tokenizer) -> int | None:
    """The special token the chat template closes an assistant turn with (ChatML's <|im_end|>, Llama 3's
    <|eot_id|>), found by rendering one; None without a template or when the turn ends in plain text."""
    if not isinstance(getattr(tokenizer, "chat_template", None), str):
        return None
    probe = "PROBE-ANSWER-7f3a"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": probe}], tokenize=False
        )
    except Exception:  # noqa: BLE001 - a template that refuses this conversation has no turn end to find
        return None
    after = text[text.rfind(probe) + len(probe) :] if probe in text else ""
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    special = set(getattr(tokenizer, "all_special_ids", [])) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    return next((int(i) for i in ids if i in special), None)


def _metadata_override(run: Run, cfg) -> dict[str, Any]:
    base = cfg.model_name_or_path
    base_entry: dict[str, Any] = {"name": "demo (finetune-studio's built-in model)" if is_demo(base) else base}
    if not is_demo(base) and is_hub_id(base) and not is_local_path(base):
        base_entry.update(organization=base.split("/")[0], repo_url=f"https://huggingface.co/{base}")
    return {
        "general.name": run.name,
        "general.basename": safe_name(run.name),
        "general.finetune": f"{cfg.objective}-{cfg.method}",
        "general.description": f"{base} fine-tuned with finetune-studio ({cfg.objective}, {cfg.method})",
        "general.quantized_by": "finetune-studio",
        "general.base_models": [base_entry],
    }


def _count_tensors(folder: Path) -> int:
    from safetensors import safe_open

    total = 0
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), "np") as handle:
            total += len(list(handle.keys()))
    return total


def convert_folder(run: Run, cfg, merged: Path, outtype: str, target: Path, step: Callable[[float, str], None]) -> None:
    """llama.cpp's converter on `merged` -> `target` (f16/bf16/q8_0), in a child process."""

    converter = converter_dir()
    override = target.with_name(target.name + ".metadata.json")
    override.write_text(json.dumps(_metadata_override(run, cfg), indent=1), encoding="utf-8")
    eot = turn_end_token(load_tokenizer(cfg, None, path=str(merged)))
    args = ["convert", str(converter)]
    if is_demo(cfg.model_name_or_path):
        args += ["--pre-tokenizer", DEMO_PRE_TOKENIZER]
    if eot is not None:
        args += ["--eot-token-id", str(eot)]
    args += ["--", str(merged), "--outfile", str(target), "--outtype", outtype, "--metadata", str(override)]
    total, seen = max(1, _count_tensors(merged)), [0]

    def on_line(line: str) -> None:
        if TENSOR_LINE.match(line):
            seen[0] += 1
            step(min(1.0, seen[0] / total), f"Converting to GGUF ({outtype}): tensor {seen[0]} of {total}")

    try:
        run_worker(args, "converting to GGUF", on_line)
    except WorkerFailed as exc:
        if exc.kind == "unknown-pre-tokenizer":
            raise ModelError(
                f"{cfg.model_name_or_path}: llama.cpp's converter (from llama-cpp-python {LLAMA_CPP_PYTHON_VERSION}) "
                "does not know this model's tokenizer (its pre-tokenizer is not in the converter's list), so it "
                "cannot write a GGUF that tokenizes like the model; the merged model (safetensors) still serves "
                "with vLLM or transformers"
            ) from None
        raise
    finally:
        override.unlink(missing_ok=True)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """What a runtime reads from a GGUF: name, base model, architecture, file type, chat template,
    BOS/EOS/EOT/pad token ids and their text, the tensor types."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def value(key: str):
        f = reader.fields.get(key)
        return f.contents() if f is not None else None

    tokens = value("tokenizer.ggml.tokens") or []
    out: dict[str, Any] = {
        "name": value("general.name"),
        "base_model": value("general.base_model.0.name"),
        "architecture": value("general.architecture"),
        "file_type": value("general.file_type"),
        "chat_template": value("tokenizer.chat_template"),
        "tokenizer_pre": value("tokenizer.ggml.pre"),
        "vocab_size": len(tokens),
        "tensor_types": sorted({t.tensor_type.name for t in reader.tensors}),
    }
    for role in ("bos", "eos", "eot", "padding"):
        token_id = value(f"tokenizer.ggml.{role}_token_id")
        out[f"{role}_token_id"] = token_id
        out[f"{role}_token"] = tokens[token_id] if isinstance(token_id, int) and token_id < len(tokens) else None
    return out


def check_metadata(meta: dict[str, Any], had_template: bool) -> None:
    """Refuse a file a runtime would misuse: no EOS, a missing or training-only chat template."""
    problems = []
    if meta.get("eos_token_id") is None:
        problems.append("it has no EOS token, so a runtime would not know where an answer ends")
    template = meta.get("chat_template")
    if had_template and not template:
        problems.append("the chat template did not reach the file")
    if isinstance(template, str) and GENERATION_MARKER.search(template):
        problems.append("its chat template still has {% generation %} markers, which llama.cpp cannot parse")
    if problems:
        raise ModelError("The GGUF was written but " + "; ".join(problems) + " (the file was removed)")


def _merged_for(run: Run, step: Callable[[float, str], None]) -> Path:
    folder = _fresh_merge(run)
    if folder is not None:
        step(1.0, f"Using the merged model in {folder.name}/")
        return folder
    return merge_adapter(run, None, progress=step)


def export_gguf(
    run: Run | str | Path, type_name: str, out: str | Path | None = None, progress: Progress | None = None
) -> GgufExport:
    """Merge (when needed), convert, quantize (K-quants), check and write the Modelfile; see the module doc."""

    run = open_run(run)
    if not run.has_adapter():
        raise RunError(f"{run.name}: {NO_ADAPTER_MESSAGE}")
    type_name, cfg = check_type(type_name), run.config()
    source_config = run.adapter_dir if cfg.method == "full" else None

    base_folder = source_config or Path(resolve_model_path(cfg.model_name_or_path, run.workspace))
    problem = refusal(type_name, base_folder if Path(base_folder).is_dir() else None)
    if problem:
        raise ModelError(problem)
    target = _target(run, type_name, out)
    start = time.perf_counter()

    def stage(low: float, high: float) -> Callable[[float, str], None]:
        return lambda fraction, message: progress and progress(low + (high - low) * float(fraction), message)

    stage(0.0, 0.02)(0.0, "Fetching llama.cpp's converter (first time only)")

    converter_dir()
    merged = _merged_for(run, stage(0.02, 0.45))
    problem = refusal(type_name, merged)  # a Hub base is only known once merged
    if problem:
        raise ModelError(problem)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    sixteen = target.with_name(f".{target.name}.f16-{os.getpid()}")
    try:
        if type_name in CONVERTER_TYPES:
            convert_folder(run, cfg, merged, type_name, partial, stage(0.45, 0.9))
        else:
            convert_folder(run, cfg, merged, _sixteen_bit(merged), sixteen, stage(0.45, 0.75))
            stage(0.75, 0.9)(0.0, f"Quantizing to {type_name} with llama.cpp")
            quantize(sixteen, partial, type_name)
        stage(0.9, 1.0)(0.0, "Checking the file's metadata")
        meta = read_metadata(partial)
        check_metadata(meta, had_template=_has_template(merged))
        runtime_check = run_check(partial, cfg, merged, type_name)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
        sixteen.unlink(missing_ok=True)
    modelfile, note = write_modelfile(run, merged, target)
    seconds = time.perf_counter() - start
    commands = serve_commands(target, modelfile, ollama_model_name(run.name, type_name))
    stage(0.9, 1.0)(1.0, f"Saved {target.name}")
    size = target.stat().st_size / 2**20
    return GgufExport(target, type_name, size, seconds, merged, modelfile, note, meta, commands, runtime_check)


def run_check(path: Path, cfg, merged: Path, type_name: str) -> str:
    """Run the file in llama.cpp for a few tokens (only where llama-cpp-python is installed); a crash or a
    load failure raises ModelError (the caller removes the file)."""

    if not llama_cpp_installed():
        return "not run in llama.cpp here (llama-cpp-python is not installed)"
    tokenizer = load_tokenizer(cfg, None, path=str(merged))
    messages = [{"role": "user", "content": "Hello"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    try:
        got = generate_in_llama_cpp(path, prompt, max_tokens=4)
    except WorkerFailed as exc:
        raise ModelError(
            f"The {type_name} file does not run in llama.cpp (llama-cpp-python {LLAMA_CPP_PYTHON_VERSION}): {exc}; "
            "it was removed. Choose another type (f16 runs wherever llama.cpp does)"
        ) from None
    return f"ran in llama.cpp (llama-cpp-python {LLAMA_CPP_PYTHON_VERSION}): {len(got['ids'])} tokens generated"


def _sixteen_bit(merged: Path) -> str:
    """The intermediate a K-quant is made from: bf16 for bf16 weights (f16 would clip them), else f16."""

    return "bf16" if saved_dtype(merged) == "bfloat16" else "f16"


def _has_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file():
        return True
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template"))
    except (OSError, ValueError):
        return False


def export_lora_gguf(run: Run | str | Path, out: str | Path | None = None, progress: Progress | None = None) -> Path:
    """The adapter alone as a GGUF LoRA (f16) for `llama-server -m BASE.gguf --lora FILE`."""

    run = open_run(run)
    cfg = run.config()
    if cfg.method == "full":
        raise RunError(f"{run.name} is a full fine-tune: it has no adapter to export; export the model as GGUF")
    if not run.has_adapter():
        raise RunError(f"{run.name}: {NO_ADAPTER_MESSAGE}")
    target = _target(run, "lora.f16", out)
    base = resolve_model_path(cfg.model_name_or_path, run.workspace)
    if progress:
        progress(0.1, "Converting the adapter to a GGUF LoRA")
    converter = converter_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    args = ["lora", str(converter), "--", str(run.adapter_dir), "--outfile", str(partial), "--outtype", "f16"]
    args += ["--base", base] if Path(base).is_dir() else ["--base-model-id", base]
    try:
        run_worker(args, "converting the adapter to a GGUF LoRA")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    if progress:
        progress(1.0, f"Saved {target.name}")
    return target

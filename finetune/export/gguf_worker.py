"""What runs in a child process during a GGUF export: llama.cpp's converter, llama.cpp's quantizer and a
greedy generation in llama.cpp. `python -m finetune.export.gguf_worker COMMAND ...`

A child process, because the converter is a script of its own (argv, logging, sys.exit) and because
llama.cpp is native code: a crash (the segfault the issue reported for tiny models) kills the child,
and the parent turns its exit status into a message instead of dying with it. The last line a failing
command writes to stderr starts with ERROR_PREFIX and says what went wrong in one sentence.

    convert CONVERTER_DIR [--pre-tokenizer NAME] [--eot-token-id N] -- <convert_hf_to_gguf.py arguments>
    lora CONVERTER_DIR -- <convert_lora_to_gguf.py arguments>
    quantize IN.gguf OUT.gguf TYPE            (llama-cpp-python's llama_model_quantize)
    generate FILE.gguf REQUEST_JSON           (prints one JSON line: the prompt's token ids, the answer)

The converter is called, never copied: the only changes are two hooks set before it runs, both
through its public classes. `--pre-tokenizer` names the pre-tokenizer of a tokenizer llama.cpp has no
hash for (the built-in demo's ByteLevel pre-tokenizer is GPT-2's); `--eot-token-id` records the token
a chat turn ends with, so every runtime stops there even when it is not the EOS token.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ERROR_PREFIX = "FINETUNE-GGUF-ERROR:"
UNKNOWN_PRE_TOKENIZER = "unknown-pre-tokenizer"
EXIT_KNOWN_FAILURE = 3


def fail(kind: str, message: str) -> None:
    print(f"{ERROR_PREFIX} {kind}: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_KNOWN_FAILURE)


def _use_converter(folder: str) -> None:
    sys.path[:0] = [folder, str(Path(folder) / "gguf-py")]


def convert(folder: str, pre_tokenizer: str | None, eot_token_id: int | None, args: list[str]) -> None:
    _use_converter(folder)
    import convert_hf_to_gguf as converter_cli
    import gguf
    from conversion import base

    if pre_tokenizer:
        base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre_tokenizer
    if eot_token_id is not None:
        add_to_gguf = gguf.SpecialVocab.add_to_gguf

        def add_with_eot(self, gw, quiet=False):
            add_to_gguf(self, gw, quiet)
            if "eot" not in self.special_token_ids:  # the tokenizer's own EOT wins
                gw.add_eot_token_id(eot_token_id)

        gguf.SpecialVocab.add_to_gguf = add_with_eot
    sys.argv = ["convert_hf_to_gguf.py", *args]
    try:
        converter_cli.main()
    except NotImplementedError as exc:
        if "pre-tokenizer was not recognized" in str(exc):
            fail(UNKNOWN_PRE_TOKENIZER, "llama.cpp's converter does not know this tokenizer's pre-tokenizer")
        fail("not-supported", str(exc).splitlines()[0][:300])
    except ModuleNotFoundError as exc:
        fail("missing-module", f"the converter needs the Python package {exc.name!r}")


def convert_lora(folder: str, args: list[str]) -> None:
    _use_converter(folder)
    import runpy

    sys.argv = ["convert_lora_to_gguf.py", *args]
    try:
        runpy.run_path(str(Path(folder) / "convert_lora_to_gguf.py"), run_name="__main__")
    except NotImplementedError as exc:
        fail("not-supported", str(exc).splitlines()[0][:300])


# llama.cpp (llama-cpp-python) ----------------------------------------------------------------------
def quantize(source: str, target: str, type_name: str) -> None:
    import ctypes

    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{type_name.upper()}", None)
    if ftype is None:
        fail("unknown-type", f"llama.cpp has no quantization type {type_name}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = max(1, (os.cpu_count() or 1))
    status = llama_cpp.llama_model_quantize(source.encode(), target.encode(), ctypes.byref(params))
    if status != 0:
        fail("quantize-failed", f"llama_model_quantize returned {status}")


def generate(path: str, request_json: str) -> None:
    """Greedy generation in llama.cpp: {"prompt": text, "max_tokens": n, "lora": path?} -> {"prompt_ids", "ids", "text"}.
    The prompt is tokenized by the GGUF's own tokenizer (special tokens parsed), so a wrong vocabulary
    or pre-tokenizer shows as different prompt ids."""
    import llama_cpp

    request = json.loads(request_json)
    lora = {"lora_path": request["lora"]} if request.get("lora") else {}  # a GGUF LoRA on top (llama.cpp's --lora)
    llm = llama_cpp.Llama(model_path=path, n_ctx=int(request.get("n_ctx", 512)), n_threads=1, verbose=False, **lora)
    prompt_ids = llm.tokenize(request["prompt"].encode("utf-8"), add_bos=bool(request.get("add_bos")), special=True)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    ids: list[int] = []
    for token in llm.generate(prompt_ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
        if llama_cpp.llama_vocab_is_eog(vocab, token):  # end of generation: EOS, EOT, ...
            break
        ids.append(int(token))
        if len(ids) >= int(request.get("max_tokens", 32)):
            break
    text = llm.detokenize(ids, special=False).decode("utf-8", errors="replace")
    print(json.dumps({"prompt_ids": list(map(int, prompt_ids)), "ids": ids, "text": text}), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m finetune.export.gguf_worker")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("convert")
    p.add_argument("converter")
    p.add_argument("--pre-tokenizer")
    p.add_argument("--eot-token-id", type=int)
    p = sub.add_parser("lora")
    p.add_argument("converter")
    p = sub.add_parser("quantize")
    p.add_argument("source")
    p.add_argument("target")
    p.add_argument("type")
    p = sub.add_parser("generate")
    p.add_argument("path")
    p.add_argument("request")
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    ns, rest = parser.parse_args(argv[:cut]), argv[cut + 1 :]  # after "--": the converter's own arguments
    if ns.command == "convert":
        convert(ns.converter, ns.pre_tokenizer, ns.eot_token_id, rest)
    elif ns.command == "lora":
        convert_lora(ns.converter, rest)
    elif ns.command == "quantize":
        quantize(ns.source, ns.target, ns.type)
    else:
        generate(ns.path, ns.request)


if __name__ == "__main__":
    main()

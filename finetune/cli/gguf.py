"""`finetune export --gguf TYPE` / `--lora-gguf`, and `finetune gguf-converter` (fetch llama.cpp's converter
ahead of time: a Docker image build, or a host that will be offline).

Wired in `finetune/cli/main.py`: `add_export_arguments(parser)` on the export subcommand, `export(args,
desk)` when one of its GGUF options is given, `register_cli(subparsers)` for gguf-converter. Progress,
size, time, the Modelfile and the serving commands go to stderr; the file's path is the last line on stdout.
"""

from __future__ import annotations

import argparse
import sys

from finetune.errors import FinetuneError
from finetune.export.gguf_types import GGUF_TYPES, check_type
from finetune.studio import ExportDesk


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gguf",
        metavar="TYPE",
        type=str.lower,
        help=f"write a GGUF for llama.cpp / Ollama / LM Studio (merging first): {', '.join(GGUF_TYPES)}; "
        "K-quants need the .[gguf] extra",
    )
    parser.add_argument(
        "--lora-gguf", action="store_true", help="write the adapter alone as a GGUF LoRA (llama.cpp's --lora)"
    )


def wants_gguf(args) -> bool:
    return bool(getattr(args, "gguf", None) or getattr(args, "lora_gguf", False))


class _Bar:
    """A tqdm bar on stderr, driven by (fraction, message) callbacks."""

    def __init__(self, what: str):
        from tqdm import tqdm

        self.bar = tqdm(total=100, desc=what, unit="%", file=sys.stderr, bar_format="{desc} {bar} {percentage:3.0f}%")

    def __call__(self, fraction: float, message: str) -> None:
        self.bar.n = round(100 * max(0.0, min(1.0, float(fraction))), 1)
        self.bar.set_description_str(message[:70], refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def export(args, desk) -> int:
    if args.gguf:
        args.gguf = check_type(args.gguf)  # before any bar is drawn
    if getattr(args, "push_to_hub", None):
        raise FinetuneError("--push-to-hub uploads a model folder; upload a GGUF file with `hf upload REPO FILE`")
    out = args.out or None
    if args.lora_gguf:
        bar = _Bar("GGUF LoRA")
        try:
            path = desk.lora_gguf(args.run, bar, out=out)
        finally:
            bar.close()
        print(
            f"GGUF LoRA: {path.stat().st_size / 2**20:,.1f} MB; use: llama-server -m BASE.gguf --lora {path}",
            file=sys.stderr,
        )
        if not args.gguf:
            print(path)
            return 0
    bar = _Bar(f"GGUF {args.gguf}")
    try:
        result = desk.gguf(args.run, args.gguf, bar, out=out)
    finally:
        bar.close()
    meta = result.metadata
    print(f"{result.type}: {result.size_mb:,.1f} MB in {result.seconds:.1f} s", file=sys.stderr)
    print(
        f"metadata: name {meta.get('name')!r}, base model {meta.get('base_model')!r}, EOS {meta.get('eos_token')!r}, "
        f"end of turn {meta.get('eot_token')!r}, chat template {'yes' if meta.get('chat_template') else 'none'}",
        file=sys.stderr,
    )
    print(f"Modelfile: {result.modelfile}" if result.modelfile else result.modelfile_note, file=sys.stderr)
    print(f"llama.cpp: {result.runtime_check}", file=sys.stderr)
    for command in result.commands.values():
        print(f"  {command}", file=sys.stderr)
    print(result.path)
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "gguf-converter",
        help="fetch llama.cpp's GGUF converter now (pip download of llama-cpp-python's sdist) and print where",
    )
    p.add_argument("--sdist", help="unpack this downloaded llama_cpp_python-VERSION.tar.gz instead (offline hosts)")
    p.add_argument("--to", help="put it in this folder (then set FINETUNE_GGUF_CONVERTER to it), not the user cache")
    p.set_defaults(func=_cmd_converter)


def _cmd_converter(args) -> int:
    print(ExportDesk.gguf_converter(args.sdist, args.to))
    return 0

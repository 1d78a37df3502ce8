"""The `bench` subcommand: `register_cli(subparsers)` adds it to `finetune`; `main(argv)` runs it alone."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from finetune.bench.report import markdown, text
from finetune.jsontext import dumps


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default="demo", help="demo, a bundled shape (random weights, e.g. llama-3.2-1b), a folder or Hub id"
    )
    p.add_argument("--data", help="a dataset file (default: generated chat rows of 20..max_length tokens)")
    p.add_argument("--steps", type=int, default=5, help="measured optimizer steps per repeat (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up steps before measuring (default 1)")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repeats; medians are reported (default 2)")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=4, help="per-device batch (default 4, as the app)")
    p.add_argument("--grad-accum", type=int, default=4, help="gradient accumulation (default 4, as the app)")
    p.add_argument("--rows", type=int, default=400, help="rows of the generated dataset")
    p.add_argument("--quantization", default="4bit", choices=["4bit", "8bit", "none"])
    p.add_argument("--method", default="lora", choices=["lora", "dora", "full"])
    p.add_argument(
        "--objective",
        default="sft",
        choices=["sft", "dpo"],
        help="sft (default), or dpo: the engine's DPO against a plain TRL DPO script on generated (or --data) pairs",
    )
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--ablate", action="store_true", help="also run each fast-path feature switched the other way")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: auto)")
    p.add_argument("--peak-tflops", type=float, help="GPU dense bf16 peak for MFU (default: from the GPU name)")
    p.add_argument("--no-unsloth", action="store_true", help="leave out the Unsloth arm even when it is installed")
    p.add_argument("--profile", metavar="DIR", help="also write torch.profiler tables of the engine's steps to DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--save", metavar="PREFIX", help="also write PREFIX.json and PREFIX.md")
    p.add_argument("--keep", action="store_true", help="keep the scratch workspace (its path is logged)")
    p.add_argument("--workspace", help="workspace whose cache/ is used (default: $FINETUNE_WORKSPACE or ./workspace)")


def cmd_bench(args) -> int:
    from finetune.bench.runner import BenchOptions, run_bench  # pulls transformers: only `finetune bench` needs it

    options = BenchOptions(
        model=args.model,
        data=args.data,
        steps=args.steps,
        warmup=args.warmup,
        repeats=args.repeats,
        max_length=args.max_length,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        rows=args.rows,
        quantization=args.quantization,
        method=args.method,
        objective=args.objective,
        lora_r=args.lora_r,
        ablate=args.ablate,
        threads=args.threads,
        peak_tflops=args.peak_tflops,
        workspace=args.workspace,
        keep=args.keep,
        unsloth=not args.no_unsloth,
        profile=args.profile,
        command="finetune bench " + " ".join(getattr(args, "argv", None) or sys.argv[2:]),
    )
    with contextlib.redirect_stdout(sys.stderr):  # library prints must not mix with the JSON on stdout
        result = run_bench(options)
    if args.save:
        prefix = Path(args.save)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        # appended, not with_suffix: a prefix like gpu_qwen2.5-0.5b keeps its dots
        Path(f"{prefix}.json").write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
        Path(f"{prefix}.md").write_text(markdown(result), encoding="utf-8")
    if args.json:
        print(dumps(result, indent=1))
    else:
        print(text(result))
    return 0


def register_cli(subparsers) -> argparse.ArgumentParser:
    """Add `finetune bench` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "bench", help="tokens/s, step time and peak memory: our engine vs TRL's defaults, a seed script and Unsloth"
    )
    add_arguments(p)
    p.set_defaults(func=cmd_bench)
    return p

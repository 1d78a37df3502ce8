"""`finetune ...`: everything the app does, headless, through the same service (finetune.studio).

Errors are one clear paragraph on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from finetune.cli import gguf
from finetune.cli.bench import register_cli as register_bench_cli
from finetune.cli.estimate import register_cli as register_estimate_cli
from finetune.cli.evaluate import register_cli as register_evaluate_cli
from finetune.cli.gguf import add_export_arguments as add_gguf_arguments
from finetune.cli.gguf import register_cli as register_gguf_cli
from finetune.config import RunConfig
from finetune.errors import FinetuneError
from finetune.incidents import unexpected
from finetune.jsontext import dumps
from finetune.studio import GenerationSettings, Studio


def _add_workspace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", help="workspace folder (default: $FINETUNE_WORKSPACE or ./workspace)")


def _studio(args, detect: bool = False):
    """The service for this command: any path may be given on a command line (no app restrictions)."""

    workspace = getattr(args, "workspace", None)
    return Studio.open(workspace, restrict_paths=False) if detect else Studio(workspace, restrict_paths=False)


def _print_json(data) -> None:
    print(dumps(data))


# --- validate ---------------------------------------------------------------------
def cmd_validate(args) -> int:
    desk = _studio(args).data
    report = desk.report(args.data, args.format)
    stats = desk.length_stats(report, args.model, args.max_length)
    stats.pop("lengths", None)
    summary = {**report.to_dict(), "tokenizer": args.model, "token_stats": stats}
    if args.json:
        _print_json(summary)
        return 0
    print(f"file:      {report.source}")
    print(f"format:    {report.format}")
    print(f"rows:      {report.total_rows} read, {len(report.rows)} valid, {len(report.skipped)} skipped")
    for issue in report.skipped[:50]:
        print(f"  row {issue.row}: {issue.reason}")
    if len(report.skipped) > 50:
        print(f"  ... and {len(report.skipped) - 50} more")
    for warning in report.warnings:
        print(f"warning:   {warning}")
    if report.shape in ("preference", "unpaired_preference"):
        kind = "conversations" if isinstance(report.rows[0]["prompt"], list) else "plain text"
        print(
            f"pairs:     {kind}; train with --set objective="
            + ("dpo (or orpo, kto)" if report.shape == "preference" else "kto")
        )
        print("           token counts: prompt + the longer answer")
    if report.shape == "prompts":  # GRPO: completions are sampled during training
        answers = "with an answer column" if "answer" in report.rows[0] else "without an answer column"
        print(f"prompts:   {answers}; train with --set objective=grpo --set reward_functions=...")
        print("           token counts: the prompt as generation starts (completions come on top)")
    print(f"tokens ({args.model} tokenizer, chat template applied):")
    print("  " + ", ".join(f"{k}={stats[k]:.0f}" for k in ("min", "mean", "p50", "p90", "p95", "p99", "max")))
    if stats.get("sampled"):
        print(f"  measured on a random sample of {stats['count']:,} of the {stats['rows']:,} valid rows")
    print(f"  {stats['truncated']} of {stats['count']} examples exceed max_length={args.max_length}")
    print(f"  suggested max_length: {stats['suggested_max_length']}")
    return 0


# --- train ------------------------------------------------------------------------
def build_train_config(args):
    """Defaults <- preset <- config file <- explicit flags <- --set, in that order."""

    config = RunConfig()
    if args.preset:
        config = Studio.apply_preset(config, args.preset)
    if args.config:
        config = RunConfig.from_yaml(args.config, base=config)
    flags = {
        "model_name_or_path": args.model,
        "dataset_path": args.data,
        "eval_dataset_path": args.val_data,
        "output_dir": args.output_dir,
        "max_steps": args.max_steps,
        "run_name": args.name,
        "start_from_run": args.from_run,
    }
    config = config.replace(**{k: v for k, v in flags.items() if v is not None})
    return config.with_overrides(args.set or [])


def _library_logs_to_stderr() -> None:
    """DeepSpeed's logger writes to stdout, where the commands print only their result (the run folder,
    the merged folder, JSON): when it is installed (transformers and accelerate import it on the way),
    import it first with stdout pointing at stderr, so its handler writes there."""
    import contextlib
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        return
    with contextlib.redirect_stdout(sys.stderr):
        import deepspeed.utils.logging  # noqa: F401


def cmd_train(args) -> int:
    studio = _studio(args)
    if args.resume:
        overrides = ([f"max_steps={args.max_steps}"] if args.max_steps is not None else []) + (args.set or [])
        run = studio.resume(args.resume, overrides)
    else:
        if not (args.config or args.model or args.data or args.preset):
            raise FinetuneError("finetune train needs --config FILE, or --model M --data FILE (or --preset NAME).")
        run = studio.start(build_train_config(args))
    # one write of a whole line: under `accelerate launch` every rank prints this to one stderr
    sys.stderr.write(f"run folder: {run.path}\n")
    sys.stderr.flush()
    return _follow(studio, run, quiet=args.quiet)


def _follow(studio, run, quiet: bool = False) -> int:
    """Show a progress bar until the job ends; Ctrl-C and SIGTERM (docker stop, schedulers) stop
    gracefully: a checkpoint of the current step and the adapter are saved."""
    import signal
    import threading

    from tqdm import tqdm

    def on_sigterm(signum, frame):
        print("\nSIGTERM: stopping after the current step, saving a checkpoint...", file=sys.stderr, flush=True)
        studio.stop("SIGTERM")

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    bar = None if quiet else tqdm(total=0, unit="step", dynamic_ncols=True, file=sys.stderr)
    try:
        while studio.training_now() == run.name:
            try:
                studio.wait(0.5)
            except KeyboardInterrupt:
                print("\nStopping after the current step (Ctrl-C again to abort)...", file=sys.stderr)
                studio.stop("Ctrl-C")
                studio.wait()
            if bar is not None:
                p = studio.progress(run.name)
                bar.total = p["total_steps"] or bar.total
                bar.n = p["step"]
                tps = p.get("tokens_per_s")
                bar.set_description(p["state"])
                bar.set_postfix_str(f"{tps:.0f} tok/s" if tps else "")
                bar.refresh()
    finally:
        if bar is not None:
            bar.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    final = studio.progress(run.name)
    state = final["state"]
    print(f"{state}: {final['message']}", file=sys.stderr)
    print(run.path)
    return 0 if state in ("done", "stopped") else 1


# --- compare / export / runs ------------------------------------------------------
def cmd_compare(args) -> int:
    settings = GenerationSettings(
        system_prompt=args.system or "",
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    result = _studio(args).judge.compare(args.run, args.prompt, settings)
    if args.json:
        _print_json({"prompt": args.prompt, "base": result.base, "finetuned": result.finetuned})
    else:
        print("=== base ===")
        print(result.base)
        print("=== fine-tuned ===")
        print(result.finetuned)
    return 0


def cmd_export(args) -> int:
    desk = _studio(args).export
    if gguf.wants_gguf(args):
        return gguf.export(args, desk)
    run = desk.studio.run(args.run)
    out = Path(args.out) if args.out else None
    if args.merge:

        def progress(fraction: float, message: str) -> None:
            print(f"[{fraction:4.0%}] {message}", file=sys.stderr)

        folder = desk.merge(args.run, progress, out=out).folder
        print(folder)
    else:
        target = (out / f"{run.name}-adapter.zip") if out and (out.is_dir() or not out.suffix) else out
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
        print(desk.zip_adapter(args.run, target))
    if args.push_to_hub:
        merged = {"merged": True, "folder": folder} if args.merge else {"merged": False}
        print(desk.push(args.run, args.push_to_hub, os.environ.get("HF_TOKEN"), **merged))
    return 0


def cmd_runs(args) -> int:
    runs = _studio(args).runs()
    if args.json:
        _print_json([r.to_dict() for r in runs])
        return 0
    if not runs:
        print("no runs yet")
        return 0
    print(f"{'name':40} {'state':12} {'steps':>11} {'loss':>8}  model")
    for r in runs:
        loss = f"{r.final_loss:.4f}" if r.final_loss is not None else "-"
        print(f"{r.name:40} {r.state:12} {r.step:>5}/{r.total_steps:<5} {loss:>8}  {r.model}")
        for line in r.damaged:  # a damaged run is listed, what could not be read named under it
            print(f"  damaged: {line}")
    damaged = sum(1 for r in runs if r.damaged)
    if damaged:
        print(f"{damaged} of {len(runs)} runs have damaged files (named above); the rest of each is usable.")
    return 0


def cmd_presets(args) -> int:
    for preset in Studio.presets():
        print(f"{preset.name:34} {preset.description}")
    return 0


# --- parser -----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finetune", description="Fine-tune LLMs with QLoRA/LoRA from the command line."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a dataset file and print its format, problems and token statistics")
    p.add_argument("data", help="a .jsonl/.json/.csv/.parquet file or a Hub dataset id")
    p.add_argument(
        "--format",
        default="auto",
        help="auto, messages, sharegpt, alpaca, prompt_completion, text, preference, unpaired_preference",
    )
    p.add_argument("--model", default="demo", help="tokenizer for the token statistics (default: demo)")
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--json", action="store_true")
    _add_workspace(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("train", help="train an adapter (prints the run folder)")
    p.add_argument("--config", help="a YAML RunConfig")
    p.add_argument("--model", help="base model: Hub id, local folder or demo")
    p.add_argument("--data", help="training data file")
    p.add_argument("--val-data", help="validation data file")
    p.add_argument("--output-dir", help="run folder (default: <workspace>/runs/<name>)")
    p.add_argument("--name", help="run name")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--preset", help="a preset from presets/ (see `finetune presets`)")
    p.add_argument(
        "--from-run",
        metavar="RUN",
        help="start from the adapter of this finished run (name or folder), e.g. --set objective=dpo after an SFT run",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any RunConfig field (repeatable)")
    p.add_argument(
        "--resume", metavar="RUN_DIR", help="continue an interrupted or stopped run from its last checkpoint"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_workspace(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compare", help="answer one prompt with the base model and with the adapter")
    p.add_argument("--run", required=True)
    p.add_argument("--prompt", required=True)
    p.add_argument("--system", default="")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    _add_workspace(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("export", help="zip the adapter, or merge it into a 16-bit model folder")
    p.add_argument("--run", required=True)
    p.add_argument("--out", help="output folder (merge) or zip path/folder")
    p.add_argument("--merge", action="store_true", help="merge into the base model and save a full model")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="push the result to the Hub (token from HF_TOKEN)")

    add_gguf_arguments(p)
    _add_workspace(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("runs", help="list the runs in the workspace")
    p.add_argument("--json", action="store_true")
    _add_workspace(p)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("presets", help="list the memory presets")
    p.set_defaults(func=cmd_presets)

    register_evaluate_cli(sub)
    register_estimate_cli(sub)
    register_bench_cli(sub)

    register_gguf_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    if args.command not in ("runs", "presets"):  # the commands that load no model stay quick
        _library_logs_to_stderr()
    try:
        return args.func(args)
    except FinetuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line here, the traceback in the error log
        print(f"error: {unexpected(exc, f'running finetune {args.command}')}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

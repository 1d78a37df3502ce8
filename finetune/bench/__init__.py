"""`finetune bench`: our engine against a plain TRL script on the same settings, in one process.

Reports real (non-padding) tokens per second, step time, peak memory and (on a GPU) model FLOPs
utilization for both, their ratio, and with `--ablate` one row per fast-path feature switched the
other way. See bench/README.md for the commands behind bench/results/.

Public API: `register_cli(subparsers)` (the `bench` subcommand), `main(argv)`, `run_bench(options)`,
`BenchOptions`, `make_rows` (the variable-length dataset).
"""

import importlib

__all__ = ["BenchOptions", "main", "make_rows", "register_cli", "run_bench"]
_HOMES = {"main": "cli", "register_cli": "cli", "make_rows": "data", "BenchOptions": "runner", "run_bench": "runner"}


def __getattr__(name: str):
    """Import lazily: `finetune --help` must not pay for torch/transformers through the bench."""
    if name in _HOMES:
        return getattr(importlib.import_module(f"finetune.bench.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'finetune.bench' has no attribute {name!r}")

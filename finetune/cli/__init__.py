"""`finetune ...`: the command line. `main` parses and dispatches (cli/main.py); each subcommand
family has a module here: `estimate`, `evaluate`, `bench` (each `register_cli(subparsers)`)."""

from finetune.cli.main import main

__all__ = ["main"]

"""finetune studio: `python app.py` serves the web app on http://127.0.0.1:7860.

Flags win over GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; FINETUNE_AUTH=user:pass[,user2:pass2]
turns on a login; FINETUNE_MAX_FILE_SIZE (or --max-file-size) caps uploads (default 500mb).
"""

from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="app.py", description="finetune studio: no-code LLM fine-tuning in the browser")
    p.add_argument("--host", help="address to bind (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    p.add_argument("--share", action="store_true", help="also serve on a public gradio.live link (set FINETUNE_AUTH!)")
    p.add_argument("--workspace", help="workspace folder (default: $FINETUNE_WORKSPACE or ./workspace)")
    p.add_argument(
        "--max-file-size", help="upload size limit, e.g. 500mb or 2gb (default: $FINETUNE_MAX_FILE_SIZE or 500mb)"
    )
    p.add_argument(
        "--allow-custom-rewards",
        action="store_true",
        help="let GRPO runs use a custom reward file (Python code that runs in this server: only for users you trust)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.workspace:
        os.environ["FINETUNE_WORKSPACE"] = args.workspace  # the engine's default for anything not told otherwise
    from finetune.errors import FinetuneError
    from finetune.studio import Studio

    try:
        studio = Studio.open(args.workspace)  # the engine service; the hardware is detected once
    except FinetuneError as exc:  # e.g. a path under a regular file, a read-only disk
        print(f"error: {exc}", file=sys.stderr)
        return 2
    studio.rewards.allow_custom_code(args.allow_custom_rewards)  # GRPO's custom reward files run code
    # uploads land inside the workspace (not a shared /tmp), before gradio reads this at import
    workspace = studio.workspace
    os.environ.setdefault("GRADIO_TEMP_DIR", str(workspace / ".gradio-uploads"))
    from ui import build_app
    from ui.launch import AUTH_ENV, exposure_warning, launch_kwargs, parse_auth, resolve_host_port, warn_stderr

    try:
        auth = parse_auth(os.environ.get(AUTH_ENV))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    host, port = resolve_host_port(args.host, args.port)
    warning = exposure_warning(host, auth, args.share)
    warn_stderr(warning)
    demo = build_app(exposure_warning=warning, studio=studio)
    stop_training_on_sigterm(studio)
    demo.launch(
        **launch_kwargs(workspace, host=host, port=port, share=args.share, auth=auth, max_file_size=args.max_file_size)
    )
    return 0


SIGTERM_GRACE_S = 8.0  # docker stop and most schedulers wait 10 s before SIGKILL


def stop_training_on_sigterm(studio, grace_s: float = SIGTERM_GRACE_S) -> None:
    """On SIGTERM, a run training in this process stops at the next step and saves a checkpoint of
    it and the adapter (waiting up to `grace_s`), then the server closes as on Ctrl-C."""
    import signal

    def on_sigterm(signum, frame):
        name = studio.training_now()
        if name is not None:
            print(f"SIGTERM: stopping the run {name} and saving a checkpoint...", file=sys.stderr, flush=True)
            studio.stop("SIGTERM", wait_s=grace_s)
        raise KeyboardInterrupt  # Gradio's launch() closes the server on it

    signal.signal(signal.SIGTERM, on_sigterm)


if __name__ == "__main__":
    sys.exit(main())

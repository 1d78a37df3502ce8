"""Running `finetune.export.gguf_worker` in a child process and turning how it ended into a message.

Every GGUF step that runs llama.cpp's code (converter, quantizer, llama.cpp itself) goes through
`run_worker`: the parent survives a crash of the child (a segfault in native code) and says which
signal ended it, and the worker's own one-line error (gguf_worker.ERROR_PREFIX) becomes the message.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from finetune.errors import ModelError
from finetune.export.gguf_worker import ERROR_PREFIX

TIMEOUT_S = 6 * 3600  # a 70B conversion on a slow disk; a hung child is still ended
LLAMA_CPP_MISSING = (
    "needs llama-cpp-python (llama.cpp's quantizer and runtime), which compiles from source: "
    'pip install torch==2.13.0 -e ".[gguf]" (11 to 40 minutes on 2 CPU cores; a C++ compiler and cmake)'
)


@dataclass(frozen=True)
class WorkerResult:
    stdout: str
    stderr_tail: list[str]


class WorkerFailed(ModelError):
    """A GGUF step failed; `kind` is the worker's failure kind ("crash", "unknown-pre-tokenizer", ...)."""

    def __init__(self, message: str, kind: str = "failed"):
        super().__init__(message)
        self.kind = kind


def llama_cpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def run_worker(
    args: list[str], what: str, on_line: Callable[[str], None] | None = None, timeout: float = TIMEOUT_S
) -> WorkerResult:
    """Run `python -m finetune.export.gguf_worker ARGS`; each stderr line goes to `on_line` as it comes.
    Raises WorkerFailed naming `what` (e.g. "converting to GGUF") and the reason."""
    return run_child([sys.executable, "-m", "finetune.export.gguf_worker", *args], what, on_line, timeout)


def run_child(
    command: list[str], what: str, on_line: Callable[[str], None] | None = None, timeout: float = TIMEOUT_S
) -> WorkerResult:
    """Run `command`, reading its stderr line by line; how it ended becomes a WorkerFailed (see run_worker)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
    env.pop("NO_LOCAL_GGUF", None)  # the converter must use its own gguf-py, the version it was written for
    try:
        child = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
            env=env, start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        raise WorkerFailed(f"{what}: cannot start {sys.executable}: {exc}") from None
    tail: list[str] = []
    out: list[str] = []

    def read_stdout() -> None:
        out.append(child.stdout.read())

    reader = threading.Thread(target=read_stdout, daemon=True)
    reader.start()
    timer = threading.Timer(timeout, child.kill)
    timer.start()
    try:
        for line in child.stderr:
            line = line.rstrip("\n")
            tail[:] = [*tail[-39:], line]
            if on_line is not None:
                on_line(line)
        child.wait()
    finally:
        timer.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()
        reader.join(timeout=5)
    if child.returncode != 0:
        raise _failure(what, child.returncode, tail)
    return WorkerResult("".join(out), tail)


def _failure(what: str, code: int, tail: list[str]) -> WorkerFailed:
    own = [line for line in tail if line.startswith(ERROR_PREFIX)]
    if own:
        kind, _, message = own[-1][len(ERROR_PREFIX) :].strip().partition(": ")
        return WorkerFailed(f"{what} failed: {message}", kind)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return WorkerFailed(f"{what} crashed the llama.cpp process ({name}); {_last_lines(tail)}", "crash")
    return WorkerFailed(f"{what} failed (exit status {code}): {_last_lines(tail)}")


def _last_lines(tail: list[str]) -> str:
    lines = [line.strip() for line in tail if line.strip() and not line.lstrip().startswith(("File ", "^"))]
    return " / ".join(lines[-2:])[:400] or "no output"


# llama.cpp steps -----------------------------------------------------------------------------------------
def quantize(source: Path, target: Path, type_name: str) -> None:
    """llama_model_quantize SOURCE (a 16-bit GGUF) -> TARGET in `type_name` (q4_k_m, ...)."""
    if not llama_cpp_installed():
        raise WorkerFailed(f"{type_name} {LLAMA_CPP_MISSING}", "missing-quantizer")
    run_worker(["quantize", str(source), str(target), type_name], f"quantizing to {type_name}")


def generate_in_llama_cpp(
    path: Path, prompt: str, max_tokens: int = 32, add_bos: bool = False, lora: Path | None = None
) -> dict:
    """Greedy answer of the GGUF at `path` (with the GGUF LoRA `lora` on top) in llama.cpp, in a child
    process: {"prompt_ids": [...], "ids": [...], "text": "..."}. A crash raises WorkerFailed(kind="crash")."""
    if not llama_cpp_installed():
        raise WorkerFailed(f"running a GGUF in llama.cpp {LLAMA_CPP_MISSING}", "missing-runtime")
    request = {"prompt": prompt, "max_tokens": int(max_tokens), "add_bos": bool(add_bos)}
    request = json.dumps({**request, "lora": str(lora)} if lora else request)
    result = run_worker(["generate", str(path), request], f"running {path.name} in llama.cpp", timeout=600)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise WorkerFailed(f"running {path.name} in llama.cpp printed no answer")
    return json.loads(lines[-1])

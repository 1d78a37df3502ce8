"""The Ollama side of a GGUF export: a Modelfile beside the file, and the commands that serve it.

The Modelfile's TEMPLATE and stop PARAMETERs come from `serving.ollama_modelfile` (the export's own
chat template, proven to render like the Go template). Its SYSTEM is the system prompt the run
trained with: the one system message most training conversations carried (more than half of them),
else the chat template's own default; rows with varied system prompts give none (a note says so).
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from pathlib import Path

from finetune.data import prepare_data
from finetune.errors import FinetuneError
from finetune.export.serving import ollama_modelfile
from finetune.runs import Run

MAJORITY = 0.5  # a system prompt carried by more than this share of the training rows is "the" one
OLLAMA_NAME_RE = re.compile(r"[^a-z0-9._-]+")


def trained_system_prompt(run: Run) -> tuple[str | None, str]:
    """(the system prompt most training rows carried, or None; a note on how it was found)."""

    try:
        rows = prepare_data(run.config()).train_rows
    except (FinetuneError, OSError) as exc:
        return None, f"the training data could not be read again ({str(exc).splitlines()[0][:120]})"
    conversations = [row["messages"] for row in rows if isinstance(row.get("messages"), list)]
    if not conversations:
        return None, "the training rows are not conversations"
    systems = Counter(
        str(messages[0].get("content", ""))
        for messages in conversations
        if messages and isinstance(messages[0], dict) and messages[0].get("role") == "system"
    )
    if not systems:
        return None, "no training row had a system message"
    text, count = systems.most_common(1)[0]
    if count <= MAJORITY * len(conversations):
        varied = f"{len(systems)} different system messages, " if len(systems) > 1 else "a system message in "
        return None, f"the training rows carried {varied}only {count} of {len(conversations)} rows: none in most"
    return text, f"the system message of {count} of the {len(conversations)} training rows"


def ollama_model_name(run_name: str, type_name: str) -> str:
    """`<run>:<type>`, in the characters Ollama accepts in a name and a tag."""
    name = OLLAMA_NAME_RE.sub("-", run_name.lower()).strip("-._") or "finetuned"
    return f"{name[:80]}:{type_name}"


def write_modelfile(run: Run, merged_dir: Path, gguf_path: Path) -> tuple[Path | None, str]:
    """Write `<file>.Modelfile` beside the GGUF; (its path, a note). No file when the chat template cannot
    be reproduced as an Ollama template (the note says why; llama-server --jinja still reads the GGUF's)."""

    system, found = trained_system_prompt(run)
    try:
        text = ollama_modelfile(merged_dir, gguf_path.name, system=system)
    except ValueError as exc:
        return None, f"no Ollama Modelfile: {exc}"
    path = gguf_path.with_name(gguf_path.name.removesuffix(".gguf") + ".Modelfile")
    path.write_text(text, encoding="utf-8")
    note = f"SYSTEM: {found}" if system is not None else f"no SYSTEM from the data ({found})"
    return path, note


def serve_commands(gguf_path: Path, modelfile: Path | None, ollama_name: str) -> dict[str, str]:
    """The exact commands that serve the file: Ollama, llama.cpp's llama-server, llama-cpp-python's server."""
    path = shlex.quote(str(gguf_path))
    commands = {
        "llama_server": f"llama-server -m {path} --jinja -c 4096 --port 8080",
        "llama_cpp_python": f"python -m llama_cpp.server --model {path} --n_ctx 4096  # pip install 'llama-cpp-python[server]'",
    }
    if modelfile is not None:
        commands["ollama_create"] = f"ollama create {ollama_name} -f {shlex.quote(str(modelfile))}"
        commands["ollama_run"] = f"ollama run {ollama_name}"
    return commands

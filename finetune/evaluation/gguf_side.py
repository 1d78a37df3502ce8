"""The GGUF kind of comparison side (see evaluation.sides, the registry of every side): what quantization
costs against the 16-bit fine-tune.

The Test tab's side by side and batch evaluation normally put the base model opposite the fine-tuned
one. `gguf:<file>` puts a GGUF file the run exported there instead (its <run>/exports/gguf/ folder;
nothing else can be named, so the app never loads a path a user typed). The GGUF is loaded with transformers' GGUF loader (the `gguf` package dequantizes every
tensor exactly as the file stores it), and answers through the same encoder, decoding settings and
seed as the fine-tuned side, so the difference between the two columns is the file's quantization
(and anything the conversion lost), nothing else.
"""

from __future__ import annotations

from pathlib import Path

from finetune.errors import ModelError, RunError
from finetune.export.gguf import gguf_dir, list_gguf
from finetune.runs import Run

GGUF_PREFIX = "gguf:"


def is_gguf_side(side: str | None) -> bool:
    return isinstance(side, str) and side.startswith(GGUF_PREFIX)


def gguf_sides(run: Run) -> list[str]:
    """`gguf:<file>` for each GGUF file the run exported."""
    return [GGUF_PREFIX + path.name for path in list_gguf(run)]


def gguf_label(side: str) -> str:
    """How a GGUF side is named above its answers: "GGUF q8_0 (run.q8_0.gguf)"."""
    name = side[len(GGUF_PREFIX) :]
    parts = name.removesuffix(".gguf").rsplit(".", 1)
    return f"GGUF {parts[-1]} ({name})" if len(parts) == 2 else f"GGUF ({name})"


def gguf_path(run: Run, side: str) -> Path:
    """The file a `gguf:<name>` side names, which must be one of the run's exported GGUF files."""

    name = side[len(GGUF_PREFIX) :] if is_gguf_side(side) else ""
    folder = gguf_dir(run).resolve()
    path = (folder / name).resolve()
    if not name or "/" in name or "\\" in name or path.parent != folder or path.suffix != ".gguf":
        raise RunError(f"{side!r} is not a GGUF file of {run.name}; export one in the Export tab first")
    if not path.is_file():
        raise RunError(f"{name} is no longer in {run.name}'s exports; export it again or pick another side")
    return path


def load_gguf_model(path: Path):
    """The GGUF as a transformers model (dequantized: float32 on CPU, bfloat16/float16 on a GPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": torch.float32}
    if torch.cuda.is_available():  # not measured on a GPU in this project
        kwargs = {"dtype": torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16, "device_map": "auto"}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError, NotImplementedError) as exc:
        raise ModelError(f"transformers cannot load {path.name}: {str(exc).splitlines()[0][:300]}") from None
    return model.eval()

"""The GGUF types the studio offers, and which of them this machine can make for a given model, with why.

f16, bf16 and q8_0 come straight out of llama.cpp's converter (pip packages only). The K-quants
(q4_k_m, q5_k_m, q6_k) need llama.cpp's quantizer, which only llama-cpp-python (the `.[gguf]` extra,
compiled on install) provides. A K-quant packs each weight row in blocks of 256 values; llama.cpp
stores a tensor whose rows are not a multiple of 256 in a fallback type (q5_0, q5_1 or q8_0) instead.
Where no weight matrix of a model has such rows (the 64-wide built-in demo), a "q4_k_m" file would
hold no K-quant at all, so the type is refused with that reason rather than written under a false name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from finetune.errors import ConfigError
from finetune.export.gguf_process import LLAMA_CPP_MISSING, llama_cpp_installed

CONVERTER_TYPES = ("f16", "bf16", "q8_0")  # written by convert_hf_to_gguf.py --outtype
K_QUANT_TYPES = ("q4_k_m", "q5_k_m", "q6_k")  # quantized from a 16-bit GGUF by llama_model_quantize
GGUF_TYPES = CONVERTER_TYPES + K_QUANT_TYPES
K_QUANT_BLOCK = 256  # QK_K in ggml: values per K-quant super-block
TYPE_NOTES = {
    "f16": "16-bit, lossless for fp16/bf16 weights; the reference to compare smaller types against",
    "bf16": "16-bit with float32's range; llama.cpp runs it on CPUs, not every GPU backend",
    "q8_0": "8-bit, about half of f16, answers nearly always the same",
    "q4_k_m": "4-bit K-quant (some tensors 6-bit), about 30% of f16: the usual choice for laptops",
    "q5_k_m": "5-bit K-quant, about 35% of f16",
    "q6_k": "6-bit K-quant, about 41% of f16, close to q8_0 in quality",
}


@dataclass(frozen=True)
class TypeChoice:
    """One GGUF type for one model on this machine: can it be made, and if not, why not."""

    type: str
    available: bool
    reason: str  # why not (empty when available)
    note: str  # what the type is


def check_type(type_name: str) -> str:
    name = (type_name or "").strip().lower() if isinstance(type_name, str) else ""
    if name not in GGUF_TYPES:
        raise ConfigError([f"gguf: {name or 'nothing'} is not a GGUF type; choose one of {', '.join(GGUF_TYPES)}"])
    return name


def _weight_widths(config: dict) -> dict[str, int]:
    """Row widths (the first dimension llama.cpp quantizes along) of a transformer's weight matrices."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    widths = {}
    for key in ("hidden_size", "intermediate_size"):
        if isinstance(text.get(key), int):
            widths[key] = text[key]
    return widths


def k_quant_problem(config: dict) -> str:
    """Why a K-quant cannot be made of a model with this config.json ("" when it can)."""
    widths = _weight_widths(config)
    if widths and all(w % K_QUANT_BLOCK for w in widths.values()):
        shown = ", ".join(f"{k} {v}" for k, v in widths.items())
        return (
            f"no weight matrix of this model has rows divisible by {K_QUANT_BLOCK} ({shown}), which a K-quant "
            "needs: llama.cpp would store every tensor in a fallback type, so the file would not be a K-quant; "
            "choose q8_0 (or f16)"
        )
    return ""


def type_choices(model_folder: str | Path | None = None, config: dict | None = None) -> list[TypeChoice]:
    """Every type with whether it can be made here for this model (config.json of `model_folder`)."""
    if config is None and model_folder is not None:
        try:
            config = json.loads((Path(model_folder) / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = None
    shape_problem = k_quant_problem(config) if config else ""
    have_quantizer = llama_cpp_installed()
    choices = []
    for name in GGUF_TYPES:
        reason = ""
        if name in K_QUANT_TYPES:
            reason = shape_problem or ("" if have_quantizer else LLAMA_CPP_MISSING)
        choices.append(TypeChoice(name, not reason, reason, TYPE_NOTES[name]))
    return choices


def refusal(type_name: str, model_folder: str | Path | None = None, config: dict | None = None) -> str:
    """Why `type_name` cannot be made here for this model ("" when it can)."""
    name = check_type(type_name)
    choice = next(c for c in type_choices(model_folder, config) if c.type == name)
    return "" if choice.available else f"{name}: {choice.reason}"

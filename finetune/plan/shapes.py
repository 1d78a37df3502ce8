"""Model shapes: the few numbers of a model's config.json that memory depends on.

A shape is read from `config.json` only (never weights): a local folder, the built-in
`demo` model, a bundled public shape (`finetune/plan/model_shapes/*.json`, also matched by
their Hub ids so popular models work offline), or a Hub id via `hf_hub_download`.
Parameter counts are plain arithmetic over a Llama-style decoder (embedding, N x
[attention + gated MLP + 2 RMSNorms], final norm, lm_head); a test checks them against
`transformers` instantiated on the meta device.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.config import ATTENTION_MODULES
from finetune.demo import demo_model_path, is_demo
from finetune.errors import ModelError
from finetune.offline import hub_offline, hub_reachable

SHAPES_DIR = Path(__file__).resolve().parent / "model_shapes"
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
LINEAR_MODULES = ATTENTION_MODULES + MLP_MODULES
# model types whose layers are the Llama layout this module counts exactly
DENSE_LLAMA_TYPES = ("llama", "mistral", "qwen2", "qwen3", "granite", "olmo2", "smollm3")


@dataclass(frozen=True)
class Linear:
    """One linear layer of a decoder block: its name, input and output width, bias."""

    name: str
    d_in: int
    d_out: int
    bias: bool = False

    @property
    def params(self) -> int:
        return self.d_in * self.d_out + (self.d_out if self.bias else 0)


@dataclass
class ModelShape:
    """The architecture numbers of a decoder-only causal LM (what memory scales with)."""

    name: str
    source: str
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 0
    torch_dtype: str = "bfloat16"
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def linears(self) -> list[Linear]:
        """The linear layers of one decoder block, in execution order."""
        h, i = self.hidden_size, self.intermediate_size
        return [
            Linear("q_proj", h, self.q_dim, self.qkv_bias),
            Linear("k_proj", h, self.kv_dim, self.qkv_bias),
            Linear("v_proj", h, self.kv_dim, self.qkv_bias),
            Linear("o_proj", self.q_dim, h, self.o_bias),
            Linear("gate_proj", h, i, self.mlp_bias),
            Linear("up_proj", h, i, self.mlp_bias),
            Linear("down_proj", i, h, self.mlp_bias),
        ]

    def param_counts(self) -> dict[str, int]:
        """Parameter counts by kind: what quantization applies to and what stays 16-bit."""
        linears = self.linears()
        linear_w = sum(lin.d_in * lin.d_out for lin in linears) * self.num_layers
        biases = sum(lin.d_out for lin in linears if lin.bias) * self.num_layers
        norms = (2 * self.hidden_size + (2 * self.head_dim if self.qk_norm else 0)) * self.num_layers
        norms += self.hidden_size  # final norm
        embed = self.vocab_size * self.hidden_size
        lm_head = 0 if self.tie_word_embeddings else embed
        total = linear_w + biases + norms + embed + lm_head
        return {
            "total": total,
            "linear": linear_w,
            "bias": biases,
            "norm": norms,
            "embedding": embed,
            "lm_head": lm_head,
        }

    def describe(self) -> str:
        """One line, e.g. `qwen2.5-0.5b: qwen2, 0.49B params, 24 layers x 896 hidden`."""
        total = self.param_counts()["total"]
        return (
            f"{self.name}: {self.model_type}, {total / 1e9:.2f}B params, {self.num_layers} layers x "
            f"{self.hidden_size} hidden, vocab {self.vocab_size}"
        )


def bundled_shapes() -> dict[str, Path]:
    """Bundled shape name -> file (e.g. `llama-3.1-8b`), so estimates work offline."""
    return {p.stem: p for p in sorted(SHAPES_DIR.glob("*.json"))}


def _alias_index() -> dict[str, str]:
    """Lower-cased Hub ids listed in a bundled shape's `_aliases` -> bundled name."""
    index: dict[str, str] = {}
    for name, path in bundled_shapes().items():
        data = json.loads(path.read_text(encoding="utf-8"))
        for alias in data.get("_aliases", []):
            index[alias.lower()] = name
    return index


def shape_from_config(data: dict[str, Any], *, name: str, source: str) -> ModelShape:
    """Build a shape from config.json contents; missing sizes raise ModelError naming them."""
    if not isinstance(data, dict):
        raise ModelError(f"config.json of '{name}' is not a JSON object of model settings")
    if "hidden_size" not in data and isinstance(data.get("text_config"), dict):
        data = {**data["text_config"], "model_type": data["text_config"].get("model_type", data.get("model_type"))}
    required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    missing = [key for key in required if not data.get(key)]
    if missing:
        raise ModelError(
            f"config.json of '{name}' lacks {', '.join(missing)}: it does not look like a decoder-only "
            "language model this estimate understands."
        )
    try:
        return _shape_of(data, name=name, source=source)
    except (TypeError, ValueError, ZeroDivisionError) as exc:  # a size that is not a positive whole number
        raise ModelError(f"config.json of '{name}' holds a size that is not a whole number: {exc}") from None


def _shape_of(data: dict[str, Any], *, name: str, source: str) -> ModelShape:
    model_type = str(data.get("model_type") or "unknown")
    heads = int(data["num_attention_heads"])
    hidden = int(data["hidden_size"])
    attention_bias = bool(data.get("attention_bias", False))
    shape = ModelShape(
        name=name,
        source=source,
        model_type=model_type,
        hidden_size=hidden,
        intermediate_size=int(data.get("intermediate_size") or 4 * hidden),
        num_layers=int(data["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=int(data.get("num_key_value_heads") or heads),
        head_dim=int(data.get("head_dim") or hidden // heads),
        vocab_size=int(data["vocab_size"]),
        tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
        max_position_embeddings=int(data.get("max_position_embeddings") or 0),
        torch_dtype=str(data.get("torch_dtype") or data.get("dtype") or "bfloat16"),
        qkv_bias=model_type == "qwen2" or attention_bias,
        o_bias=attention_bias,
        mlp_bias=bool(data.get("mlp_bias", False)),
        qk_norm=model_type == "qwen3",
    )
    if model_type not in DENSE_LLAMA_TYPES:
        shape.notes.append(
            f"model type '{model_type}' is counted as a Llama-style dense decoder; its real layout may differ"
        )
    if any(data.get(key) for key in ("num_experts", "num_local_experts", "n_routed_experts")):
        shape.notes.append("mixture-of-experts layers are not modelled: expect a large underestimate")
    return shape


def _read_json(path: Path, name: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path} for model '{name}': {exc}") from None


def _hub_error(repo_id: str, reason: str) -> ModelError:
    names = ", ".join(bundled_shapes())
    return ModelError(
        f"Could not read config.json of '{repo_id}' from the Hugging Face Hub ({reason}). Without network "
        f"access, point the model to a local folder that contains config.json, or use a bundled shape ({names}). "
        "Gated models (e.g. meta-llama) also need HF_TOKEN."
    )


def _hub_config(repo_id: str) -> Path:
    """config.json of a Hub repository: from the local cache if there, else downloaded."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, "config.json", local_files_only=True))
    except Exception:
        pass  # not cached
    if hub_offline() or not hub_reachable():
        raise _hub_error(repo_id, "offline: the Hub cannot be reached and the file is not cached")
    try:
        return Path(hf_hub_download(repo_id, "config.json"))
    except Exception as exc:  # gated, missing repo, bad id, network trouble: all mean "cannot read it"
        detail = str(exc).splitlines()[0] if str(exc) else "no details"
        raise _hub_error(repo_id, f"{type(exc).__name__}: {detail}") from None


def load_shape(model: str) -> ModelShape:
    """Resolve a model name to its shape: local folder/file, `demo`, bundled name or alias, Hub id."""

    text = str(model).strip()
    if not text:
        raise ModelError("no model given: name a Hub id, a local folder, a bundled shape or `demo`")
    path = Path(text).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return shape_from_config(_read_json(path / "config.json", text), name=path.name, source=str(path))
    if path.is_file() and path.name.endswith(".json"):
        return shape_from_config(_read_json(path, text), name=path.parent.name or text, source=str(path))
    if path.is_dir():
        raise ModelError(f"folder '{text}' has no config.json: is it a model folder?")
    if text.startswith((".", "/", "~")) or "\\" in text:
        raise ModelError(f"model folder '{text}' does not exist")
    if is_demo(text):
        folder = demo_model_path()
        return shape_from_config(_read_json(folder / "config.json", text), name="demo", source=str(folder))
    bundled = bundled_shapes()
    key = text.lower()
    name = key if key in bundled else _alias_index().get(key)
    if name:
        data = _read_json(bundled[name], text)
        return shape_from_config(data, name=name, source=f"bundled shape ({data.get('_source', name)})")
    if "/" not in text or text.count("/") > 1:
        raise ModelError(
            f"'{text}' is not a local model folder, a bundled shape ({', '.join(bundled)}), `demo`, "
            "or a Hub id like Qwen/Qwen2.5-0.5B-Instruct."
        )
    return shape_from_config(_read_json(_hub_config(text), text), name=text, source=f"hub:{text}")

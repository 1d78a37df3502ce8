"""The built-in `demo` model: a tiny Llama-style causal LM with random weights and a
byte-level BPE tokenizer trained locally, so every feature works offline on CPU.

It is built on first use into <workspace>/cache/ (about a second) and is deterministic:
the same version always yields the same weights and vocabulary.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

DEMO_NAME = "demo"
DEMO_VERSION = 1
SAMPLES_DIR = Path(__file__).parent / "samples"
SAMPLE_DATASET = SAMPLES_DIR / "sample_chat.jsonl"

# ChatML, as Qwen uses it, with {% generation %} markers so TRL can mask everything
# but the assistant turns (assistant_only_loss) without patching.
DEMO_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_build_lock = threading.Lock()


def is_demo(model_name_or_path: str) -> bool:
    return model_name_or_path.strip().lower() == DEMO_NAME


def _training_texts() -> list[str]:
    """Text the tokenizer learns its merges from: the bundled chat sample plus plain English."""
    # only the chat sample: adding sample files in other formats must not change the vocabulary
    texts = SAMPLE_DATASET.read_text(encoding="utf-8").splitlines()
    texts += [
        "The quick brown fox jumps over the lazy dog. " * 3,
        "You are a helpful assistant. Answer the question clearly and briefly.",
        "Hello! How can I help you today? Thank you, goodbye.",
        "one two three four five six seven eight nine ten eleven twelve",
        "0 1 2 3 4 5 6 7 8 9 10 100 1000 + - * / = ( ) ? ! . , : ;",
    ]
    return texts


def _build(target: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_training_texts(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=2048,
    )
    tokenizer.chat_template = DEMO_CHAT_TEMPLATE

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        initializer_range=0.1,  # wide enough that a LoRA run visibly moves the loss
    )
    torch.manual_seed(1234)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, max_new_tokens=64
    )
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    if not (target / "config.json").is_file():
        return
    (target / "DEMO_MODEL.json").write_text(
        json.dumps({"version": DEMO_VERSION, "note": "random weights; for offline demos and tests"})
    )


def demo_model_path(workspace: str | Path | None = None) -> Path:
    """Path of the built demo model, building it on first use (thread- and process-safe)."""
    from finetune.runs import cache_dir

    target = cache_dir(workspace) / f"demo-model-v{DEMO_VERSION}"
    if (target / "DEMO_MODEL.json").is_file():
        return target
    with _build_lock:
        if (target / "DEMO_MODEL.json").is_file():
            return target
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _build(tmp)
        if not (tmp / "config.json").is_file():
            # a non-zero rank under torch.distributed: save_pretrained wrote nothing, rank 0 builds it
            shutil.rmtree(tmp, ignore_errors=True)
            return _wait_for(target)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _wait_for(target: Path, timeout: float = 300) -> Path:
    import time

    deadline = time.time() + timeout
    while not (target / "DEMO_MODEL.json").is_file():
        if time.time() > deadline:
            raise TimeoutError(f"the demo model was not built at {target} within {timeout:.0f}s")
        time.sleep(0.2)
    return target

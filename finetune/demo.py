"""The built-in `demo` model: a tiny Llama-style causal LM with a byte-level BPE tokenizer,
both trained locally, so every feature works offline on CPU.

The model is pretrained at build time on the bundled sample's rows written as plain text
(`Question: ...` / `Answer:` / the answer), never in the chat template and never with the
end-of-turn token. So, like a real base model, it knows the facts but cannot
answer in a chat: given a chat prompt it rambles and never stops. A LoRA run on the chat sample
(the app's default first run) teaches it the chat format and when to stop, which the Test tab's
batch evaluation shows as exact matches going from about 0 to most rows.

It is built on first use into <workspace>/cache/ (5-10 seconds on one CPU core) and is deterministic
on a given machine: the same version yields the same vocabulary and weights.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

from finetune.runs import cache_dir
from finetune.samples.make_samples import rows

DEMO_NAME = "demo"
DEMO_VERSION = 2
SAMPLES_DIR = Path(__file__).parent / "samples"
SAMPLE_DATASET = SAMPLES_DIR / "sample_chat.jsonl"
SAMPLE_PREFERENCE_DATASET = SAMPLES_DIR / "sample_preference.jsonl"  # the default for dpo/orpo/kto
SAMPLE_PROMPTS_DATASET = SAMPLES_DIR / "sample_prompts.jsonl"  # the default for grpo: prompts with answers


def default_dataset(objective: str) -> Path:
    """The bundled sample an empty dataset_path means for `objective` (the one rule, for training and commands)."""
    if objective in ("dpo", "orpo", "kto"):
        return SAMPLE_PREFERENCE_DATASET
    return SAMPLE_PROMPTS_DATASET if objective == "grpo" else SAMPLE_DATASET


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
# pretraining at build time (see the module docstring)
PRETRAIN_EPOCHS = 60
PRETRAIN_BATCH = 32
PRETRAIN_LR = 3e-3


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


def pretraining_texts() -> list[str]:
    """What the demo base learns at build time: every sample row as plain question/answer text."""

    texts = []
    for row in rows():
        by_role = {m["role"]: m["content"] for m in row["messages"]}
        texts.append(f"Question: {by_role['user']}\nAnswer:\n{by_role['assistant']}")
    return texts


def _pretrain(model, tokenizer) -> None:
    """Full-parameter training on pretraining_texts(), plain PyTorch (a few seconds on one CPU core)."""
    import torch

    encoded = [tokenizer(text)["input_ids"] for text in pretraining_texts()]
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, ids in enumerate(encoded):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
    labels = input_ids.masked_fill(mask == 0, -100)
    # the special tokens never occur in this text: leave their output rows out of training (else every
    # step pushes them down), then scale them like the trained rows, so the chat fine-tune learns to
    # end a turn with <|im_end|> as easily as any other token
    special = torch.tensor(tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS))
    hook = model.lm_head.weight.register_hook(lambda grad: grad.index_fill(0, special, 0.0))
    generator = torch.Generator().manual_seed(1234)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LR, weight_decay=0.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small is no slower on one thread, and far faster on a busy machine
    model.train()
    try:
        for _ in range(PRETRAIN_EPOCHS):
            order = torch.randperm(len(encoded), generator=generator)
            for start in range(0, len(order), PRETRAIN_BATCH):
                idx = order[start : start + PRETRAIN_BATCH]
                model(input_ids=input_ids[idx], attention_mask=mask[idx], labels=labels[idx]).loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    finally:
        torch.set_num_threads(threads)
        hook.remove()
    with torch.no_grad():
        weight = model.lm_head.weight
        trained = torch.ones(weight.shape[0], dtype=torch.bool)
        trained[special] = False
        weight[special] *= weight[trained].norm(dim=1).mean() / weight[special].norm(dim=1, keepdim=True)
    model.eval()


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
        initializer_range=0.02,
    )
    torch.manual_seed(1234)
    model = LlamaForCausalLM(config)
    _pretrain(model, tokenizer)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, max_new_tokens=64
    )
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    if not (target / "config.json").is_file():
        return
    (target / "DEMO_MODEL.json").write_text(
        json.dumps(
            {"version": DEMO_VERSION, "note": "pretrained on the sample's facts as plain text; for offline demos"}
        )
    )


def demo_model_path(workspace: str | Path | None = None) -> Path:
    """Path of the built demo model, building it on first use (thread- and process-safe)."""

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

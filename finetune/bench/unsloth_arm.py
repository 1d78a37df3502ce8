"""The Unsloth arm of `finetune bench`, run in its own process: Unsloth patches transformers and
TRL when it is imported, which must not leak into the other arms.

`python -m finetune.bench.unsloth_arm SPEC_JSON` prints one JSON line with the same measures as the
other arms (finetune.bench.measure), or exits non-zero with the reason.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    try:
        import unsloth  # noqa: F401  (first, so it can patch transformers and TRL)
        from unsloth import FastLanguageModel
    except Exception as exc:  # not installed, or no supported GPU
        print(f"unsloth is not usable here: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    import torch
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from finetune.bench.measure import MemoryProbe, StepMeter, TokenCounter  # after the unsloth check: torch

    rows = [json.loads(line) for line in open(spec["rows"], encoding="utf-8")]
    probe = MemoryProbe("cuda")
    probe.start()
    bf16 = torch.cuda.is_bf16_supported()
    model, tokenizer = FastLanguageModel.from_pretrained(
        spec["model_path"],
        max_seq_length=spec["max_length"],
        dtype=torch.bfloat16 if bf16 else torch.float16,
        load_in_4bit=spec["quantization"] == "4bit",
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=spec["lora_r"],
        lora_alpha=spec["lora_alpha"],
        lora_dropout=0.0,  # Unsloth's fast path; its own recommendation
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        use_gradient_checkpointing="unsloth",
        random_state=spec["seed"],
    )
    args = SFTConfig(
        output_dir=spec["output_dir"],
        max_steps=spec["steps"],
        per_device_train_batch_size=spec["batch"],
        gradient_accumulation_steps=spec["accumulation"],
        learning_rate=spec["learning_rate"],
        bf16=bf16,
        fp16=not bf16,
        max_length=spec["max_length"],
        assistant_only_loss=spec["loss_mode"] == "assistant_only",
        completion_only_loss=spec["loss_mode"] == "completion_only",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=spec["seed"],
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)
    counter = TokenCounter(trainer.data_collator)
    trainer.data_collator = counter
    meter = StepMeter(counter, sync=torch.cuda.synchronize)
    trainer.add_callback(meter)
    trainer.train()
    result = meter.window(spec["warmup"])
    tps = result.get("tokens_per_s")
    if spec.get("flops_per_token") and spec.get("peak_tflops") and tps:
        result["mfu"] = tps * spec["flops_per_token"] / (spec["peak_tflops"] * 1e12)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result["loss_first"] = losses[0] if losses else None
    result["peak_mem_gb"] = probe.peak_gb()
    result["settings"] = {"unsloth": getattr(unsloth, "__version__", "?"), "gradient_checkpointing": "unsloth"}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

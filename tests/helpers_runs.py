"""Fake finished runs built with plain PEFT on the demo model (no training engine involved),
plus reference generation with plain transformers/PEFT to check our code against."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from finetune.config import RunConfig
from finetune.runs import Run, create_run

PROMPT = "What is the capital of France?"


def _demo(workspace: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.demo import demo_model_path

    path = demo_model_path(workspace)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)


def save_random_adapter(workspace: Path, target: Path, seed: int) -> None:
    """A LoRA with non-zero B (init_lora_weights=False), so it really changes the outputs."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = _demo(workspace)
    torch.manual_seed(seed)
    config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def save_perturbed_model(workspace: Path, target: Path, seed: int) -> None:
    """A "fully fine-tuned" demo model: every weight nudged."""
    model, tokenizer = _demo(workspace)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 0.05)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def make_run(
    workspace: Path,
    *,
    quantization: str = "none",
    method: str = "lora",
    run_name: str = "",
    model: str = "demo",
    seed: int = 0,
    checkpoints: tuple[int, ...] = (),
    with_adapter: bool = True,
    config: RunConfig | None = None,
) -> Run:
    """A run folder as training leaves it: config (`config`, else one of the other arguments), adapter/,
    checkpoints, metrics, data summary."""
    cfg = RunConfig(model_name_or_path=model, quantization=quantization, method=method, run_name=run_name)
    cfg = config.replace(run_name=run_name) if config is not None else cfg
    run = create_run(cfg, workspace)
    save = save_perturbed_model if method == "full" else save_random_adapter
    for step in checkpoints:
        folder = run.checkpoints_dir / f"checkpoint-{step}"
        save(workspace, folder, seed + 100 + step)
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if with_adapter:
        save(workspace, run.adapter_dir, seed)
    run.append_metrics({"step": 1, "epoch": 0.5, "loss": 2.5})
    run.append_metrics({"step": 2, "epoch": 1.0, "loss": 2.25})
    run.append_metrics({"step": 2, "epoch": 1.0, "eval_loss": 2.375})
    summary = {"format": "messages", "source": "/home/alice/secret/data.jsonl", "train_rows": 9, "eval_rows": 1}
    run.data_summary_path.write_text(json.dumps(summary))
    run.write_status("done" if with_adapter else "training", "Finished 2 steps", step=2, total_steps=2)
    return run


def encode(tokenizer, prompt: str = PROMPT):
    messages = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")


def plain_generate(model, tokenizer, prompt: str = PROMPT, max_new_tokens: int = 16) -> str:
    """Greedy generation with nothing of ours involved: the reference answer."""
    inputs = encode(tokenizer, prompt)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def load_plain_base(workspace: Path, quantization: str = "none"):
    """The demo base loaded with plain transformers, quantized like the run when asked."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from finetune.demo import demo_model_path

    path = demo_model_path(workspace)
    kwargs = {"dtype": torch.float32}
    if quantization == "4bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        )
    return AutoModelForCausalLM.from_pretrained(path, **kwargs).eval(), AutoTokenizer.from_pretrained(path)


def make_run_with_data(
    workspace: Path,
    train_rows: list[dict],
    val_rows: list[dict] | None = None,
    *,
    checkpoints: tuple[int, ...] = (),
    run_name: str = "",
    **kwargs,
) -> Run:
    """`make_run`, with the config pointing at small JSONL files written into the workspace
    (dataset_path, and eval_dataset_path when `val_rows` is given), so evaluation can rebuild
    the validation rows exactly as training read them."""
    run = make_run(workspace, checkpoints=checkpoints, run_name=run_name, **kwargs)
    folder = workspace / "data" / run.name
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, rows in (("dataset_path", train_rows), ("eval_dataset_path", val_rows)):
        if rows is None:
            continue
        path = folder / f"{key.split('_')[0]}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        paths[key] = str(path)
    run.config().replace(**paths).to_yaml(run.config_path)
    return run


def fast_config(**changes) -> RunConfig:
    """A CPU-sized QLoRA run on the demo model and the bundled sample data."""
    base = dict(
        model_name_or_path="demo",
        quantization="4bit",
        lora_r=8,
        lora_alpha=16,
        learning_rate=1e-2,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=1,
        max_length=256,
        gradient_checkpointing=False,
        logging_steps=2,
        eval_steps=10,
        save_steps=10,
        max_steps=30,
    )
    base.update(changes)
    return RunConfig(**base)


def train_then_kill(workspace: Path, name: str, settings: list[str], ready) -> tuple[Run, list[str], dict]:
    """`finetune train --name <name>` in a child process, killed with SIGKILL once `ready(run)` holds (or after
    240 s): returns the run folder, the command's first words (for `--resume`) and its environment."""
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "FINETUNE_WORKSPACE": str(workspace)}
    base = [sys.executable, "-m", "finetune.cli", "train", "--workspace", str(workspace), "--quiet"]
    sets = [f"--set={s}" for s in settings]
    proc = subprocess.Popen(
        [*base, "--model", "demo", "--name", name, "--max-steps", "2000", *sets],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run = Run(workspace / "runs" / name)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if run.path.is_dir() and ready(run):
                break
            time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return Run(run.path), base, env


def checkpoint_step(run: Run) -> int:
    """The step of the run's newest intact checkpoint (0 when it has none)."""
    latest = run.latest_checkpoint()
    return int(latest.name.split("-")[-1]) if latest is not None else 0

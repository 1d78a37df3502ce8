"""`finetune train` under `accelerate launch` with two CPU processes (gloo), as on a GPU cluster.

Both ranks must train one model together (data parallel), rank 0 alone writes the run folder,
and the folder must open and compare like any other run. One test, so the 2-process training
(the slow part) runs once."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from finetune.evaluation.compare import GenerationSettings, get_comparer
from finetune.runs import list_runs, open_run

ROOT = Path(__file__).resolve().parents[2]
CPU_2PROC = ROOT / "accelerate_configs" / "cpu_2proc.yaml"
STEPS = 8
# QLoRA (the default quantization=4bit) trains under DDP on CPU too, so the test keeps the default.
TRAIN_ARGS = ["train", "--model", "demo", "--max-steps", str(STEPS), "--quiet", "--set", "logging_steps=1"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("accelerate") is None, reason="the accelerate CLI is not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = os.environ.copy()  # carries FINETUNE_WORKSPACE from the workspace fixture
    env["OMP_NUM_THREADS"] = "1"  # two ranks on a small machine: no thread oversubscription
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)


def _loss_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, filter(None, lines)) if "loss" in r]


def test_two_processes_train_one_run(workspace):
    # the demo model is built by the fixture beforehand: two ranks building it at once race
    single = _run([sys.executable, "-m", "finetune.cli", *TRAIN_ARGS, "--name", "single"])
    assert single.returncode == 0, single.stderr[-3000:]

    launch = [
        "accelerate",
        "launch",
        "--config_file",
        str(CPU_2PROC),
        "--main_process_port",
        str(_free_port()),
        "-m",
        "finetune.cli",
        *TRAIN_ARGS,
        "--name",
        "ddp",
    ]
    result = _run(launch)
    assert result.returncode == 0, result.stderr[-5000:]

    runs = sorted(p.name for p in (workspace / "runs").iterdir() if p.is_dir())
    assert runs == ["ddp", "single"], f"each rank made its own run folder ({runs}): the ranks did not form one group"
    run_dir = workspace / "runs" / "ddp"

    # both ranks ran the CLI, and rank 1 was handed rank 0's folder
    # the two ranks write to one stderr, so their lines may interleave: find the paths, not the lines
    announced = re.findall(r"run folder: (\S+?)(?=run folder: |\s|$)", result.stderr)
    assert announced == [str(run_dir)] * 2, result.stderr[-3000:]

    # data parallel with world size 2: each optimizer step sees two ranks' batches, so the
    # epoch (and the token count) at a step is about twice a single process's
    ddp_loss, single_loss = _loss_records(run_dir), _loss_records(workspace / "runs" / "single")
    epoch_ratio = ddp_loss[0]["epoch"] / single_loss[0]["epoch"]
    token_ratio = ddp_loss[0]["num_tokens"] / single_loss[0]["num_tokens"]
    assert 1.6 < epoch_ratio < 2.4 and 1.6 < token_ratio < 2.4, (epoch_ratio, token_ratio)

    # rank 0 alone wrote the metrics: every step once
    assert Counter(r["step"] for r in ddp_loss) == Counter(range(1, STEPS + 1))
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "done" and status["step"] == STEPS

    adapters = [p.parent for p in run_dir.rglob("adapter_model.safetensors") if "checkpoints" not in p.parts]
    assert adapters == [run_dir / "adapter"]
    assert (run_dir / "adapter" / "adapter_config.json").is_file()

    # and the app can use it like any other run: open it, list it, compare base vs adapter
    run = open_run("ddp")
    assert run.has_adapter() and run.status()["state"] == "done"
    assert {s.name for s in list_runs()} == {"ddp", "single"}
    answer = get_comparer(run).compare("Hello!", GenerationSettings(max_new_tokens=8))
    assert isinstance(answer.base, str) and isinstance(answer.finetuned, str)
    assert answer.base_tokens > 0 and answer.finetuned_tokens > 0


CPU_2PROC_FSDP = ROOT / "accelerate_configs" / "cpu_2proc_fsdp.yaml"


def test_fsdp_shards_the_model_across_two_processes(workspace):
    """FSDP over two CPU processes, quantization none: each rank holds half of the frozen weights while
    it trains (the LoRA adapter is replicated), and one ordinary adapter comes out that plain PEFT loads."""
    import torch
    from peft import AutoPeftModelForCausalLM

    from finetune.errors import RunError
    from finetune.train.start import start_training

    launch = [
        "accelerate",
        "launch",
        "--config_file",
        str(CPU_2PROC_FSDP),
        "--main_process_port",
        str(_free_port()),
        "-m",
        "finetune.cli",
        *TRAIN_ARGS,
        "--set",
        "quantization=none",
        "--set",
        "strategy=fsdp",
        "--name",
        "fsdp",
    ]
    result = _run(launch)
    assert result.returncode == 0, result.stderr[-5000:]
    run_dir = workspace / "runs" / "fsdp"
    assert sorted(p.name for p in (workspace / "runs").iterdir() if p.is_dir()) == ["fsdp"]

    # what each rank held during training (printed by both, logged by rank 0)
    shares = re.findall(
        r"sharding: rank (\d) of 2 holds ([\d,]+) of ([\d,]+) parameters \(\d+%\): frozen ([\d,]+) of ([\d,]+), "
        r"trainable ([\d,]+) of ([\d,]+)",
        result.stderr,
    )
    assert sorted(s[0] for s in shares) == ["0", "1"], result.stderr[-3000:]
    for _, held, whole, frozen_held, frozen, trainable_held, trainable in shares:
        number = lambda text: int(text.replace(",", ""))  # noqa: E731
        assert number(frozen_held) * 2 == number(frozen)  # half of the base weights each
        assert 0.4 < number(held) / number(whole) < 0.65
        assert number(trainable_held) == number(trainable)  # the adapter is replicated
    log = (run_dir / "train.log").read_text()
    assert "plan: parallelism: fsdp over 2 processes" in log and "sharding: rank 0 of 2" in log
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["strategy"] == "fsdp" and plan["machine"]["world_size"] == 2

    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "done" and status["step"] == STEPS
    adapters = [p.parent for p in run_dir.rglob("adapter_model.safetensors") if "checkpoints" not in p.parts]
    assert adapters == [run_dir / "adapter"]
    model = AutoPeftModelForCausalLM.from_pretrained(str(run_dir / "adapter"))
    trained = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert trained and all(torch.count_nonzero(p) > 0 for p in trained)  # the trained adapter, not a fresh one

    # its checkpoints hold the model only (transformers shards at load on CPU): resume says so
    run = open_run("fsdp")
    with pytest.raises(RunError, match="cannot be resumed"):
        start_training(run.config(), resume_run=run)


CPU_2PROC_ZERO3 = ROOT / "accelerate_configs" / "cpu_2proc_zero3.yaml"


def _deepspeed_missing() -> bool:
    import importlib.util

    return importlib.util.find_spec("deepspeed") is None


@pytest.mark.skipif(_deepspeed_missing(), reason="DeepSpeed is not installed")
@pytest.mark.parametrize("method", ["lora", "full"])
def test_zero3_partitions_the_model_as_it_loads(workspace, method):
    """ZeRO-3 over two CPU processes (DeepSpeed's CPU accelerator): the training arguments exist before
    the model, so DeepSpeed partitions the weights as they load and each rank holds half of every
    weight; the saved adapter (or model) is whole."""
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    sets = ["--set", "quantization=none", "--set", f"method={method}", "--set", "strategy=zero3"]
    if method == "full":
        sets += ["--set", "learning_rate=1e-5"]
    launch = ["accelerate", "launch", "--config_file", str(CPU_2PROC_ZERO3), "--main_process_port", str(_free_port())]
    result = _run([*launch, "-m", "finetune.cli", *TRAIN_ARGS, *sets, "--name", f"zero3-{method}"])
    assert result.returncode == 0, result.stderr[-5000:]
    run_dir = workspace / "runs" / f"zero3-{method}"
    shares = re.findall(r"sharding: rank (\d) of 2 holds ([\d,]+) of ([\d,]+) parameters", result.stderr)
    assert sorted(s[0] for s in shares) == ["0", "1"], result.stderr[-3000:]
    for _, held, whole in shares:
        assert int(held.replace(",", "")) * 2 == int(whole.replace(",", ""))
    assert "plan: parallelism: zero3 over 2 processes" in (run_dir / "train.log").read_text()
    assert json.loads((run_dir / "status.json").read_text())["state"] == "done"
    adapter = run_dir / "adapter"
    if method == "lora":
        model = AutoPeftModelForCausalLM.from_pretrained(str(adapter))
        trained = [p for n, p in model.named_parameters() if "lora_B" in n]
        assert trained and all(torch.count_nonzero(p) > 0 for p in trained)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(adapter))
        assert sum(p.numel() for p in model.parameters()) == int(shares[0][2].replace(",", ""))
        assert all(p.numel() > 0 and torch.isfinite(p).all() for p in model.parameters())


def test_grpo_under_two_processes(workspace):
    """GRPO data parallel: each step's prompts spread over both ranks (the plan counts the launched processes),
    rank 0 alone writes the metrics and the sampled completions."""
    grpo = ["--set=objective=grpo", "--set=per_device_train_batch_size=4", "--set=gradient_accumulation_steps=1",
            "--set=num_generations=4", "--set=max_completion_length=8", "--set=eval_steps=0",
            "--set=sample_completions_steps=1"]  # fmt: skip
    launch = ["accelerate", "launch", "--config_file", str(CPU_2PROC), "--main_process_port", str(_free_port())]
    result = _run([*launch, "-m", "finetune.cli", "train", "--model", "demo", "--max-steps", "3", "--quiet",
                   "--set", "logging_steps=1", *grpo, "--name", "ddp-grpo"])  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    run_dir = workspace / "runs" / "ddp-grpo"
    rewards = [
        r for r in map(json.loads, filter(None, (run_dir / "metrics.jsonl").read_text().splitlines())) if "reward" in r
    ]
    assert [r["step"] for r in rewards] == [1, 2, 3]
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["strategy"] == "ddp" and plan["generation"].startswith("2 prompts x 4 completions per step")
    samples = sorted(p.name for p in (run_dir / "completions").iterdir())
    assert samples == ["step-000001.jsonl", "step-000002.jsonl", "step-000003.jsonl"]
    assert len((run_dir / "completions" / samples[0]).read_text().splitlines()) == 4  # rank 0's completions

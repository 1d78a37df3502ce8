"""The `finetune` CLI end to end: validate, train, runs, compare, export."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from finetune.cli.main import main
from finetune.demo import SAMPLES_DIR

FAST = [
    "--set", "per_device_train_batch_size=8", "--set", "gradient_accumulation_steps=1",
    "--set", "learning_rate=1e-2", "--set", "max_length=256", "--set", "gradient_checkpointing=false",
    "--set", "lora_r=8",
]  # fmt: skip


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("sample_chat.jsonl", "messages"),
        ("sample_alpaca.jsonl", "alpaca"),
        ("sample_sharegpt.json", "sharegpt"),
        ("sample_prompt_completion.csv", "prompt_completion"),
        ("sample_text.parquet", "text"),
    ],
)
def test_validate_reports_format_rows_and_token_stats(workspace, capsys, name, fmt):
    assert main(["validate", str(SAMPLES_DIR / name), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == fmt
    assert summary["token_stats"]["count"] == 110
    assert summary["token_stats"]["suggested_max_length"] >= 64


def test_validate_malformed_file_exits_1_with_an_explanation(workspace, tmp_path):
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{not json\n')
    proc = subprocess.run(
        [sys.executable, "-m", "finetune.cli", "validate", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "line 2" in proc.stderr and "line 1" in proc.stderr


def test_validate_unsupported_type_and_missing_file(workspace, tmp_path, capsys):
    odd = tmp_path / "data.xlsx"
    odd.write_bytes(b"PK\x03\x04")
    assert main(["validate", str(odd)]) == 1
    assert ".jsonl" in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "nope.jsonl")]) == 1
    assert "nope.jsonl" in capsys.readouterr().err


def test_train_with_bad_settings_lists_every_problem(workspace, capsys):
    code = main(["train", "--model", "demo", "--set", "learning_rate=-1", "--set", "lora_r=0", "--set", "nope=1"])
    assert code == 1
    err = capsys.readouterr().err
    assert "nope" in err


@pytest.mark.slow
def test_train_compare_export_from_the_command_line(workspace, tmp_path, capsys):
    """The issue's check: `finetune train --model demo --data FILE --max-steps 30` on CPU (the real command,
    in its own process: stdout is only the run folder), then the adapter loads with plain PEFT, `runs`,
    `compare` and `export` (the same `main`, in this process) list it, answer differently and export it."""
    env = {**os.environ, "FINETUNE_WORKSPACE": str(workspace)}
    data = SAMPLES_DIR / "sample_prompt_completion.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "finetune.cli", "train", "--model", "demo", "--data", str(data), "--max-steps", "30",
         "--quiet", *FAST], capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    run_dir = proc.stdout.strip()
    assert run_dir.splitlines()[-1] == run_dir  # stdout is just the run folder

    def cli(*args):
        assert main([*args, "--workspace", str(workspace)]) == 0
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return out.strip()

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from finetune.demo import demo_model_path

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(demo_model_path(workspace)), f"{run_dir}/adapter")

    runs = json.loads(cli("runs", "--json"))
    assert [r["state"] for r in runs] == ["done"]

    answers = json.loads(cli("compare", "--run", run_dir, "--prompt", "What is the capital of Peru?", "--json"))
    assert answers["base"] != answers["finetuned"]

    merged = cli("export", "--run", run_dir, "--merge", "--out", str(tmp_path / "merged")).splitlines()[-1]
    model = AutoModelForCausalLM.from_pretrained(merged)
    assert model.config.model_type == "llama"
    zipped = cli("export", "--run", run_dir, "--out", str(tmp_path / "zips")).splitlines()[-1]
    assert zipped.endswith(".zip") and os.path.getsize(zipped) > 0


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("sample_preference.jsonl", "preference"),
        ("sample_preference_implicit.jsonl", "preference"),
        ("sample_preference_text.csv", "preference"),
        ("sample_kto.jsonl", "unpaired_preference"),
    ],
)
def test_validate_preference_files(workspace, capsys, name, fmt):
    assert main(["validate", str(SAMPLES_DIR / name), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == fmt and summary["skipped_rows"] == 0
    assert summary["token_stats"]["count"] == summary["kept_rows"]
    assert main(["validate", str(SAMPLES_DIR / name)]) == 0
    assert "prompt + the longer answer" in capsys.readouterr().out


@pytest.mark.slow
def test_sft_then_dpo_and_preference_evaluation_from_the_command_line(workspace, tmp_path, capsys):
    """`finetune train`, then `finetune train --from-run ... --set objective=dpo`, then `finetune evaluate
    --data PAIRS --json` reports preference_accuracy and mean_margin per model beside the usual keys."""

    def cli(*args):  # the command's own `main`, in this process
        assert main([*args, "--workspace", str(workspace)]) == 0, capsys.readouterr().err[-3000:]
        return capsys.readouterr().out.strip()

    cli("train", "--model", "demo", "--name", "sft", "--max-steps", "16", "--quiet", *FAST)
    config = tmp_path / "dpo.yaml"
    config.write_text("objective: dpo\nbeta: 0.1\ndpo_loss_type: sigmoid\nlearning_rate: 0.005\n")
    run_dir = cli(
        "train", "--model", "demo", "--config", str(config), "--from-run", "sft", "--name", "dpo",
        "--max-steps", "16", "--quiet", *FAST[:4], "--set", "max_length=128", "--set", "lora_r=8",
    ).splitlines()[-1]  # fmt: skip
    out = tmp_path / "rows.jsonl"
    pairs = SAMPLES_DIR / "sample_preference.jsonl"
    printed = cli("evaluate", "--run", run_dir, "--data", str(pairs), "--limit", "12", "--max-new-tokens", "16",
            "--out", str(out), "--json")  # fmt: skip
    summary = json.loads(printed[printed.index("{") :])  # a library may print a line before it
    for model in ("base", "finetuned"):
        assert {"preference_accuracy", "mean_margin", "exact_match", "rouge_l"} <= set(summary[model])
    assert summary["preference_pairs"] == 12
    assert summary["finetuned"]["preference_accuracy"] > summary["base"]["preference_accuracy"]
    assert summary["finetuned"]["mean_margin"] > summary["base"]["mean_margin"]
    assert len(out.read_text().splitlines()) == 12


# --- no traceback at the edge, strict JSON (issue 22) -------------------------------------------------------
def test_an_unexpected_error_is_one_line_naming_where_the_details_are(workspace, capsys, monkeypatch):
    """A bug (not a FinetuneError) inside a command: exit 1, one line on stderr, the traceback in the log."""
    import finetune.studio.core as core

    def broken(self):
        raise TypeError("type str doesn't define __round__ method")

    monkeypatch.setattr(core.Studio, "runs", broken)
    assert main(["runs", "--workspace", str(workspace)]) == 1
    err = capsys.readouterr().err
    log = workspace / "logs" / "errors.log"
    assert err.strip().splitlines() == [
        f"error: Unexpected error: TypeError: type str doesn't define __round__ method. This is a bug, not "
        f"something you did; the details were written to {log.resolve()}."
    ]
    details = log.read_text()
    assert "while running finetune runs" in details and "Traceback" in details and "def broken" not in err


def test_runs_lists_damaged_runs_marked_and_prints_strict_json(workspace, capsys):
    from finetune.config import RunConfig
    from finetune.runs import create_run

    for name in ("nan-loss", "bad-line"):
        run = create_run(RunConfig(run_name=name), workspace)
        run.append_metrics({"step": 1, "loss": float("nan") if name == "nan-loss" else 1.25})
        run.write_status("done", "Finished", step=1, total_steps=1)
    with open(workspace / "runs" / "bad-line" / "metrics.jsonl", "a") as fh:
        fh.write('{"step": "x", "loss": "y"}\n')
    assert main(["runs", "--workspace", str(workspace)]) == 0
    out = capsys.readouterr().out
    assert "  damaged: metrics.jsonl line 2: has no usable step (step is 'x')" in out
    assert "1 of 2 runs have damaged files" in out and "nan-loss" in out
    assert main(["runs", "--json", "--workspace", str(workspace)]) == 0
    text = capsys.readouterr().out

    def refuse(constant):
        raise AssertionError(f"non-strict JSON constant {constant}")

    runs = {r["name"]: r for r in json.loads(text, parse_constant=refuse)}
    assert runs["nan-loss"]["final_loss"] is None and runs["bad-line"]["final_loss"] == 1.25
    assert runs["bad-line"]["damaged"] == ["metrics.jsonl line 2: has no usable step (step is 'x')"]

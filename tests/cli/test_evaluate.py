"""`finetune evaluate` beyond the run's rows (finetune/cli/evaluate.py, evaluate_more.py): benchmarks on a
local task YAML with --json, the forgetting check, the checkpoint curve, votes to preference pairs, and the
errors a user meets (missing --out, a task needing the Hub offline) as one paragraph and exit status 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.cli.main import main
from finetune.evaluation.ab import BlindPair, record_vote
from tests.helpers_runs import make_run

TASK_YAML = """task: cli_local_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: questions.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: answer
metric_list:
  - metric: acc
"""
QUESTIONS = [
    ("What is 17 plus 4?", ["21", "12", "40"], 0),
    ("Spell the word pencil backwards.", ["licnep", "pencil", "lipnec"], 0),
    ("What is the capital of Peru?", ["Quito", "Lima", "Bogota"], 1),
    ("Name the colour of the sky on a clear day.", ["green", "red", "blue"], 2),
    ("What is 3 times 5?", ["8", "15", "35"], 1),
    ("Which is a fruit?", ["apple", "brick", "chair"], 0),
]


def local_task(folder: Path) -> Path:
    """A task YAML of our own over a JSONL file beside it (relative path), as a user writes one."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [json.dumps({"question": q, "choices": c, "answer": a}) for q, c, a in QUESTIONS]
    (folder / "questions.jsonl").write_text("\n".join(rows) + "\n")
    (folder / "task.yaml").write_text(TASK_YAML)
    return folder / "task.yaml"


def cli_json(*args, workspace: Path, cwd: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "finetune.cli", "evaluate", *args, "--json"],
        capture_output=True, text=True, timeout=900, cwd=cwd,
        env={**os.environ, "FINETUNE_WORKSPACE": str(workspace), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout[proc.stdout.index("{") :])


@pytest.mark.slow
def test_benchmark_json_prints_base_and_finetuned_scores_with_stderr(trained_sft_run, copy_run, workspace, tmp_path):
    run = copy_run(trained_sft_run, "cli-bench")
    task = local_task(tmp_path / "my-tasks")
    out = tmp_path / "results.json"
    data = cli_json("--run", run.name, "--benchmark", str(task), "--out", str(out), workspace=workspace,
                    cwd=tmp_path / "my-tasks")  # fmt: skip
    acc = data["tasks"]["cli_local_mc"]["acc"]
    for key in ("base", "base_stderr", "finetuned", "finetuned_stderr", "diff", "diff_stderr"):
        assert isinstance(acc[key], float), key
    assert acc["questions"] == 6 and acc["verdict"] in ("worse", "better", "same") and acc["paired"]
    assert Path(data["folder"]).parent == run.path / "benchmarks"
    assert json.loads(out.read_text())["tasks"] == data["tasks"]

    forgetting = cli_json("--run", run.name, "--forgetting", "--limit", "10", workspace=workspace, cwd=tmp_path)
    assert forgetting["forgetting"]["verdict"] in ("kept", "lost", "gained")
    assert forgetting["tasks"]["finetune_general"]["acc"]["questions"] == 10


@pytest.mark.slow
def test_all_checkpoints_prints_the_curve_with_its_best_point(trained_curve_run, copy_run, workspace, tmp_path):
    run = copy_run(trained_curve_run, "cli-curve")
    data = cli_json("--run", run.name, "--all-checkpoints", "--limit", "2", "--max-new-tokens", "12",
                    workspace=workspace, cwd=tmp_path)  # fmt: skip
    assert [p["name"] for p in data["points"]][-1] == "final" and len(data["points"]) == 5
    assert data["best"]["ref"].startswith(("cli-curve@", "cli-curve")) and data["metric"] == "rouge_l"


def test_votes_to_preference_writes_pairs_and_says_how_to_train_on_them(workspace, tmp_path, capsys):
    run = make_run(workspace, run_name="cli-votes")
    record_vote(run, BlindPair("Q1?", "a1", "b1", "base", {}, "final"), "b")
    record_vote(run, BlindPair("Q2?", "a2", "b2", "finetuned", {}, "final"), "tie")
    out = tmp_path / "pairs.jsonl"
    assert main(["evaluate", "--votes-to-preference", "cli-votes", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["pairs"] == 1 and printed["ties"] == 1 and printed["path"] == str(out)
    assert "--from-run" in printed["train_command"] and "objective=dpo" in printed["train_command"]
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["chosen"] == [{"role": "assistant", "content": "b1"}]


def test_errors_are_one_paragraph_and_exit_1(workspace, tmp_path, capsys):
    make_run(workspace, run_name="cli-errors")
    assert main(["evaluate", "--votes-to-preference", "cli-errors"]) == 1
    assert "needs --out" in capsys.readouterr().err
    assert main(["evaluate", "--run", "cli-errors"]) == 1
    assert "--out is required for batch evaluation" in capsys.readouterr().err
    assert main(["evaluate", "--benchmark", "finetune_general"]) == 1
    assert "--run is required" in capsys.readouterr().err
    assert main(["evaluate", "--run", "cli-errors", "--benchmark", "finetune_general", "--out", "x.csv"]) == 1
    assert "must end in .json" in capsys.readouterr().err
    assert main(["evaluate", "--run", "cli-errors", "--benchmark", str(tmp_path / "none.yaml")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no task file at") and "Traceback" not in err

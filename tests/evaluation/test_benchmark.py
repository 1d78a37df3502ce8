"""Benchmarks base vs fine-tuned through lm-eval (finetune/evaluation/benchmark*.py) and the forgetting check:
which tasks run (the built-in set, YAML files and folders, registered names, the Hub when offline), the
difference and its noise, and the real thing on a trained demo run, checked against plain lm-eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.evaluation.benchmark import MetricRow, compare_metric, verdict
from finetune.evaluation.benchmark_tasks import BUILTIN_TASK, resolve_tasks
from finetune.evaluation.common import EvaluationError


def write_task(folder: Path, name: str = "tiny_mc", data: str = "rows.jsonl", rows: int = 4) -> Path:
    """A local multiple-choice task YAML over a JSONL file beside it (relative data_files)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"q": f"Which number is {i}?", "choices": [str(i), str(i + 1)], "answer": 0}) for i in range(rows)
    ]
    (folder / data).write_text("\n".join(lines) + "\n")
    path = folder / f"{name}.yaml"
    path.write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        'output_type: multiple_choice\ndoc_to_text: "Question: {{q}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\n'
        "doc_to_target: answer\nmetric_list:\n  - metric: acc\n"
    )
    return path


# which tasks ------------------------------------------------------------------------------------
def test_the_builtin_set_and_a_yaml_read_their_data_from_their_own_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative data_files must not depend on where the command runs
    (builtin,) = resolve_tasks(BUILTIN_TASK)
    files = builtin.spec["dataset_kwargs"]["data_files"]
    assert builtin.source == "built-in" and Path(files["test"]).is_file() and Path(files["test"]).is_absolute()
    assert sum(1 for _ in open(files["test"])) == 60
    path = write_task(tmp_path / "tasks")
    (own,) = resolve_tasks(str(path))
    assert (
        own.name == "tiny_mc"
        and own.dataset == ""
        and own.spec["dataset_kwargs"]["data_files"]["test"] == str((tmp_path / "tasks" / "rows.jsonl").resolve())
    )
    write_task(tmp_path / "tasks", name="other_mc", data="more.jsonl")
    assert sorted(s.name for s in resolve_tasks(str(tmp_path / "tasks"))) == ["other_mc", "tiny_mc"]


def test_bad_task_lists_name_every_problem_before_any_model_loads(tmp_path):
    missing = write_task(tmp_path / "a")
    (tmp_path / "a" / "rows.jsonl").unlink()
    group = tmp_path / "g.yaml"
    group.write_text("group: my_group\ntask: [tiny_mc]\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("task: [unclosed\n")
    with pytest.raises(EvaluationError) as err:
        resolve_tasks(f"{missing},{group},{broken},{tmp_path / 'nothing.yaml'}")
    text = str(err.value)
    assert "rows.jsonl, which does not exist" in text and "group file" in text and "not valid YAML" in text
    assert "no task file at" in text and text.startswith("These tasks cannot be run")
    with pytest.raises(EvaluationError, match="more than once"):
        resolve_tasks(f"{BUILTIN_TASK},{BUILTIN_TASK}")
    with pytest.raises(EvaluationError, match="at least one task"):
        resolve_tasks(" , ")


@pytest.mark.slow  # indexes lm-eval's registry (seconds)
def test_registered_tasks_offline_say_they_need_the_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", "/nonexistent-datasets-cache")
    with pytest.raises(EvaluationError) as err:
        resolve_tasks("arc_easy,mmlu")
    assert "need the Hugging Face Hub" in str(err.value) and "arc_easy (dataset allenai/ai2_arc)" in str(err.value)
    assert "mmlu (dataset cais/mmlu" in str(err.value)
    with pytest.raises(EvaluationError, match="did you mean arc_easy"):
        resolve_tasks("arc_easyy")
    assert resolve_tasks("arc_easy", check_hub_access=False)[0].dataset == "allenai/ai2_arc"


# the difference and its noise ---------------------------------------------------------------------
def results(scores: list[float], task: str = "t") -> dict:
    """lm-eval's results shape for one task with per-question accuracies."""
    n = len(scores)
    mean = sum(scores) / n
    se = (sum((s - mean) ** 2 for s in scores) / (n - 1) / n) ** 0.5
    return {
        "results": {task: {"alias": task, "acc,none": mean, "acc_stderr,none": se}},
        "samples": {task: [{"doc_id": i, "filter": "none", "acc": s} for i, s in enumerate(scores)]},
        "n-samples": {task: {"effective": n}},
        "higher_is_better": {task: {"acc": True}},
    }


def test_the_difference_is_paired_per_question_and_flagged_only_beyond_noise():
    base = [1.0] * 40 + [0.0] * 10
    lost = [0.0] * 30 + [1.0] * 10 + [0.0] * 10  # 30 questions it used to get right, now wrong
    row = compare_metric("t", "acc", results(base), results(lost), True)
    assert row.paired and row.n == 50 and row.diff == pytest.approx(-0.6)
    assert row.verdict == "worse" and row.diff_stderr == pytest.approx(0.07, abs=0.01)
    one_flip = base[:]
    one_flip[0] = 0.0
    assert compare_metric("t", "acc", results(base), results(one_flip), True).verdict == "same"
    # unpaired (no per-question scores): the two stderrs combine as independent
    plain_b, plain_f = results(base), results(lost)
    plain_b.pop("samples"), plain_f.pop("samples")
    row = compare_metric("t", "acc", plain_b, plain_f, True)
    se_b, se_f = plain_b["results"]["t"]["acc_stderr,none"], plain_f["results"]["t"]["acc_stderr,none"]
    assert not row.paired and row.diff_stderr == pytest.approx((se_b**2 + se_f**2) ** 0.5)


def test_verdict_follows_the_direction_of_the_metric():
    assert verdict(-0.2, 0.05, True) == "worse" and verdict(0.2, 0.05, True) == "better"
    assert verdict(0.2, 0.05, False) == "worse"  # e.g. a perplexity that went up
    assert verdict(-0.05, 0.05, True) == "same" and verdict(None, None, True) == "unknown"
    assert verdict(0.0, 0.0, True) == "same" and verdict(-0.1, 0.0, True) == "worse"


def test_forgetting_reads_lost_next_to_the_task_metric(workspace):
    from finetune.evaluation.benchmark import Benchmark
    from finetune.evaluation.forgetting import read_check
    from tests.helpers_runs import make_run

    run = make_run(workspace, run_name="judged")
    row = MetricRow(BUILTIN_TASK, "acc", 0.6, 0.05, 0.4, 0.05, -0.2, 0.05, True, True, 60, "worse")
    check = read_check(run, Benchmark(run.name, "final", [BUILTIN_TASK], [row], kind="forgetting"))
    assert check.verdict == "lost" and "0.600 → 0.400" in check.text() and "no batch evaluation" in check.text()


# the real thing ---------------------------------------------------------------------------------------
def plain_lm_eval_acc(model, tokenizer, task_spec, limit: int) -> float:
    """The accuracy plain lm-eval gives a model object (no code of ours around it)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8)
    out = simple_evaluate(model=lm, tasks=[task_spec], task_manager=TaskManager(include_defaults=False), limit=limit)
    return out["results"][BUILTIN_TASK]["acc,none"]


@pytest.mark.slow
def test_benchmark_scores_base_and_adapter_as_plain_lm_eval_does_and_is_saved(trained_sft_run, copy_run, workspace):
    from peft import PeftModel

    from finetune.evaluation.benchmark import latest_benchmark, run_benchmark
    from finetune.evaluation.benchmark_speed import curated_rows, load_speeds
    from finetune.evaluation.compare import release_comparer
    from tests.helpers_runs import load_plain_base

    run = copy_run(trained_sft_run)
    seen = []
    bench = run_benchmark(run, BUILTIN_TASK, limit=16, progress=lambda f, m: seen.append((f, m)))
    release_comparer()
    acc = {r.metric: r for r in bench.rows}["acc"]
    assert acc.n == 16 and acc.paired and acc.base_stderr > 0 and acc.finetuned_stderr > 0
    assert acc.diff == pytest.approx(acc.finetuned - acc.base) and acc.verdict in ("worse", "better", "same")
    # the base is the base: the same accuracy plain lm-eval gives the plain 4-bit demo, the adapter the PEFT model
    (spec,) = resolve_tasks(BUILTIN_TASK)
    base, tokenizer = load_plain_base(workspace, "4bit")
    assert acc.base == pytest.approx(plain_lm_eval_acc(base, tokenizer, spec.spec, 16))
    tuned = PeftModel.from_pretrained(base, str(run.adapter_dir)).eval()
    assert acc.finetuned == pytest.approx(plain_lm_eval_acc(tuned, tokenizer, spec.spec, 16))
    # progress from 0 to 1 over both sides, results on disk, a speed measured for the curated list's times
    assert seen[-1][0] == pytest.approx(1.0) and any("base:" in m for _, m in seen)
    saved = latest_benchmark(run)
    assert saved.folder == bench.folder and saved.rows == bench.rows
    assert json.loads((bench.folder / "lm_eval_base.json").read_text())["results"][BUILTIN_TASK]
    assert load_speeds(workspace)["demo | 4bit | cpu"]["loglikelihood"]["per_s"] > 0
    times = {r["task"]: r["time"] for r in curated_rows(workspace, run.config())}
    assert "here" in times["mmlu"] and "not measured" not in times["mmlu"]
    assert "not measured" in times["gsm8k"]  # generation speed: no generation task ran


@pytest.mark.slow
def test_a_stopped_benchmark_saves_nothing(trained_sft_run, copy_run):
    from finetune.evaluation.benchmark import list_benchmarks, run_benchmark

    run = copy_run(trained_sft_run)
    calls = []
    bench = run_benchmark(run, BUILTIN_TASK, limit=40, stop=lambda: bool(calls) or calls.append(1))
    assert bench.stopped and not bench.rows and list_benchmarks(run) == []


@pytest.mark.slow
def test_forgetting_check_on_a_trained_run(trained_sft_run, copy_run):
    from finetune.evaluation.forgetting import forgetting_check, latest_check

    run = copy_run(trained_sft_run)
    check = forgetting_check(run, limit=12)
    assert check.verdict in ("kept", "lost", "gained") and check.general.n == 12
    assert check.benchmark.kind == "forgetting" and latest_check(run).general == check.general
    assert check.verdict.split()[0] in check.text()

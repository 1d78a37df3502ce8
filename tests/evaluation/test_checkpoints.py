"""The best checkpoint by the numbers (finetune/evaluation/checkpoints.py): every checkpoint scored as a curve
with the base as a line and the best marked, then exported (finetune/export/checkpoint.py through the export
desk) and continued from (`start_from_run: run@step`)."""

from __future__ import annotations

import zipfile

import pytest

from finetune.errors import ConfigError, RunError
from finetune.evaluation.checkpoints import CheckpointCurve, CurvePoint
from finetune.names import checkpoint_ref, split_checkpoint_ref


def test_checkpoint_refs_name_a_step_of_a_run_or_its_folder():
    assert checkpoint_ref("my-run", 20) == "my-run@20"
    assert split_checkpoint_ref("my-run@20") == ("my-run", 20)
    assert split_checkpoint_ref("my-run@checkpoint-20") == ("my-run", 20)
    assert split_checkpoint_ref("/w/runs/r/checkpoints/checkpoint-7") == ("/w/runs/r", 7)
    assert split_checkpoint_ref("my-run") == ("my-run", None)
    assert split_checkpoint_ref("/w/runs/r/adapter") == ("/w/runs/r/adapter", None)
    with pytest.raises(ValueError, match="<run>@<step>"):
        split_checkpoint_ref("my-run@latest")


def test_the_best_point_follows_the_direction_of_its_metric():
    points = [
        CurvePoint("checkpoint-5", 5, "r@5", {"rouge_l": 0.5, "perplexity": 4.0}),
        CurvePoint("checkpoint-10", 10, "r@10", {"rouge_l": 0.8, "perplexity": 3.0}),
        CurvePoint("checkpoint-15", 15, "r@15", {"rouge_l": 0.8, "perplexity": 3.5}),
        CurvePoint("final", 15, "r", {"rouge_l": None, "perplexity": 3.5}),
    ]
    curve = CheckpointCurve("r", "batch", "rouge_l", {"rouge_l": 0.1}, points, ["rouge_l", "perplexity"])
    assert curve.best().name == "checkpoint-10"  # a tie goes to the earlier step
    assert curve.best("perplexity").name == "checkpoint-10" and curve.higher_is_better
    assert CheckpointCurve.from_dict(curve.to_dict()) == curve


@pytest.mark.slow
def test_curve_of_a_run_with_four_checkpoints_marks_the_best_and_exports_and_continues_it(
    trained_curve_run, copy_run, workspace
):
    from finetune.evaluation.compare import GenerationSettings, release_comparer
    from finetune.evaluation.report import build_report
    from finetune.studio import Studio
    from finetune.train.preference import start_adapter_dir
    from finetune.train.start import start_training

    run = copy_run(trained_curve_run, "curve-copy")  # its own name: the Studio finds a session job by name
    assert [p.name for p in run.checkpoints()] == [f"checkpoint-{s}" for s in (6, 12, 18, 24)]
    studio = Studio(workspace)
    seen = []
    curve = studio.judge.checkpoint_curve(run.name, limit=3, settings=GenerationSettings(max_new_tokens=16),
                                          progress=lambda d, t: seen.append((d, t)))  # fmt: skip
    release_comparer()
    assert [p.name for p in curve.points] == [
        "checkpoint-6",
        "checkpoint-12",
        "checkpoint-18",
        "checkpoint-24",
        "final",
    ]
    assert [p.step for p in curve.points] == [6, 12, 18, 24, 24] and seen[-1] == (18, 18)  # 3 rows x (base + 5)
    assert curve.metric == "rouge_l" and set(curve.metrics) >= {"exact_match", "rouge_l", "bleu", "perplexity"}
    assert all(isinstance(p.eval_loss, float) for p in curve.points)  # each checkpoint is at an evaluation step
    assert curve.points[-1].scores == curve.points[-2].scores  # the final adapter is the last checkpoint
    best = curve.best()
    assert best.scores["rouge_l"] == max(p.scores["rouge_l"] for p in curve.points)
    assert best.scores["rouge_l"] > curve.base["rouge_l"]  # the base, as a line, is below the fine-tune
    assert studio.judge.latest_curve(run.name).best().name == best.name
    figure = studio.judge.curve_figure(curve)
    assert any(t.name == f"best: {best.name}" for t in figure.data)
    assert "Checkpoint curve" in build_report(run).read_text()

    # export the best checkpoint: its adapter files, and a merged model of it
    step = 12 if best.name == "final" else best.step
    archive = studio.export.export_checkpoint(run.name, step, "zip")
    assert archive.name == f"{run.name}-checkpoint-{step}-adapter.zip"
    with zipfile.ZipFile(archive) as zf:
        weights = zf.read("adapter_model.safetensors")
    assert weights == (run.checkpoints_dir / f"checkpoint-{step}" / "adapter_model.safetensors").read_bytes()
    merged = studio.export.export_checkpoint(run.name, f"checkpoint-{step}", "merge")
    assert merged.where == f"exports/merged-checkpoint-{step}" and (merged.folder / "config.json").is_file()
    with pytest.raises(RunError, match="no saved adapter in checkpoint-7"):
        studio.export.export_checkpoint(run.name, 7, "zip")

    # continue from it: a new run starts from that checkpoint's adapter
    cfg = run.config().replace(run_name="continued", start_from_run=f"{run.name}@{step}", max_steps=2, save_steps=2)
    assert start_adapter_dir(cfg, workspace) == run.checkpoints_dir / f"checkpoint-{step}"
    with pytest.raises(ConfigError, match="no checkpoint at step 7 \\(kept: 6, 12, 18, 24\\)"):
        start_adapter_dir(cfg.replace(start_from_run=f"{run.name}@7"), workspace)
    job = start_training(cfg, workspace=workspace)
    assert job.wait(600) == "done", job.message
    assert f"starting from the adapter {run.checkpoints_dir / f'checkpoint-{step}'}" in job.run.log_path.read_text()


@pytest.mark.slow
def test_benchmark_curve_scores_every_checkpoint_on_lm_eval_tasks(trained_curve_run, copy_run):
    from finetune.evaluation.checkpoints import benchmark_curve
    from finetune.evaluation.compare import release_comparer

    run = copy_run(trained_curve_run)
    curve = benchmark_curve(run, "finetune_general", limit=8)
    release_comparer()
    assert curve.kind == "benchmark" and curve.metric == "finetune_general acc" and len(curve.points) == 5
    assert all(0 <= p.scores["finetune_general acc"] <= 1 for p in curve.points)
    assert curve.best() is not None and 0 <= curve.base["finetune_general acc"] <= 1

"""The built-in demo model: what it knows before fine-tuning, and that the app's default first run
(the CPU preset on the sample data) teaches it to answer the sample's questions."""

from __future__ import annotations

import pytest

from finetune.config import RunConfig
from finetune.demo import SAMPLE_DATASET, pretraining_texts
from finetune.evaluation import evaluate
from finetune.evaluation.compare import GenerationSettings, release_comparer
from finetune.presets import apply_preset
from finetune.train.start import start_training


def test_pretraining_text_never_shows_the_chat_format():
    texts = pretraining_texts()
    assert len(texts) == len(SAMPLE_DATASET.read_text(encoding="utf-8").splitlines())
    assert not any("<|im_start|>" in t or "<|im_end|>" in t for t in texts)
    assert texts[0].startswith("Question: ") and "\nAnswer:\n" in texts[0]


@pytest.mark.slow
def test_default_first_run_answers_the_sample(workspace):
    """App defaults (RunConfig + cpu preset: sample data, demo, QLoRA), real training and generation."""
    cfg = apply_preset(RunConfig(), "cpu")
    assert cfg.model_name_or_path == "demo" and cfg.dataset_path == ""
    job = start_training(cfg, workspace=workspace)
    assert job.wait(600) == "done", job.message
    try:
        settings = GenerationSettings(max_new_tokens=64)
        on_sample = evaluate(job.run, SAMPLE_DATASET, limit=20, settings=settings, save=False).summary
        held_out = evaluate(job.run, None, limit=20, settings=settings, save=False).summary
    finally:
        release_comparer()
    assert on_sample["n"] == 20
    assert on_sample["base"]["exact_match"] <= 0.1, on_sample["base"]
    assert on_sample["finetuned"]["exact_match"] >= 0.8, on_sample["finetuned"]
    # the held-out rows (the Test tab's default): known facts in a format the base never saw
    assert held_out["n"] >= 10
    assert held_out["base"]["exact_match"] <= 0.1, held_out["base"]
    assert held_out["finetuned"]["exact_match"] >= 0.8, held_out["finetuned"]

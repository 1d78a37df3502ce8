"""Preference data (DPO/ORPO/KTO): formats, row errors, the objective check, length audit, preview,
planner and memory estimate. Fast: no training."""

from __future__ import annotations

import json

import pytest

from finetune.config import RunConfig
from finetune.data import load_records, prepare_data, render_example, token_length_stats
from finetune.demo import SAMPLES_DIR
from finetune.errors import ConfigError, DataError
from finetune.plan.hardware import Machine
from finetune.plan.planner import estimate, make_plan

USER = [{"role": "user", "content": "What is the capital of France?"}]
GOOD = [{"role": "assistant", "content": "Paris."}]
BAD = [{"role": "assistant", "content": "The capital of France is Paris."}]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer():
    from finetune.models import load_tokenizer

    return load_tokenizer(RunConfig())


@pytest.mark.parametrize(
    ("name", "fmt", "conversational"),
    [
        ("sample_preference.jsonl", "preference", True),
        ("sample_preference_implicit.jsonl", "preference", True),
        ("sample_preference_text.csv", "preference", False),
        ("sample_kto.jsonl", "unpaired_preference", True),
    ],
)
def test_bundled_preference_samples_are_detected_and_normalized(name, fmt, conversational):
    report = load_records(SAMPLES_DIR / name)
    assert report.format == fmt and report.shape == fmt
    assert not report.skipped and report.kept_rows == report.total_rows
    row = report.rows[0]
    assert isinstance(row["prompt"], list) == conversational
    if fmt == "preference":
        assert row["chosen"] != row["rejected"]
    else:
        assert isinstance(row["label"], bool)


def test_implicit_prompt_is_split_like_the_explicit_sample():
    explicit = load_records(SAMPLES_DIR / "sample_preference.jsonl").rows
    implicit = load_records(SAMPLES_DIR / "sample_preference_implicit.jsonl").rows
    assert implicit == explicit  # TRL's extract_prompt on conversations that repeat the prompt


def test_preference_row_errors_name_row_and_field(tmp_path):
    system = [{"role": "system", "content": "Be brief."}]
    records = [
        {"prompt": "Q1", "chosen": "A", "rejected": "B"},  # 1 ok
        {"prompt": "Q2", "rejected": "B"},  # 2 no chosen
        {"prompt": "Q3", "chosen": "A", "rejected": "  "},  # 3 empty rejected
        {"prompt": "Q4", "chosen": "same", "rejected": "same"},  # 4 identical
        {"chosen": USER + GOOD, "rejected": [{"role": "user", "content": "Other?"}] + BAD},  # 5 prompt mismatch
        {"prompt": "Q6", "chosen": "A", "rejected": None},  # 6 null
        {"chosen": system + USER + GOOD, "rejected": system + USER + BAD},  # 7 implicit ok (text prompt absent)
    ]
    report = load_records(write_jsonl(tmp_path / "pairs.jsonl", records))
    reasons = {issue.row: issue.reason for issue in report.skipped}
    assert "'chosen' is missing" in reasons[2]
    assert "'rejected' is empty" in reasons[3]
    assert "identical" in reasons[4]
    assert "prompt differs between chosen and rejected" in reasons[5]
    assert "'rejected' is empty" in reasons[6]
    # the conversational row 7 is of the other kind than the first (text) row: skipped, said why
    assert "conversations" in reasons[7] and "plain text" in reasons[7]
    assert report.kept_rows == 1


def test_kto_labels_must_be_booleans(tmp_path):
    records = [
        {"prompt": "Q", "completion": "A", "label": True},
        {"prompt": "Q", "completion": "B", "label": "false"},  # text true/false (CSV) is accepted
        {"prompt": "Q", "completion": "C", "label": "yes"},
        {"prompt": "Q", "completion": "D", "label": 1},
        {"prompt": "Q", "completion": "E", "label": None},
    ]
    report = load_records(write_jsonl(tmp_path / "kto.jsonl", records))
    assert report.format == "unpaired_preference"
    assert [r["label"] for r in report.rows] == [True, False]
    reasons = {issue.row: issue.reason for issue in report.skipped}
    assert "not a boolean" in reasons[3] and "'yes'" in reasons[3]
    assert "not a boolean" in reasons[4]
    assert "'label' is missing" in reasons[5]


def test_column_mapping_works_for_pairs(tmp_path):
    records = [{"question": "Q", "good": "A", "bad": "B"}]
    path = write_jsonl(tmp_path / "mapped.jsonl", records)
    report = load_records(path, column_mapping={"prompt": "question", "chosen": "good", "rejected": "bad"})
    assert report.format == "preference" and report.rows == [{"prompt": "Q", "chosen": "A", "rejected": "B"}]


def test_objective_must_fit_the_data():
    with pytest.raises(DataError, match="set objective to dpo, orpo or kto"):
        prepare_data(RunConfig(dataset_path=str(SAMPLES_DIR / "sample_preference.jsonl")))
    with pytest.raises(DataError, match="objective dpo needs preference pairs"):
        prepare_data(RunConfig(objective="dpo", dataset_path=str(SAMPLES_DIR / "sample_chat.jsonl")))
    with pytest.raises(DataError, match="train with objective kto"):
        prepare_data(RunConfig(objective="orpo", dataset_path=str(SAMPLES_DIR / "sample_kto.jsonl")))
    # kto reads pairs too (TRL unpairs them); dpo with no file gets the bundled preference sample
    assert prepare_data(RunConfig(objective="kto")).shape == "preference"
    assert prepare_data(RunConfig(objective="dpo")).report.source.endswith("sample_preference.jsonl")


def test_length_audit_counts_prompt_and_longer_answer(tokenizer):
    row = {"prompt": USER, "chosen": GOOD, "rejected": BAD}
    longer = len(tokenizer.apply_chat_template(USER + BAD, tokenize=True, return_dict=True)["input_ids"])
    stats = token_length_stats([row], tokenizer, max_length=1024)
    assert stats["max"] == longer
    text_row = {"prompt": "Question: Q\nAnswer:", "chosen": " A", "rejected": " a much longer answer"}
    expected = len(tokenizer("Question: Q\nAnswer: a much longer answer" + tokenizer.eos_token)["input_ids"])
    assert token_length_stats([text_row], tokenizer, max_length=1024)["max"] == expected


def test_preview_shows_prompt_and_both_answers(tokenizer):
    rendered = render_example({"prompt": USER, "chosen": GOOD, "rejected": BAD}, tokenizer)
    pair = rendered["pair"]
    assert "What is the capital of France?" in pair["prompt_text"]
    assert [a["name"] for a in pair["answers"]] == ["chosen", "rejected"]
    assert pair["answers"][0]["content"] == "Paris." and "Paris." in pair["answers"][0]["text"]
    assert rendered["num_tokens"] == pair["prompt_tokens"] + max(a["tokens"] for a in pair["answers"])
    kto = render_example({"prompt": "Q:", "completion": " A", "label": False}, tokenizer)
    assert kto["pair"]["label"] is False and kto["pair"]["answers"][0]["name"] == "bad"


def test_config_objective_fields():
    config = RunConfig().with_overrides(["objective=dpo", "beta=0.2", "dpo_loss_type=ipo"])
    assert config.is_preference and config.beta == 0.2 and config.dpo_loss_type == "ipo"
    problems = RunConfig(objective="ppo", beta=0, dpo_loss_type="nope").validate()
    assert any(p.startswith("objective:") for p in problems)
    assert any(p.startswith("beta:") for p in problems)
    assert any(p.startswith("dpo_loss_type:") for p in problems)
    with pytest.raises(ConfigError, match="start_from_run"):
        RunConfig(start_from_run="sft-run", method="full", quantization="none").check()


def test_planner_and_estimate_know_the_preference_passes():
    machine = Machine.virtual("cuda", 80)
    base = RunConfig(model_name_or_path="Qwen/Qwen2.5-0.5B-Instruct", gradient_checkpointing=False)
    base = base.replace(padding_free=False, resize_micro_batch=False)
    sft_plan, sft = estimate(base, machine)
    dpo_plan, dpo = estimate(base.replace(objective="dpo"), machine)
    _, kto = estimate(base.replace(objective="kto"), machine)
    assert dpo.inputs["batch_size"] == 2 * sft.inputs["batch_size"]  # chosen + rejected in one forward pass
    assert dpo.breakdown["activations"] == pytest.approx(2 * sft.breakdown["activations"], rel=0.01)
    assert kto.breakdown["activations"] == pytest.approx(sft.breakdown["activations"], rel=0.01)
    assert "adapter disabled" in dpo_plan.reason("objective")
    assert not dpo_plan.padding_free and dpo_plan.sampler == "random"
    assert ("objective", "dpo") in [(n, v) for n, v, _ in dpo_plan.decisions()]
    started = estimate(base.replace(objective="dpo", start_from_run="sft"), machine)[1]
    assert started.breakdown["adapter_weights"] == pytest.approx(2 * dpo.breakdown["adapter_weights"], rel=0.05)
    full = make_plan(base.replace(objective="dpo", method="full", quantization="none"), machine, model=None)
    assert "computed once before training" in full.reason("objective")


def test_pair_tokens_follow_trl_and_truncate_at_max_length(tokenizer):
    from finetune.data.templates import pair_token_ids
    from finetune.evaluation.preference import pairs_of

    row = {"prompt": USER, "chosen": GOOD, "rejected": BAD}
    prompt_ids, (chosen, rejected) = pair_token_ids(tokenizer, row)
    full = tokenizer.apply_chat_template(USER + BAD, tokenize=True, return_dict=True)["input_ids"]
    assert prompt_ids + rejected == list(full)
    _, (cut_chosen, cut_rejected) = pair_token_ids(tokenizer, row, max_length=len(prompt_ids) + 2)
    assert cut_chosen == chosen[:2] and cut_rejected == rejected[:2]
    assert pair_token_ids(tokenizer, row, max_length=len(prompt_ids))[1] == [[], []]
    # unpaired rows pair up by prompt; a prompt with one label only is counted, not used
    unpaired = [
        {"prompt": "Q1", "completion": "good", "label": True},
        {"prompt": "Q1", "completion": "bad", "label": False},
        {"prompt": "Q2", "completion": "alone", "label": True},
    ]
    pairs, notes = pairs_of(unpaired)
    assert pairs == [{"prompt": "Q1", "chosen": "good", "rejected": "bad"}] and "1 unpaired" in notes[0]

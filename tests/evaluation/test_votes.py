"""Blind A/B votes turned into preference pairs (finetune/evaluation/votes.py): the preferred answer is
`chosen` whichever side it was shown on, ties and "both bad" are left out and counted, several runs' votes
combine, and the file is preference data the app reads as such."""

from __future__ import annotations

import json

import pytest

from finetune.evaluation.ab import BlindPair, record_vote
from finetune.evaluation.common import EvaluationError
from finetune.evaluation.votes import votes_to_preference
from tests.helpers_runs import make_run


def pair(prompt: str, base: str, tuned: str, a_is: str, system: str = "") -> BlindPair:
    a, b = (base, tuned) if a_is == "base" else (tuned, base)
    return BlindPair(prompt, a, b, a_is, {"system_prompt": system, "temperature": 0.0}, "final")


@pytest.fixture
def voted(workspace):
    run = make_run(workspace, run_name="voted")
    record_vote(run, pair("What is 2+2?", "22", "4", a_is="base"), "b")  # fine-tuned preferred (shown as B)
    record_vote(run, pair("Capital of Peru?", "Lima", "Paris", a_is="finetuned"), "b")  # base preferred (B)
    record_vote(run, pair("Say hi", "hi", "hello", a_is="base", system="Be brief."), "a")  # base preferred (A)
    record_vote(run, pair("Colour of grass?", "green", "green!", a_is="base"), "tie")
    record_vote(run, pair("Name a fish", "dog", "cat", a_is="finetuned"), "both_bad")
    return run


def test_decided_votes_become_chosen_rejected_pairs_and_the_rest_is_counted(voted, workspace):
    result = votes_to_preference([voted])
    assert (result.votes, result.pairs, result.ties, result.both_bad) == (5, 3, 1, 1)
    assert result.by_winner == {"finetuned": 1, "base": 2}
    assert result.path.parent == workspace / "datasets" and result.path.suffix == ".jsonl"
    rows = [json.loads(line) for line in result.path.read_text().splitlines()]
    by_prompt = {r["prompt"][-1]["content"]: r for r in rows}
    assert by_prompt["What is 2+2?"]["chosen"] == [{"role": "assistant", "content": "4"}]
    assert by_prompt["What is 2+2?"]["rejected"] == [{"role": "assistant", "content": "22"}]
    assert by_prompt["Capital of Peru?"]["chosen"][0]["content"] == "Lima"
    assert by_prompt["Say hi"]["prompt"][0] == {"role": "system", "content": "Be brief."}  # the vote's system prompt
    assert "1 tie(s) and 1 both-bad vote(s) left out" in result.text()


def test_the_file_is_preference_data_the_app_trains_on(voted):
    from finetune.data import load_records

    report = load_records(str(votes_to_preference([voted]).path))
    assert report.format == "preference" and len(report.rows) == 3 and not report.skipped


def test_several_runs_combine_and_repeats_count_once(voted, workspace):
    other = make_run(workspace, run_name="other")
    record_vote(other, pair("What is 2+2?", "22", "4", a_is="finetuned"), "a")  # the same pair again
    record_vote(other, pair("Largest ocean?", "Pacific", "Atlantic", a_is="base"), "a")
    result = votes_to_preference([voted, other], workspace / "out" / "pairs.jsonl")
    assert (result.pairs, result.duplicates, result.runs) == (4, 1, ["voted", "other"])
    assert result.path == workspace / "out" / "pairs.jsonl"


def test_nothing_is_written_without_a_decided_vote(workspace):
    run = make_run(workspace, run_name="undecided")
    with pytest.raises(EvaluationError, match="no blind A/B votes yet"):
        votes_to_preference([run])
    record_vote(run, pair("Hi", "a", "b", a_is="base"), "tie")
    with pytest.raises(EvaluationError, match="No preference pair can be made: 0 preference pair"):
        votes_to_preference([run], workspace / "pairs.jsonl")
    assert not (workspace / "pairs.jsonl").exists() and not (workspace / "datasets").exists()
    with pytest.raises(EvaluationError, match="must end in .jsonl"):
        votes_to_preference([run], workspace / "pairs.csv")


def test_a_run_without_a_chat_template_gets_plain_text_pairs(workspace):
    run = make_run(workspace, run_name="plain")
    config = json.loads((run.adapter_dir / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (run.adapter_dir / "tokenizer_config.json").write_text(json.dumps(config))
    for name in ("chat_template.jinja", "chat_template.json"):
        (run.adapter_dir / name).unlink(missing_ok=True)
    record_vote(run, pair("Q?", "bad", "good", a_is="base", system="Sys."), "b")
    (row,) = [json.loads(line) for line in votes_to_preference([run]).path.read_text().splitlines()]
    assert row == {"prompt": "Sys.\n\nQ?", "chosen": "good", "rejected": "bad"}

"""Judging a fine-tune: metrics, blind A/B votes and their tally, batch evaluation, the
checkpoint grid, word diffs and the report.

Most tests use a scripted comparer (known answers, a character tokenizer) so scoring,
filters, stop/progress and persistence are checked exactly and without a model; the
`slow` ones run the real demo model through one shared fake run with two checkpoints."""

from __future__ import annotations

import argparse
import json
import random
import threading
from pathlib import Path

import pytest
from helpers_runs import make_run_with_data

from finetune.cli.evaluate import register_cli
from finetune.config import RunConfig
from finetune.errors import RunError
from finetune.evaluation import (
    EvaluationError,
    build_report,
    evaluate,
    export_votes,
    list_prompt_sets,
    load_evaluation,
    load_grid,
    load_prompt_set,
    load_votes,
    new_blind_pair,
    prompts_from_text,
    record_vote,
    run_prompt_grid,
    save_prompt_set,
    tally,
    wilson_interval,
    word_diff,
    word_diff_html,
)
from finetune.evaluation.ab import BlindPair
from finetune.evaluation.compare import Generation, GenerationSettings, release_comparer
from finetune.evaluation.examples import examples_from_rows
from finetune.evaluation.metrics import (
    detect_labels,
    exact_match,
    extract_label,
    label_scores,
    lcs_length,
    rouge_l,
    score_answer,
    strip_think,
    token_f1,
)
from finetune.runs import create_run

FAST = GenerationSettings(max_new_tokens=4)
SENTIMENT = [
    ("I loved this film", "positive"),
    ("Terrible, a waste of time", "negative"),
    ("Great acting and story", "positive"),
    ("Boring and too long", "negative"),
]


def chat(user: str, answer: str, system: str = "") -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


# a scripted comparer: known answers, no model ------------------------------------------------
class CharTokenizer:
    """One token per character; a chat template that writes `role: content` lines."""

    chat_template = "role: content"

    def __call__(self, text, return_tensors="pt"):
        import torch

        ids = torch.tensor([[ord(c) for c in text]])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def apply_chat_template(self, messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"):
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + (
            "assistant: " if add_generation_prompt else ""
        )
        return self(text)

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(int(i)) for i in ids)


class ScriptedComparer:
    """Answers by prompt substring: answers[key] = (base answer, fine-tuned answer)."""

    full = False

    def __init__(self, run, answers: dict[str, tuple[str, str]]):
        self.run, self.answers, self.tokenizer = run, answers, CharTokenizer()
        self.active_adapter = "final"

    def load_adapter(self, path, adapter_name=None):
        self.active_adapter = "final" if Path(path).name == "adapter" else Path(path).name.replace("-", "_")
        return self.active_adapter

    def answer(self, text: str, use_adapter: bool) -> str:
        for key, (base, tuned) in self.answers.items():
            if key in text:
                return tuned if use_adapter else base
        return "no idea"

    def generate(self, prompt, use_adapter, settings=None, *, adapter=None, stop=None, as_text=False):
        text = prompt if isinstance(prompt, str) else " ".join(str(m["content"]) for m in prompt)
        answer = self.answer(text, use_adapter)
        return Generation(answer, tokens=len(answer), seconds=0.01)  # one token per character (CharTokenizer)


@pytest.fixture
def label_run(workspace):
    """A run (no model files) whose validation file holds four sentiment rows."""
    train = [chat(f"train {i}", "positive") for i in range(4)]
    return make_run_with_data(workspace, train, [chat(t, a) for t, a in SENTIMENT], with_adapter=False)


def sentiment_comparer(run):
    """Fine-tuned answers right (one with reasoning, one chatty); base always says 'positive'."""
    answers = {
        "loved": ("Positive.", "<think>happy words</think>Positive"),
        "Terrible": ("positive", "Negative."),
        "Great": ("positive!", "The sentiment is positive."),
        "Boring": ("Positive", "negative"),
    }
    return ScriptedComparer(run, answers)


# metrics --------------------------------------------------------------------------------------
def test_strip_think_removes_reasoning_closed_unclosed_and_stray():
    assert strip_think("<think>hmm\nlong</think>\n\nParis") == "Paris"
    assert strip_think("<THINK>a</THINK>one <think>b</think>two") == "one two"
    assert strip_think("  <think>cut off by max_new_tokens") == ""
    assert strip_think("reasoning opened by the template</think> 42") == "42"
    assert strip_think("no reasoning") == "no reasoning"


def test_exact_match_and_token_f1_known_values():
    assert exact_match("The Paris!", "paris") == 1.0
    assert exact_match("Paris, France", "Paris") == 0.0
    assert token_f1("the cat sat on the mat", "the cat lay on a mat") == pytest.approx(0.75)  # 3 of 4 words
    assert token_f1("w x y z", "w x") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0


def test_rouge_l_known_values():
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4
    assert rouge_l("police killed the gunman", "police kill the gunman") == pytest.approx(2 / 3)  # LCS 2 of 3
    assert rouge_l("w x y z", "w y") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert rouge_l("d c b", "b c d") == pytest.approx(1 / 3)  # order matters, unlike token F1
    assert token_f1("d c b", "b c d") == 1.0


def test_scores_ignore_reasoning_seed_004():
    scores = score_answer("<think>The user asks about France.</think>Paris", "Paris")
    assert scores["exact_match"] == 1.0 and scores["rouge_l"] == 1.0


def test_label_detection_extraction_and_macro_f1():
    assert detect_labels(["positive", "negative", "Positive", "negative"]) == ["positive", "negative"]
    assert detect_labels(["Paris", "Rome", "Madrid", "Oslo"]) is None  # short but all different: QA
    assert detect_labels(["yes", "no", "a much longer answer here", "yes"]) is None
    labels = ["positive", "negative", "very negative"]
    assert extract_label("Negative.\nBecause...", labels) == "negative"
    assert extract_label("I'd say VERY negative overall", labels) == "very negative"
    assert extract_label("<think>positive?</think>\n\nnegative", labels) == "negative"
    assert extract_label("no idea\npositive", labels) is None  # only the first line counts
    scores = label_scores(
        ["positive", "positive", None, "negative"], ["positive", "negative", "negative", "negative"], labels
    )
    assert scores.accuracy == pytest.approx(0.5)
    # positive: tp1 fp1 fn0 -> 2/3; negative: tp1 fp0 fn2 -> 0.5; "very negative" absent on both sides
    assert scores.per_label == pytest.approx({"positive": 2 / 3, "negative": 0.5})
    assert scores.macro_f1 == pytest.approx((2 / 3 + 0.5) / 2)


# tally ----------------------------------------------------------------------------------------
def test_wilson_interval_known_values():
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert wilson_interval(0, 0) == (None, None)


def pair(a_is="base", prompt="q") -> BlindPair:
    return BlindPair(prompt, "answer A", "answer B", a_is, {"seed": 0}, "final")


def test_tally_counts_ties_apart_and_both_bad_out(workspace):
    run = create_run(RunConfig(run_name="votes"), workspace)
    for a_is, choice in [("base", "b"), ("finetuned", "A"), ("base", "a"), ("base", "tie"), ("base", "both bad")]:
        record_vote(run, pair(a_is), choice)
    t = tally(load_votes(run))
    assert (t.wins, t.losses, t.ties, t.both_bad, t.n) == (2, 1, 1, 1, 5)
    assert t.win_rate == pytest.approx(2 / 3)
    assert (t.ci_low, t.ci_high) == pytest.approx(wilson_interval(2, 3))
    assert t.score_with_ties == pytest.approx(2.5 / 4)
    assert "2 of 3 decided" in t.text()
    assert tally([]).win_rate is None and tally([]).text() == "No votes yet."


def test_votes_persist_export_and_refuse_bad_input(workspace):
    run = create_run(RunConfig(run_name="persist"), workspace)
    first = pair("finetuned", prompt='He said "hi", then\nleft')
    vote = record_vote(run, first, "a")
    assert (vote.winner, vote.a_is, vote.choice) == ("finetuned", "finetuned", "a")
    record_vote(run, pair("base"), "both_bad")
    with pytest.raises(EvaluationError, match="already has a vote"):
        record_vote(run, first, "b")  # a double click counts once
    with pytest.raises(EvaluationError, match="a, b, tie, both_bad"):
        record_vote(run, pair(), "maybe")
    with open(run.path / "votes.jsonl", "a") as fh:
        fh.write('{"prompt": "cut by a kil')  # a kill mid-write loses only that line

    from finetune.runs import open_run

    reloaded = load_votes(open_run(run.path))  # a new Run object: read back from disk
    assert [v.winner for v in reloaded] == ["finetuned", "both_bad"]
    assert reloaded[0].prompt == first.prompt and reloaded[0].settings == {"seed": 0}

    import pandas as pd

    frame = pd.read_csv(export_votes(run, "csv"))
    assert list(frame["winner"]) == ["finetuned", "both_bad"] and frame["prompt"][0] == first.prompt
    lines = export_votes(run, "jsonl").read_text().splitlines()
    assert [json.loads(line)["choice"] for line in lines] == ["a", "both_bad"]
    with pytest.raises(EvaluationError, match="csv or jsonl"):
        export_votes(run, "xlsx")


def test_sides_are_random_and_reveal_is_right(workspace):
    run = create_run(RunConfig(run_name="sides"), workspace)
    comparer = ScriptedComparer(run, {"q": ("base says", "tuned says")})
    seen = set()
    for seed in range(12):
        p = new_blind_pair(comparer, "q", FAST, random.Random(seed))
        seen.add(p.a_is)
        shown = {"a": p.answer_a, "b": p.answer_b}
        tuned_side = next(side for side, model in p.reveal().items() if model == "finetuned")
        assert shown[tuned_side] == "tuned says"
        assert "a_is" not in p.public()
        assert record_vote(run, p, tuned_side).winner == "finetuned"
    assert seen == {"base", "finetuned"}
    assert tally(load_votes(run)).wins == 12


# diff -----------------------------------------------------------------------------------------
def test_word_diff_rebuilds_both_texts_and_escapes_html():
    a, b = "the big cat sat\non the mat", "a small dog sat\non the <mat>"
    ops = word_diff(a, b)
    assert "".join(t for op, t in ops if op != "insert") == a
    assert "".join(t for op, t in ops if op != "delete") == b
    assert ops[0] == ("delete", "the big cat") and ops[1] == ("insert", "a small dog")
    html = word_diff_html(a, b)
    assert "&lt;mat&gt;</ins>" in html and "<mat>" not in html and "<del" in html


# rows -> examples --------------------------------------------------------------------------------
def test_examples_use_everything_before_the_last_assistant_turn():
    multi = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
        ]
    }
    rows = [multi, {"prompt": "Q: 1+1\nA:", "completion": " 2"}, {"messages": [{"role": "user", "content": "x"}]}]
    examples, skipped = examples_from_rows(rows)
    assert examples[0].prompt_input == multi["messages"][:3] and examples[0].reference == "4"
    assert examples[1].prompt_input == "Q: 1+1\nA:" and examples[1].reference == " 2"
    assert skipped == ["row 3: no assistant turn to use as the reference answer"]
    with pytest.raises(EvaluationError, match="no prompt/answer split"):
        examples_from_rows([{"text": "plain text"}])


# batch evaluation (scripted) -------------------------------------------------------------------
def test_batch_evaluation_scores_labels_filters_and_saves(label_run):
    calls = []
    evaluation = evaluate(sentiment_comparer(label_run), limit=10, progress=lambda d, t: calls.append((d, t)))
    s = evaluation.summary
    assert calls[0] == (0, 4) and calls[-1] == (4, 4)
    assert s["label_like"] and s["labels"] == ["positive", "negative"] and s["primary_metric"] == "accuracy"
    assert s["finetuned"]["accuracy"] == 1.0 and s["base"]["accuracy"] == 0.5
    assert s["finetuned"]["macro_f1"] == 1.0 and s["base"]["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert s["n"] == 4 and s["differ"] == 4 and s["finetuned_worse"] == 0 and s["finetuned_better"] == 2
    row = evaluation.rows[0]
    assert row.finetuned == "<think>happy words</think>Positive"  # only the generated part, never the prompt
    assert row.finetuned_scores["exact_match"] == 1.0  # scored after stripping the reasoning
    assert row.finetuned_tokens == len(row.finetuned)
    assert len(evaluation.filtered("differ")) == 4 and evaluation.filtered("worse") == []

    saved = sorted(p.name for p in evaluation.folder.iterdir())
    assert saved == ["rows.csv", "rows.jsonl", "summary.json"]
    again = load_evaluation(evaluation.folder)
    assert again.summary["finetuned"]["accuracy"] == 1.0 and again.rows[1].base_scores == evaluation.rows[1].base_scores
    assert len(again.to_dataframe()) == 4
    assert evaluation.figure().data[0].name == "base"


def test_forgetting_filter_and_stop(label_run):
    comparer = ScriptedComparer(label_run, {"loved": ("positive", "negative")})  # fine-tuned got worse
    stop = threading.Event()
    evaluation = evaluate(comparer, limit=3, progress=lambda d, t: d == 2 and stop.set(), stop=stop)
    assert evaluation.summary["stopped"] and evaluation.summary["n"] == 2 and evaluation.summary["requested"] == 3
    worse = evaluation.filtered("worse")
    assert [r.prompt for r in worse] == ["I loved this film"]
    assert evaluation.summary["finetuned_worse"] == 1


def test_text_data_cannot_be_evaluated(label_run, tmp_path):
    data = tmp_path / "lm.jsonl"
    data.write_text('{"text": "one"}\n{"text": "two"}\n')
    with pytest.raises(EvaluationError, match="no prompt/answer split"):
        evaluate(sentiment_comparer(label_run), data)


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="finetune")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_refuses_bad_output_before_loading_anything(label_run, capsys):
    assert cli(["evaluate", "--run", str(label_run.path), "--out", "rows.xlsx"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --out must end in .jsonl or .csv") and "Traceback" not in err


# prompt sets ----------------------------------------------------------------------------------
def test_prompt_sets_round_trip_and_names_are_checked(workspace):
    save_prompt_set("smoke", ["  What is 2+2?  ", "", "Name a colour."])
    assert load_prompt_set("smoke") == ["What is 2+2?", "Name a colour."]
    assert (workspace / "prompt_sets" / "smoke.json").is_file() and list_prompt_sets() == ["smoke"]
    with pytest.raises(RunError, match="not allowed"):
        save_prompt_set("../escape", ["x"])
    with pytest.raises(EvaluationError, match="empty"):
        save_prompt_set("empty", ["  "])
    with pytest.raises(EvaluationError, match="saved sets: smoke"):
        load_prompt_set("missing")
    assert prompts_from_text("a\n\nb\n") == ["a", "b"]
    assert prompts_from_text("line 1\nline 2\n---\nb") == ["line 1\nline 2", "b"]


# the real demo model --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, shared_cache):
    """One fake finished run with checkpoints 5 and 10, a final adapter and a small
    validation file; the cached comparer is released after the module."""
    from finetune.demo import demo_model_path

    ws = tmp_path_factory.mktemp("eval-workspace")
    demo_model_path(shared_cache)
    (ws / "cache").symlink_to(shared_cache / "cache", target_is_directory=True)
    train = [chat(f"train {i}", "positive") for i in range(4)]
    val = [chat(t, a, system="Answer with one word.") for t, a in SENTIMENT]
    release_comparer()
    yield make_run_with_data(ws, train, val, checkpoints=(5, 10))
    release_comparer()


@pytest.mark.slow
def test_grid_has_base_every_checkpoint_and_final(demo_run):
    progress = []
    grid = run_prompt_grid(
        demo_run, ["What is 17 plus 4?", "Say hello."], FAST, progress=lambda d, t: progress.append(d)
    )
    assert grid.columns == ["base", "checkpoint-5", "checkpoint-10", "final"]
    assert progress == list(range(9)) and not grid.stopped
    for row in grid.rows:
        assert all(row[c] for c in grid.columns)
        assert all(row[c] != row["base"] for c in grid.columns[1:])  # every adapter changes the answer
    assert list(grid.to_dataframe().columns) == ["prompt", *grid.columns]
    assert load_grid(grid.path).rows == grid.rows
    from finetune.evaluation.compare import cached_comparer

    assert cached_comparer().active_adapter == "final"  # the Compare tab is left on the final adapter


@pytest.mark.slow
def test_cli_json_summary_on_demo(demo_run, tmp_path, capsys):
    out = tmp_path / "rows.jsonl"
    argv = ["evaluate", "--run", str(demo_run.path), "--limit", "4", "--out", str(out), "--json"]
    assert cli([*argv, "--max-new-tokens", "4"]) == 0
    summary = json.loads(capsys.readouterr().out)
    for model in ("base", "finetuned"):
        assert {"n", "exact_match", "token_f1", "rouge_l", "accuracy", "macro_f1"} <= set(summary[model])
        assert summary[model]["n"] == 4
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and rows[0]["prompt"] == "I loved this film" and rows[0]["reference"] == "positive"
    assert all(r["base_tokens"] > 0 and "I loved" not in r["finetuned"] for r in rows)


@pytest.mark.slow
def test_blind_pair_on_demo_and_self_contained_report(demo_run):
    evaluate(demo_run, limit=2, settings=FAST)
    p = new_blind_pair(demo_run, "What is 17 plus 4?", FAST, random.Random(3))
    assert p.answer_a != p.answer_b and p.tokens_a > 0
    record_vote(demo_run, p, "tie")
    html = build_report(demo_run).read_text()
    assert "<script" not in html and 'src="http' not in html and "<link" not in html
    assert "Blind A/B votes" in html and "1 tie(s)" in html
    assert "rouge_l" in html and "<svg" in html
    markdown = build_report(demo_run, "markdown").read_text()
    assert "| ties | 1 |" in markdown and "## Batch evaluation" in markdown


def test_csv_cells_cannot_run_as_spreadsheet_formulas():
    from finetune.evaluation.common import spreadsheet_safe

    row = spreadsheet_safe({"prompt": '=HYPERLINK("x")', "base": "+1", "tuned": "fine", "n": -3})
    assert row == {"prompt": '\'=HYPERLINK("x")', "base": "'+1", "tuned": "fine", "n": -3}

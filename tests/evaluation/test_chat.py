"""The two-sided multi-turn chat (finetune/evaluation/chat.py): one history, the user's turns to both sides,
each side's own answers in its context, the run's system prompt, and a failed turn taken back."""

from __future__ import annotations

import pytest

from finetune.evaluation.chat import ChatHistory, chat_turn, run_system_prompt
from finetune.evaluation.common import EvaluationError
from finetune.evaluation.generation import GenerationSettings, StreamedText
from tests.helpers_runs import make_run, make_run_with_data


class RecordingComparer:
    """Streams `<side> answer <n>` in two pieces and records what each side was asked."""

    def __init__(self, run, fail_on: int | None = None):
        self.run, self.asked, self.fail_on = run, [], fail_on

    def load_adapter(self, path, adapter_name=None):
        return "final"

    def stream(self, prompt, use_adapter, settings=None, *, adapter=None):
        side = "tuned" if use_adapter else "base"
        self.asked.append((side, [dict(m) for m in prompt]))
        if self.fail_on is not None and len(self.asked) == self.fail_on:
            raise RuntimeError("out of memory")
        turn = sum(1 for m in prompt if m["role"] == "user")
        yield StreamedText(f"{side} ")
        yield StreamedText(f"{side} answer {turn}", tokens=3)


def test_each_side_answers_in_the_context_of_the_shared_turns_and_its_own_answers(workspace):
    run = make_run(workspace, run_name="chatty", with_adapter=True)
    comparer = RecordingComparer(run)
    history = ChatHistory(system="Be brief.")
    for text in ("first", "second", "third"):
        grown = list(chat_turn(comparer, history, text, GenerationSettings()))
    assert grown[-1] is history and history.user == ["first", "second", "third"]
    assert history.answers == {
        "base": ["base answer 1", "base answer 2", "base answer 3"],
        "finetuned": ["tuned answer 1", "tuned answer 2", "tuned answer 3"],
    }
    side, asked = comparer.asked[-1]  # the fine-tuned side at turn 3: its own answers, never the base's
    assert side == "tuned" and asked == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "tuned answer 1"},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "tuned answer 2"},
        {"role": "user", "content": "third"},
    ]
    assert comparer.asked[-2][1][2] == {"role": "assistant", "content": "base answer 1"}
    assert history.pane("base")[-1] == {"role": "assistant", "content": "base answer 3"}
    assert ChatHistory.from_dict(history.to_dict()) == history


def test_a_failed_turn_is_taken_back_so_both_sides_stay_in_step(workspace):
    run = make_run(workspace, run_name="chatty2", with_adapter=True)
    history = ChatHistory()
    list(chat_turn(RecordingComparer(run), history, "hello", GenerationSettings()))
    with pytest.raises(RuntimeError):
        list(chat_turn(RecordingComparer(run, fail_on=2), history, "again", GenerationSettings()))  # tuned fails
    assert history.user == ["hello"] and {k: len(v) for k, v in history.answers.items()} == {"base": 1, "finetuned": 1}
    with pytest.raises(EvaluationError, match="Type a message"):
        list(chat_turn(RecordingComparer(run), history, "  ", GenerationSettings()))
    with pytest.raises(EvaluationError, match="is not a side"):
        list(chat_turn(RecordingComparer(run), ChatHistory(sides=("base", "gguf")), "hi", GenerationSettings()))


def test_the_runs_system_prompt_is_the_one_most_training_rows_carry(workspace):
    def chat(user, system=""):
        turns = [{"role": "system", "content": system}] if system else []
        return {"messages": [*turns, {"role": "user", "content": user}, {"role": "assistant", "content": "ok"}]}

    rows = [chat(f"q{i}", "You are terse.") for i in range(6)] + [chat(f"p{i}") for i in range(4)]
    run = make_run_with_data(workspace, rows, [chat("v")], run_name="sys", with_adapter=False)
    assert run_system_prompt(run) == "You are terse."
    rare = [chat("q", "Rare.")] + [chat(f"p{i}") for i in range(9)]
    assert (
        run_system_prompt(make_run_with_data(workspace, rare, [chat("v")], run_name="rare", with_adapter=False)) == ""
    )


@pytest.mark.slow
def test_a_three_turn_chat_with_the_trained_demo_matches_each_sides_own_history(trained_sft_run, copy_run):
    from finetune.evaluation.compare import get_comparer, release_comparer

    run = copy_run(trained_sft_run)
    comparer = get_comparer(run)
    settings = GenerationSettings(max_new_tokens=16)
    history = ChatHistory(system=run_system_prompt(run))
    try:
        for text in ("What is 17 plus 4?", "Spell the word pencil backwards.", "And the word garden?"):
            *_, history = chat_turn(comparer, history, text, settings)
        # turn 3 of each side is what the model says to that side's own conversation so far
        for side, use_adapter in (("base", False), ("finetuned", True)):
            asked = history.messages(side)[:-1]
            assert history.answers[side][2] == comparer.generate(asked, use_adapter, settings).text
        assert history.answers["base"] != history.answers["finetuned"]
    finally:
        release_comparer()

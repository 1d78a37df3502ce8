"""The Data tab's handlers (ui/data_tab.py) called as plain functions on a real Studio: what each one
updates, keyed by component name."""

from __future__ import annotations

from finetune.studio import Studio
from ui import data_tab
from ui.state import Ctx


def test_a_preference_example_shows_its_prompt_and_both_answers_as_a_chat(workspace):
    ctx = Ctx(studio=Studio(workspace))
    out = data_tab.use_preference_sample(ctx, "demo", 1024, False, False)
    chat = out["data_chat"]
    first_user = next(i for i, m in enumerate(chat) if m["role"] == "user")
    answers = [m["content"] for m in chat[first_user + 1 :]]
    assert len(answers) == 2 and answers[0].startswith("**✔ chosen**") and answers[1].startswith("**✖ rejected**")
    assert all(len(a.split("\n\n", 1)[1]) > 0 for a in answers)  # each answer's own text follows its title
    assert out["data_state"]["shape"] == "preference" and 'id="data-pair"' in out["data_text"]


def test_unusable_data_says_why_and_offers_the_columns_to_map(workspace):
    bad = workspace / "uploads" / "odd.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"question": "q", "reply": "a"}\n', encoding="utf-8")
    ctx = Ctx(studio=Studio(workspace))
    out = data_tab.reanalyze(ctx, str(bad), "auto", "", "demo", 1024, False, False)
    assert "Cannot use" in out["data_summary"] and out["data_state"]["error"]
    assert "`question`" in out["data_mapping_md"] and out["f.dataset_path"] == str(bad)
    assert set(out) <= set(data_tab.OUTPUT_KEYS)  # only components the tab has


def test_suggested_max_length_goes_to_the_form(workspace):
    ctx = Ctx(studio=Studio(workspace))
    assert data_tab.use_suggested(ctx, {"suggested": 128}) == {"data_max_length": 128, "f.max_length": 128}
    assert data_tab.set_max_length(ctx, 300) == {"f.max_length": 300}

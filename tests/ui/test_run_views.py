"""The Test tab's views follow the chosen run through one listener (ui/run_views.py): a change that names
the run a session already shows redraws nothing, whatever an echoed event carries."""

from __future__ import annotations

from ui import run_views
from ui.run_views import ShownRuns, show_run


def test_a_run_shown_again_in_the_same_session_redraws_nothing(monkeypatch):
    drawn = []
    monkeypatch.setattr(run_views, "VIEWS", ((("chat_state",), lambda ctx, name: drawn.append(name) or (name,)),))
    shown = ShownRuns()
    assert show_run(None, shown, "page-1", "run-a") == ["run-a"]
    skipped = show_run(None, shown, "page-1", "run-a")  # an echo of the same change: the chat is kept
    assert len(skipped) == 1 and skipped[0] is not None and skipped[0] != "run-a"
    assert show_run(None, shown, "page-2", "run-a") == ["run-a"]  # another page draws its own views
    assert show_run(None, shown, "page-1", "run-b") == ["run-b"]
    assert drawn == ["run-a", "run-a", "run-b"]


def test_sessions_are_forgotten_beyond_the_bound():
    shown = ShownRuns()
    for i in range(ShownRuns.MAX_SESSIONS + 5):
        shown.switch(f"page-{i}", "run")
    assert shown.switch("page-0", "run") is True  # the oldest was forgotten: drawn again
    assert shown.switch(f"page-{ShownRuns.MAX_SESSIONS + 4}", "run") is False

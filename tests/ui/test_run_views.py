"""The Test tab's views follow the chosen run through one listener (ui/run_views.py): a change that names
the run a session already shows redraws nothing, whatever an echoed event carries."""

from __future__ import annotations

from ui import chat_view, run_views
from ui.run_views import show_run
from ui.state import ShownRuns


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


def test_a_change_answered_after_a_chat_message_to_that_run_keeps_the_chat(monkeypatch):
    """The Run list's change can be answered seconds after the user sent a chat message to the new run (it
    waits behind other events): that redraw must not clear the chat; the other views still redraw."""
    drawn = []
    monkeypatch.setattr(
        run_views,
        "VIEWS",
        (
            (chat_view.RUN_OUTPUTS, lambda ctx, name: drawn.append(("chat", name)) or (None,) * 5),
            (("votes_runs",), lambda ctx, name: drawn.append(("votes", name)) or (name,)),
        ),
    )
    shown = ShownRuns()
    show_run(None, shown, "page-1", "run-a")
    shown.chatted("page-1", "run-b")  # sent to run-b before the change to run-b was answered
    out = show_run(None, shown, "page-1", "run-b")
    assert out[-1] == "run-b" and all(v is not None for v in out[:5])  # chat outputs skipped
    assert drawn == [("chat", "run-a"), ("votes", "run-a"), ("votes", "run-b")]
    # a chat on run-b, then a switch to run-c: a new chat (the chat talked to another run)
    shown.chatted("page-1", "run-b")
    show_run(None, shown, "page-1", "run-c")
    assert drawn[-2:] == [("chat", "run-c"), ("votes", "run-c")]
    # the record is used once: back to run-b later starts a new chat there too
    show_run(None, shown, "page-1", "run-b")
    assert drawn[-2:] == [("chat", "run-b"), ("votes", "run-b")]


def test_only_the_shared_listener_redraws_views_when_the_run_changes(workspace):
    """Every listener on the Run list's `change` adds to Gradio's echoes, and a view with its own listener is
    redrawn by each echo (the batch evaluation's result was drawn over by a stale "No evaluation"). The
    shared listener, and the side choice that keeps its value, are the only ones."""
    from ui import build_app

    blocks = build_app(workspace)
    c = blocks.finetune_ctx.c
    listeners = [fn for fn in blocks.fns.values() if (c["test_run"]._id, "change") in fn.targets]
    written = sorted([[o._id for o in fn.outputs] for fn in listeners], key=len)
    assert len(written) == 2 and written[0] == [c["test_against"]._id]
    for key in ("eval_summary", "eval_table", "grid_table", "ab_tally", "ab_pair", "chat_state", "curve_plot"):
        assert c[key]._id in written[1], key

"""Unexpected errors: the traceback to the workspace's error log, one line back saying where it went."""

from __future__ import annotations

from finetune import incidents


def _raise():
    raise TypeError("type str doesn't define __round__ method")


def test_a_bug_is_one_line_and_its_traceback_goes_to_the_log(tmp_path, monkeypatch):
    monkeypatch.setattr(incidents, "_workspace", tmp_path / "ws")
    try:
        _raise()
    except TypeError as exc:
        shown = incidents.unexpected(exc, "listing the runs")
        hidden = incidents.unexpected(exc, "listing the runs", hide_paths=True)
    log = (tmp_path / "ws" / "logs" / "errors.log").resolve()
    assert shown == (
        "Unexpected error: TypeError: type str doesn't define __round__ method. This is a bug, not something you "
        f"did; the details were written to {log}."
    )
    assert hidden.endswith("the details were written to logs/errors.log in the workspace.")
    text = log.read_text()
    assert text.count("while listing the runs") == 2 and "in _raise" in text


def test_an_unwritable_workspace_sends_the_details_to_the_temporary_folder(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")  # logs/ cannot be made under a file
    monkeypatch.setattr(incidents, "_workspace", blocker)
    monkeypatch.setattr(incidents.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    where = incidents.record(ValueError("x"), "testing")
    assert where == (tmp_path / "tmp" / "finetune-errors.log").resolve() and "testing" in where.read_text()
    assert incidents.describe(ValueError("x"), where, workspace=blocker).endswith(
        "the details were written to finetune-errors.log in the server's temporary folder."
    )

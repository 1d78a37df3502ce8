"""ui/state.py: how engine messages become Markdown."""

from __future__ import annotations

from ui.state import md_error


def test_a_line_after_a_list_is_its_own_paragraph():
    text = "no known format matches.\nEach format expects:\n  - text: text - one text column\nRename your columns."
    md = md_error(text)
    # without a blank line Markdown continues the last item: "one text column Rename your columns"
    assert "- text: text - one text column\n\nRename your columns." in md
    assert "expects:  \n\n- text" in md

"""The README keeps its promises: Space front matter, the two set-up commands, CI runs the test command."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _front_matter(text: str) -> dict:
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md must start with Space front matter"
    return yaml.safe_load(match.group(1))


def test_readme_front_matter_is_the_space_config():
    readme = _front_matter((ROOT / "README.md").read_text())
    shipped = _front_matter((ROOT / "docs" / "space_front_matter.yaml").read_text())
    assert readme == shipped
    assert readme["sdk"] == "gradio" and readme["app_file"] == "app.py"
    import gradio

    assert readme["sdk_version"] == gradio.__version__


def test_quickstart_has_exactly_two_commands_and_ci_runs_the_test_one():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart.*?```bash\n(.*?)```", text, re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert commands == ["pip install torch==2.13.0 -e . && python app.py", "bash scripts/test.sh"]
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()

"""The damaged-workspace corpus (issue 22): a workspace of real finished runs (copies of one trained demo
run), each damaged in its own way, driven through the command line and through the running app's API.
Each is answered clearly (listed, the damaged file and line named), nothing is lost (no file of a run
changes unless an action was asked for it), no traceback anywhere, and `python app.py` serves the page.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from helpers_app import ROOT, AppProcess, plain, served

from finetune.cli.main import main

pytestmark = pytest.mark.slow

DEAD_PID = 2**22 + 4321  # above Linux's default pid_max: no such process


def _append(name: str, data: bytes):
    def damage(run: Path) -> None:
        with open(run / name, "ab") as fh:
            fh.write(data)

    return damage


def _replace(name: str, data: bytes):
    def damage(run: Path) -> None:
        (run / name).write_bytes(data)

    return damage


def _cut(name: str, drop: int = 100):
    def damage(run: Path) -> None:
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[:-drop])

    return damage


def _remove(name: str):
    return lambda run: (run / name).unlink()


def _cut_all_checkpoints(run: Path) -> None:
    for state in (run / "checkpoints").glob("checkpoint-*/trainer_state.json"):
        state.write_bytes(state.read_bytes()[:30])


def _active_but_dead(run: Path) -> None:
    status = json.loads((run / "status.json").read_text())
    status.update(state="training", pid=DEAD_PID, process_started_at=1.0)
    (run / "status.json").write_text(json.dumps(status))
    (run / "heartbeat.json").write_text("{")


def _stale_merge(run: Path) -> None:
    staging = run / "exports" / f".merged.merging-{DEAD_PID}"
    staging.mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(b"\0" * 4096)


# case -> (what is done to a copy of the trained run, the words its listing names, or None: listed clean)
CASES = {
    "metrics-strs": (_append("metrics.jsonl", b'{"step": "x", "loss": "y"}\n'), "has no usable step (step is 'x')"),
    "metrics-ff": (_append("metrics.jsonl", b"\xff\n"), "is not UTF-8 text (byte 0xff"),
    "metrics-null": (_append("metrics.jsonl", b"null\n"), "is JSON null, not a record"),
    "metrics-nan": (_append("metrics.jsonl", b'{"step": 31, "loss": NaN}\n'), None),
    "metrics-cut": (_append("metrics.jsonl", b'{"step": 31, "lo'), "is cut short"),
    "metrics-huge-line": (_append("metrics.jsonl", b"#" * 5_000_000 + b"\n"), "is not JSON"),
    "adapter-cut": (_cut("adapter/adapter_model.safetensors"), "adapter/adapter_model.safetensors: is cut short"),
    "adapter-config-broken": (_replace("adapter/adapter_config.json", b"{"), "adapter/adapter_config.json: is not"),
    "checkpoints-all-cut": (_cut_all_checkpoints, None),
    "status-broken": (_cut("status.json", 40), "status.json line"),
    "status-types": (
        _replace("status.json", b'{"state": "done", "step": "x", "total_steps": 30}'),
        "status.json: step is 'x', not a whole number",
    ),
    "status-state": (_replace("status.json", b'{"state": "exploded"}'), "is not a state a run can be in"),
    "status-missing": (_remove("status.json"), "status.json: is missing"),
    "config-missing": (_remove("config.yaml"), "config.yaml: is missing"),
    "config-broken": (_replace("config.yaml", b"model_name_or_path: [unclosed\n"), "is not valid YAML"),
    "config-twice": (_append("config.yaml", b"lora_r: 64\n"), "the setting 'lora_r' is given twice"),
    "data-summary-broken": (_replace("data_summary.json", b"{"), None),
    "plan-broken": (_replace("plan.json", b"{"), None),
    "prediction-broken": (_replace("prediction.json", b"{"), None),  # the history's time columns stay empty
    "prediction-types": (_replace("prediction.json", b'{"predicted": "x", "actual": {"seconds": "y"}}'), None),
    "active-but-dead": (_active_but_dead, None),
    "stale-merge": (_stale_merge, None),
}
KEPT = ("metrics.jsonl", "config.yaml", "status.json", "adapter", "checkpoints")  # what a run made


def _fingerprints(workspace: Path) -> dict[str, str]:
    """sha256 of every file that holds what a run made (its records, adapter and checkpoints)."""
    out = {}
    for path in sorted((workspace / "runs").rglob("*")):
        relative = path.relative_to(workspace / "runs")
        if path.is_file() and len(relative.parts) > 1 and relative.parts[1] in KEPT and path.name != "README.md":
            out[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def damaged(workspace, trained_sft_run, copy_run) -> Path:
    for name, (damage, _) in CASES.items():
        damage(copy_run(trained_sft_run, name).path)
    (workspace / "runs" / "stray-file.txt").write_text("not a run")
    (workspace / "runs" / "empty-folder").mkdir()
    return workspace


def _table(result):
    """The history table's rows out of an endpoint's result (the table alone, or among other outputs)."""
    parts = result if isinstance(result, (list, tuple)) and result and isinstance(result[0], dict) else [result]
    for part in parts:
        if isinstance(part, dict) and "data" in part and "headers" in part:
            return part["data"]
    raise AssertionError(f"no table in {result!r:.300}")


def _strict(text: str):
    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_every_damaged_run_is_answered_through_the_cli(damaged, capsys):
    before = _fingerprints(damaged)
    done = subprocess.run(
        [sys.executable, "-m", "finetune.cli", "runs", "--workspace", str(damaged)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    blocks: dict[str, list[str]] = {}
    current = ""
    for line in done.stdout.splitlines()[1:]:
        if line.startswith("  damaged: "):
            blocks[current].append(line)
        elif line and not line[0].isspace() and " runs have damaged files" not in line:
            current = line.split()[0]
            blocks[current] = []
    assert set(blocks) == set(CASES)  # every run listed; the stray file and the empty folder are no runs
    for name, (_, words) in CASES.items():
        named = "\n".join(blocks[name])
        assert (words in named) if words else named == "", (name, named)

    assert main(["runs", "--json", "--workspace", str(damaged)]) == 0
    listed = {r["name"]: r for r in _strict(capsys.readouterr().out)}
    assert listed["metrics-nan"]["final_loss"] is None and listed["active-but-dead"]["state"] == "interrupted"

    # a run damaged only in its records still exports its adapter; a damaged adapter is named, not packed
    assert main(["export", "--run", str(damaged / "runs" / "metrics-strs"), "--workspace", str(damaged)]) == 0
    assert main(["export", "--run", str(damaged / "runs" / "stale-merge"), "--workspace", str(damaged)]) == 0
    assert not (damaged / "runs" / "stale-merge" / "exports" / f".merged.merging-{DEAD_PID}").exists()
    assert main(["export", "--run", str(damaged / "runs" / "adapter-cut"), "--workspace", str(damaged)]) == 1
    err = capsys.readouterr().err
    assert "adapter/adapter_model.safetensors: is cut short" in err and "Traceback" not in err
    resume = ["train", "--resume", str(damaged / "runs" / "checkpoints-all-cut"), "--workspace", str(damaged)]
    assert main(resume) == 1
    err = capsys.readouterr().err
    assert "has no intact checkpoint to resume from" in err and "trainer_state.json line" in err
    compare = ["compare", "--run", str(damaged / "runs" / "adapter-config-broken"), "--prompt", "Hi"]
    assert main([*compare, "--workspace", str(damaged)]) == 1
    assert "adapter/adapter_config.json: is not valid JSON" in capsys.readouterr().err
    assert _fingerprints(damaged) == before  # nothing a run made was changed or lost


def test_every_damaged_run_is_answered_through_the_app_and_app_py_serves_it(damaged, tmp_path):
    before = _fingerprints(damaged)
    with served(damaged) as (_blocks, client, _url):
        rows = _table(client.predict("", "", api_name="/list_runs"))
        by_name = {row[0]: row for row in rows}
        assert set(by_name) == set(CASES)
        for name, (_, words) in CASES.items():
            assert by_name[name][4].endswith("· damaged") == bool(words), (name, by_name[name][4])
        filtered = _table(client.predict("damaged", api_name="/filter_runs"))
        assert {row[0] for row in filtered} == {name for name, (_, words) in CASES.items() if words}
        for name in CASES:
            status = client.predict(name, api_name="/run_status")  # never an error: every run has a state
            assert status["run"] == name and status["state"], (name, status)
            _, card = client.predict(name, api_name="/refresh_export")
            assert "Traceback" not in card and str(damaged) not in plain(card), name
        assert client.predict("metrics-ff", api_name="/zip_adapter")  # a zip of the intact adapter
        assert client.predict("adapter-cut", api_name="/zip_adapter") is None  # refused with a warning
        answer = client.predict("config-missing", "", api_name="/delete_run")
        assert any("Deleted" in plain(str(part)) for part in answer)
        assert not (damaged / "runs" / "config-missing").exists()
    after = _fingerprints(damaged)
    assert after == {k: v for k, v in before.items() if not k.startswith("config-missing/")}

    app = AppProcess(damaged, tmp_path / "app.log")
    try:
        app.client()
        page = urllib.request.urlopen(app.url, timeout=60)
        assert page.status == 200 and b"finetune studio" in page.read()
        assert "Traceback" not in app.log_tail(100_000)
    finally:
        app.stop()
    assert os.path.isdir(damaged / "runs" / "metrics-strs")

"""The hostile-input corpus (issue 13) through both doors: every input goes through the command line
(`finetune.cli.main.main`, the code `python -m finetune.cli` runs) and through the running app's API, and
each time the answer is a clear message of bounded size, no traceback, no run folder left behind; the
app keeps answering another client within a second while it works on the input; nothing is written
outside the workspace.

The inputs: every malformed dataset and config file of tests/test_bad_input.py, plus the ones the
outside probe used (integers beyond 64 bits, 20,000 unknown keys, a 1 MB run name, NUL and newline
characters, run folders in the workspace root, in runs/ itself and in another run's adapter folder)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from helpers_app import data_output_keys, local_client, plain, served, snapshot, start_values, untracked_repo_files
from test_bad_input import DATA_CASES, YAML_CASES, _write_case

from finetune.config import DATASET_FORMATS
from finetune.errors import MAX_MESSAGE_CHARS

BOUND = MAX_MESSAGE_CHARS + 1000  # the message plus the page's own words around it
GOOD = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'

# issue 13's own inputs: id -> YAML text (a config file), or `--set` assignments
ISSUE_YAML = {
    "max-steps-2^73": ("max_steps: 10000000000000000000000\n", "max_steps"),
    "warmup-steps-2^73": ("warmup_steps: 10000000000000000000000\n", "warmup_steps"),
    "seed-2^73": ("seed: 10000000000000000000000\n", "seed"),
    "save-steps-1e30": ("save_steps: 1.0e+30\n", "save_steps"),
    "epochs-inf": ("num_train_epochs: .inf\n", "num_train_epochs"),
    "int-of-5000-digits": ("max_steps: 1" + "0" * 5000 + "\n", "cannot be read"),
    "20000-unknown-keys": ("".join(f"key_{i}: {i}\n" for i in range(20_000)), "more problems"),
    "1mb-run-name": ("run_name: " + "x" * 1_000_000 + "\n", "at most 100 characters"),
    "run-name-101": ("run_name: " + "x" * 101 + "\n", "at most 100 characters"),
    "run-name-nul-newline": ('run_name: "a\\0b\\nc"\n', "run_name"),
    "lora-r-huge": ("lora_r: 99999999999\n", "lora_r"),
    "batch-huge": ("per_device_train_batch_size: 10000000\n", "per_device_train_batch_size"),
}
# where a run may not live (item 3): output_dir relative to the workspace -> expected words
ISSUE_OUTPUT_DIRS = {
    "workspace-root": (".", "holds the whole workspace"),
    "runs-itself": ("runs", "not a run folder"),
    "other-runs-adapter": ("runs/existing/adapter", "not a run folder"),
    "uploads": ("uploads/x", "not a run folder"),
}


def _inputs(root: Path) -> list[tuple[str, str, Path | str, dict, list[str]]]:
    """(id, kind, path or value, extra, expected words) for every input, files written under `root`."""
    out = []
    for case_id, name, content, kwargs, expected in DATA_CASES:
        folder = root / "data" / case_id
        folder.mkdir(parents=True)
        out.append((case_id, "data", _write_case(folder, name, content), kwargs, expected))
    for case_id, text, expected in YAML_CASES:
        path = root / "yaml" / f"{case_id}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        elif text is not None:
            path.write_text(text, encoding="utf-8")
        out.append((f"yaml-{case_id}", "yaml", path, {}, expected))
    import yaml

    for case_id, (text, expected) in ISSUE_YAML.items():
        path = root / "yaml" / f"{case_id}.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            form = yaml.safe_load(text)  # the same value typed into the app's form, where JSON can carry it
        except ValueError:
            form = {}
        try:
            json.dumps(form, allow_nan=False)
        except ValueError:  # inf cannot travel as JSON
            form = {}
        form = form if isinstance(form, dict) and len(form) == 1 else {}  # one field the form can carry
        out.append((f"yaml-{case_id}", "yaml", path, form, [expected]))
    for case_id, (rel, expected) in ISSUE_OUTPUT_DIRS.items():
        out.append((f"output-dir-{case_id}", "output_dir", rel, {}, [expected]))
    return out


def _assert_message(case_id: str, text: str, expected: list[str]) -> None:
    text = plain(text)
    assert "Traceback" not in text and len(text) < BOUND, (case_id, len(text), text[:300])
    assert "\x00" not in text, case_id
    for part in expected:
        assert plain(part) in text, (case_id, part, text[:800])


def _cli(args: list[str], capsys) -> tuple[int, str]:
    from finetune.cli.main import main

    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err


def _no_stray_runs(workspace: Path, keep: set[str]) -> None:
    runs = workspace / "runs"
    names = {p.name for p in runs.iterdir()} if runs.is_dir() else set()
    assert names <= keep, f"stray run folders: {sorted(names - keep)}"
    assert not list(workspace.glob("*/config.yaml")) and not (workspace / "config.yaml").exists()


@pytest.mark.slow
def test_hostile_corpus_through_the_cli_and_the_app(workspace, tmp_path, tmp_path_factory, capsys, monkeypatch):
    from finetune.config import RunConfig
    from finetune.runs import create_run
    from ui.config_form import field_names

    monkeypatch.delenv("FINETUNE_ALLOWED_PATHS", raising=False)
    inputs = workspace / "inputs"  # inside the workspace: the app may read them when typed
    cases = _inputs(inputs)
    assert len(cases) >= 60, len(cases)
    existing = create_run(RunConfig(run_name="existing"), workspace)
    existing.adapter_dir.mkdir()
    (existing.adapter_dir / "adapter_config.json").write_text("{}")
    keep = {"existing"}
    data_file = inputs / "good.jsonl"
    data_file.write_text(GOOD * 4, encoding="utf-8")

    basetemp = tmp_path_factory.getbasetemp()
    # other tests' folders are left out: what they left running (wandb's offline writer, an app's upload
    # cleaner) may still write there; a folder made anywhere else in the base folder is still seen
    others = tuple(p for p in basetemp.iterdir() if p != tmp_path)
    keep_out = (workspace, Path(os.path.realpath(workspace / "cache")), *others)
    before_tmp = snapshot(basetemp, skip=keep_out)
    before_repo = untracked_repo_files()
    ws = ["--workspace", str(workspace)]

    # --- the command line --------------------------------------------------------------------------
    for case_id, kind, value, kwargs, expected in cases:
        if kind == "data":
            fmt = kwargs.get("dataset_format", "auto")
            if "column_mapping" not in kwargs:
                code, err = _cli(["validate", str(value), "--format", fmt, *ws], capsys)
                assert code == 1, (case_id, err[-500:])
                _assert_message(case_id, err, expected)
            sets = ["--set", f"dataset_format={fmt}"]
            if "column_mapping" in kwargs:
                sets += ["--set", "column_mapping=" + json.dumps(kwargs["column_mapping"])]
            code, err = _cli(["train", "--model", "demo", "--data", str(value), "--max-steps", "1", *sets, *ws], capsys)
            if fmt not in DATASET_FORMATS:  # the settings check names the field first
                expected = ["dataset_format", fmt]
        elif kind == "yaml":
            code, err = _cli(
                ["train", "--config", str(value), "--model", "demo", "--data", str(data_file), *ws], capsys
            )
            if case_id == "yaml-hostile-run-name":
                expected = ["run_name"]
        else:
            out_dir = str((workspace / value).resolve())
            code, err = _cli(
                ["train", "--model", "demo", "--data", str(data_file), "--output-dir", out_dir, *ws], capsys
            )
        assert code == 1, (case_id, err[-500:])
        _assert_message(case_id, err, expected)
        _no_stray_runs(workspace, keep)

    # --- the app's API, with another client polling meanwhile ----------------------------------------
    from gradio_client import handle_file

    answered = 0
    with served(workspace) as (blocks, client, url):
        other = local_client(url)
        values = start_values(blocks.finetune_ctx.base_config)
        names = field_names()
        states = []
        desk = blocks.finetune_ctx.studio.data
        held, release = threading.Event(), threading.Event()
        reading = desk.report

        def held_report(*args, **kwargs):
            """The first hostile file is held inside its handler until the other client was answered."""
            if not held.is_set():
                held.set()
                release.wait(120)
            return reading(*args, **kwargs)

        def polled_while(job) -> None:
            """Another client's /run_status is answered while `job` runs."""
            while not job.done():
                states.append(other.predict("", api_name="/run_status")["state"])
                time.sleep(0.5)  # often enough to see it answered; each poll costs the app CPU the input needs

        def ask(*args, api_name: str):
            job = client.submit(*args, api_name=api_name)
            poller = threading.Thread(target=polled_while, args=(job,))
            poller.start()
            result = job.result(timeout=300)
            poller.join(30)
            return result

        # not blocked behind a hostile request: answered while that request is still inside its handler
        desk.report = held_report
        first = next(case for case in cases if case[1] == "data" and case[3].get("dataset_format", "auto") == "auto")
        job = client.submit(str(first[2]), "auto", "", "demo", 1024, False, False, api_name="/set_data_format")
        assert held.wait(120), "the hostile request never reached its handler"
        states.append(other.predict("", api_name="/run_status")["state"])
        assert not job.done() and not release.is_set()  # answered while the hostile request still runs
        release.set()
        job.result(timeout=300)
        desk.report = reading

        for case_id, kind, value, kwargs, expected in cases:
            if kind == "data":
                fmt = kwargs.get("dataset_format", "auto")
                mapping = json.dumps(kwargs["column_mapping"]) if "column_mapping" in kwargs else ""
                if fmt not in DATASET_FORMATS:  # the page's dropdown refuses it before any handler runs
                    from gradio_client.exceptions import AppError

                    with pytest.raises(AppError, match="not in the list of choices") as refused:
                        ask(str(value), fmt, mapping, "demo", 1024, False, False, api_name="/set_data_format")
                    assert len(str(refused.value)) < BOUND
                    answered += 1
                    continue
                out = ask(str(value), fmt, mapping, "demo", 1024, False, False, api_name="/set_data_format")
                message = dict(zip(data_output_keys(), out))["data_summary"]
                assert "Cannot use" in plain(message), (case_id, plain(message)[:400])
                cfg = dict(zip(names, values), dataset_path=str(value), dataset_format=fmt, column_mapping=mapping)
            elif kind == "yaml":
                message = ""
                if value.exists():
                    out = ask(handle_file(str(value)), *values, api_name="/load_config")
                    message = out[len(values)]
                    assert "was not loaded" in plain(message), (case_id, plain(message)[:400])
                    _assert_message(case_id, message, [] if case_id == "yaml-hostile-run-name" else expected)
                cfg = dict(zip(names, values), dataset_path=str(data_file), **kwargs) if kwargs else None
            else:
                cfg = dict(
                    zip(names, values), dataset_path=str(data_file), output_dir=str((workspace / value).resolve())
                )
            if cfg is not None:  # Start with the same input typed into the form
                started = ask(*cfg.values(), api_name="/start_training")[0]
                assert "Training did not start" in plain(started), (case_id, plain(started)[:400])
                _assert_message(case_id, started, expected if kind != "data" else [])
            _no_stray_runs(workspace, keep)
            answered += 1
        assert states and set(states) <= {"queued"}, set(states)  # the existing run, never a failed one

    assert answered == len(cases)
    after_tmp = snapshot(basetemp, skip=keep_out)
    created = sorted(set(after_tmp) - set(before_tmp))
    changed = sorted(k for k in before_tmp if k in after_tmp and after_tmp[k] != before_tmp[k] and not k.endswith("/"))
    assert not created and not changed, f"written outside the workspace: {created[:20]} {changed[:20]}"
    assert not (untracked_repo_files() - before_repo)

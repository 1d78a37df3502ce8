"""A corpus of malformed and hostile inputs: each one gets a clear message naming the problem (and the
row, line or field where there is one), never a traceback, and nothing is written outside the workspace.

The engine cases run everywhere (fast); a subset of every category then goes through the running app
with gradio_client (marked slow), which must answer each with a message and keep serving."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from helpers_app import call, data_output_keys, plain, served, snapshot, start_values, untracked_repo_files

from finetune.config import RunConfig
from finetune.errors import ConfigError, DataError, FinetuneError, ModelError, RunError

MAX_MESSAGE = 4000  # a message quotes the problem, never the whole input


def _msg(rows: list) -> bytes:
    return ("\n".join(json.dumps(r) if not isinstance(r, str) else r for r in rows) + "\n").encode()


def _chat(*turns) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


GOOD = _chat(("user", "hi"), ("assistant", "hello"))


def _deep_line(depth: int = 50_000) -> str:
    return '{"a":' * depth + "1" + "}" * depth


# --- datasets -----------------------------------------------------------------------------------
# id, file name, content (bytes; a callable gets the folder and returns the path), load_records kwargs,
# substrings the message must hold
DATA_CASES = [
    ("empty", "empty.jsonl", b"", {}, ["empty.jsonl is empty"]),
    ("whitespace-only", "blank.jsonl", b"\n \n\t\n", {}, ["blank.jsonl is empty"]),
    ("binary", "data.jsonl", bytes(range(256)) * 8, {}, ["binary file"]),
    ("png-as-csv", "photo.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 64, {}, ["binary file"]),
    ("gzip-as-jsonl", "data.jsonl", gzip.compress(_msg([GOOD])), {}, ["gzip-compressed"]),
    ("xlsx-as-csv", "sheet.csv", b"PK\x03\x04\x14\x00\x00\x00" + b"\x00" * 64, {}, ["ZIP or Excel"]),
    ("utf16", "data.jsonl", json.dumps(GOOD).encode("utf-16"), {}, ["UTF-16", "UTF-8"]),
    (
        "latin1",
        "data.jsonl",
        _msg([GOOD]) + json.dumps({"text": "café"}, ensure_ascii=False).encode("latin-1"),
        {},
        ["not UTF-8", "line 2"],
    ),
    ("broken-json-lines", "data.jsonl", b'{"messages": [\n{"text": "x"\n', {}, ["line 1", "bad JSON", "line 2"]),
    ("broken-json-array", "data.json", b'[{"text": "a"},\n{"text": "b"', {}, ["not valid JSON", "line 2"]),
    ("rows-are-numbers", "data.jsonl", b"1\n2\n", {}, ["line 1", "JSON number", "not an object"]),
    ("rows-are-arrays", "data.jsonl", b"[1, 2]\n[3]\n", {}, ["JSON array", "not an object"]),
    ("wrong-columns-jsonl", "data.jsonl", _msg([{"foo": 1, "bar": 2}]), {}, ["no known format", "foo", "bar"]),
    ("wrong-columns-csv", "qa.csv", b"question,answer\nhi,hello\n", {}, ["no known format", "question"]),
    (
        "no-assistant-turn",
        "data.jsonl",
        _msg([_chat(("user", "hi")), _chat(("system", "s"), ("user", "q"))]),
        {},
        ["line 1", "no assistant turn", "line 2"],
    ),
    (
        "empty-assistant-turn",
        "data.jsonl",
        _msg([_chat(("user", "hi"), ("assistant", "  "))]),
        {},
        ["line 1", "message 2 is an empty assistant turn"],
    ),
    (
        "unknown-role",
        "data.jsonl",
        _msg([_chat(("robot", "beep"), ("assistant", "hello"))]),
        {},
        ["line 1", "unknown role 'robot'", "accepted roles"],
    ),
    (
        "unknown-sharegpt-from",
        "data.json",
        json.dumps([{"conversations": [{"from": "alien", "value": "x"}, {"from": "gpt", "value": "y"}]}]).encode(),
        {},
        ["row 1", "unknown role 'alien'"],
    ),
    (
        "message-without-role",
        "data.jsonl",
        _msg([{"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]}]),
        {},
        ["line 1", "has no 'role'"],
    ),
    ("messages-not-a-list", "data.jsonl", _msg([{"messages": "oops"}]), {}, ["line 1", "'messages' must be a list"]),
    (
        "content-not-text",
        "data.jsonl",
        _msg([{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "a"}]}]),
        {},
        ["line 1", "content is a number"],
    ),
    (
        "ends-with-user",
        "data.jsonl",
        _msg([_chat(("user", "q"), ("assistant", "a"), ("user", "and?"))]),
        {},
        ["ends with a user turn"],
    ),
    ("only-assistant", "data.jsonl", _msg([_chat(("assistant", "a"))]), {}, ["only an assistant turn"]),
    ("alpaca-empty-output", "data.jsonl", _msg([{"instruction": "q", "output": ""}]), {}, ["'output' is empty"]),
    (
        "completion-null",
        "data.jsonl",
        _msg([{"prompt": "q", "completion": None}]),
        {},
        ["line 1", "'completion' is empty (null)"],
    ),
    ("text-not-text", "data.jsonl", _msg([{"text": {"nested": 1}}]), {}, ["'text' is an object, not text"]),
    ("deeply-nested-line", "data.jsonl", (_deep_line() + "\n").encode(), {}, ["line 1", "nested too deeply"]),
    ("deeply-nested-json", "data.json", b"[" * 100_000 + b"]" * 100_000, {}, ["nested too deeply"]),
    (
        "deeply-nested-conversation",
        "data.jsonl",
        _msg([{"messages": json.loads("[" * 200 + "]" * 200)}]),
        {},
        ["line 1", "message 1"],
    ),
    ("10mb-single-line", "data.jsonl", b'{"text": "' + b"a" * 10_000_000, {}, ["line 1", "bad JSON"]),
    ("unsupported-extension", "notes.txt", b"hello\n", {}, ["unsupported file type '.txt'"]),
    ("no-extension", "data", b"hello\n", {}, ["unsupported file type '(none)'"]),
    ("folder", lambda d: _mkdir(d / "folder.jsonl"), None, {}, ["is a folder"]),
    ("missing-file", lambda d: d / "missing.jsonl", None, {}, ["file not found", "missing.jsonl"]),
    ("csv-header-only", "data.csv", b"instruction,output\n", {}, ["has a header", "no data rows"]),
    ("csv-empty-header", "data.csv", b",,\nq,a,b\n", {}, ["first row must name the columns"]),
    ("csv-duplicate-header", "data.csv", b"prompt,prompt,completion\na,b,c\n", {}, ["repeat", "prompt"]),
    ("csv-ragged-rows", "data.csv", b"prompt,completion\nq,a,extra\nq2\n", {}, ["row 1", "3 values", "row 2"]),
    ("parquet-garbage", "data.parquet", b"this is not parquet", {}, ["not a valid Parquet file"]),
    (
        "mapping-to-missing-column",
        "data.jsonl",
        _msg([{"question": "q", "answer": "a"}]),
        {"column_mapping": {"instruction": "question", "output": "nope"}},
        ["column_mapping", "'nope'", "question"],
    ),
    (
        "mapping-wrong-way-round",
        "data.jsonl",
        _msg([{"question": "q", "answer": "a"}]),
        {"column_mapping": {"question": "instruction"}},
        ["column_mapping", "'question' is not a column any format expects"],
    ),
    (
        "forced-format-mismatch",
        "data.jsonl",
        _msg([GOOD]),
        {"dataset_format": "alpaca"},
        ["format 'alpaca' needs", "instruction", "messages"],
    ),
    ("unknown-format", "data.jsonl", _msg([GOOD]), {"dataset_format": "magic"}, ["unknown dataset format 'magic'"]),
]


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _write_case(folder: Path, name, content) -> Path:
    if callable(name):
        return name(folder)
    path = folder / name
    path.write_bytes(content)
    return path


def _assert_clear(exc: BaseException, expected: list[str]) -> str:
    text = str(exc)
    assert isinstance(exc, FinetuneError), f"{type(exc).__name__}: {text[:300]}"
    for part in expected:
        assert part in text, f"{part!r} not in: {text[:1000]}"
    assert "Traceback" not in text and len(text) < MAX_MESSAGE
    return text


@pytest.mark.parametrize("case", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_dataset(case, tmp_path):
    from finetune.data import load_records

    _, name, content, kwargs, expected = case
    path = _write_case(tmp_path, name, content)
    with pytest.raises(DataError) as err:  # a hostile file that hung would end at pytest-timeout
        load_records(str(path), **kwargs)
    _assert_clear(err.value, expected)


def test_bad_rows_among_good_ones_are_listed_by_line(tmp_path):
    """Rows with problems are skipped, each named by its line and reason; the good rows are kept."""
    from finetune.data import load_records

    path = tmp_path / "mixed.jsonl"
    lines = [json.dumps(GOOD), "{broken", json.dumps(_chat(("user", "x"))), _deep_line(), json.dumps(GOOD)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = load_records(str(path))
    assert report.kept_rows == 2
    assert [(i.where, i.reason.split(":")[0]) for i in report.skipped] == [
        ("line 2", "bad JSON"),
        ("line 3", "no assistant turn (nothing to learn from)"),
        ("line 4", "the JSON is nested too deeply to read"),
    ]
    assert any("skipped 3 of 5 rows" in w for w in report.warnings)


# --- config YAML --------------------------------------------------------------------------------
def _billion_laughs() -> str:
    lines, previous = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'], "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
        previous = name
    return "\n".join(lines) + f"\nmodel_name_or_path: *{previous}\n"


# id, YAML text (bytes for raw files; None: no file), substrings
YAML_CASES = [
    ("unknown-key", "learning_rat: 0.001\n", ["unknown setting 'learning_rat'", "did you mean 'learning_rate'"]),
    ("wrong-type-int", "max_steps: lots\n", ["max_steps: expected a whole number", "'lots'"]),
    ("wrong-type-float", "learning_rate: [1, 2]\n", ["learning_rate: expected a number"]),
    ("wrong-type-bool", "trust_remote_code: maybe\n", ["trust_remote_code: expected true or false"]),
    ("wrong-type-mapping", "column_mapping: [a, b]\n", ["column_mapping: expected a mapping"]),
    ("negative-learning-rate", "learning_rate: -0.001\n", ["learning_rate: must be a positive number"]),
    ("nan-learning-rate", "learning_rate: .nan\n", ["learning_rate: must be a positive number"]),
    ("zero-batch-size", "per_device_train_batch_size: 0\n", ["per_device_train_batch_size: must be at least 1"]),
    ("zero-accumulation", "gradient_accumulation_steps: 0\n", ["gradient_accumulation_steps: must be at least 1"]),
    ("max-length-zero", "max_length: 0\n", ["max_length: must be at least 16"]),
    ("lora-rank-zero", "lora_r: 0\n", ["lora_r: must be at least 1"]),
    ("bad-choice", "method: magic\n", ["method: 'magic' is not one of"]),
    ("full-with-4bit", "method: full\nquantization: 4bit\n", ["quantization: full fine-tuning cannot train"]),
    ("negative-save-steps", "save_steps: -5\n", ["save_steps: must be positive"]),
    ("hostile-run-name", "run_name: ../../etc/evil\n", ["run_name: '../../etc/evil' is not allowed"]),
    ("invalid-yaml", "max_steps: [1, 2\n", ["is not valid YAML"]),
    ("not-a-mapping", "- a\n- b\n", ["expected a mapping of settings, got list"]),
    ("not-utf8", b"run_name: caf\xe9\n", ["cannot read config file"]),
    ("deeply-nested", "max_steps: " + "[" * 5_000 + "]" * 5_000 + "\n", ["nested too deeply"]),
    ("billion-laughs", _billion_laughs(), ["model_name_or_path: expected text"]),
    ("missing-file", None, ["config file not found"]),
]


@pytest.mark.parametrize("case", YAML_CASES, ids=[c[0] for c in YAML_CASES])
def test_bad_config_yaml(case, tmp_path):
    _, text, expected = case
    path = tmp_path / "bad.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        RunConfig.from_yaml(path).check()  # how the CLI and the app load a config they will use
    _assert_clear(err.value, expected)  # bounded: the billion laughs never expands into the message


# --- model ids -----------------------------------------------------------------------------------
def test_bad_model_ids(workspace, tmp_path):
    from finetune.models import resolve_model_path

    no_config = tmp_path / "not-a-model"
    no_config.mkdir()
    (no_config / "weights.bin").write_bytes(b"0")
    cases = [
        ("", ["No base model given"]),
        ("   ", ["No base model given"]),
        (str(tmp_path / "no-such-model"), ["does not exist"]),
        ("./no-such-model-here", ["does not exist"]),
        ("../no-such-finetune-model", ["does not exist"]),
        (str(no_config), ["is not a model", "config.json"]),
        (str(no_config / "weights.bin"), ["is a file", "config.json"]),
        ("bad id!!", ["neither a local folder nor a valid Hub model id"]),
        ("a/b/c", ["does not exist"]),
        ("owner/../../etc", ["does not exist"]),
    ]
    for name, expected in cases:
        with pytest.raises(ModelError) as err:
            resolve_model_path(name, workspace)
        _assert_clear(err.value, expected)


def test_unknown_and_private_models(workspace, monkeypatch):
    from finetune.models import load_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as err:
        load_tokenizer(RunConfig(model_name_or_path="nobody-xyz/no-such-model-1234"), workspace)
    _assert_clear(err.value, ["Could not download 'nobody-xyz/no-such-model-1234'", "`demo`"])

    import transformers

    def gated(*args, **kwargs):
        raise OSError("You are trying to access a gated repo. 401 Client Error: Unauthorized for url")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", gated)
    with pytest.raises(ModelError) as err:
        load_tokenizer(RunConfig(model_name_or_path="private-org/secret-model"), workspace)
    _assert_clear(err.value, ["'private-org/secret-model' is gated or private", "HF_TOKEN"])


# --- the allowed places (paths typed into the app) ----------------------------------------------
def _fake_model(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    return folder


def test_allowed_places(workspace, tmp_path, monkeypatch):
    from finetune.demo import SAMPLE_DATASET
    from finetune.paths import PathNotAllowedError, allowed_roots, check_allowed_path

    monkeypatch.delenv("FINETUNE_ALLOWED_PATHS", raising=False)
    roots = allowed_roots(workspace)
    assert Path(os.path.realpath(workspace)) in roots and SAMPLE_DATASET.parent.resolve() in roots
    assert check_allowed_path(str(SAMPLE_DATASET), workspace, "dataset_path") == SAMPLE_DATASET.resolve()
    assert check_allowed_path(str(workspace / "uploads" / "x.jsonl"), workspace) == (
        Path(os.path.realpath(workspace)) / "uploads" / "x.jsonl"
    )

    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.jsonl"
    secret.write_text(json.dumps(GOOD) + "\n")
    link = workspace / "innocent.jsonl"
    link.symlink_to(secret)  # a link inside the workspace that points out of it
    hostile = [
        (str(secret), "dataset_path"),
        ("/etc/passwd", "dataset_path"),
        (str(workspace / ".." / "outside" / "secret.jsonl"), "dataset_path"),  # `..` out of the workspace
        (str(link), "dataset_path"),
        ("~/.ssh/id_rsa", "eval_dataset_path"),
    ]
    for path, what in hostile:
        with pytest.raises(PathNotAllowedError) as err:
            check_allowed_path(path, workspace, what)
        _assert_clear(err.value, [what, path, "outside the folders this app may read", "FINETUNE_ALLOWED_PATHS"])
    with pytest.raises(PathNotAllowedError, match="resolves to"):
        check_allowed_path(str(link), workspace, "dataset_path")
    # the samples folder and the Hugging Face cache are for reading: no output_dir there
    with pytest.raises(PathNotAllowedError, match="may write to"):
        check_allowed_path(str(SAMPLE_DATASET.parent / "run"), workspace, "output_dir", write=True)

    monkeypatch.setenv("FINETUNE_ALLOWED_PATHS", os.pathsep.join([str(outside), str(tmp_path / "also")]))
    assert check_allowed_path(str(secret), workspace) == secret.resolve()
    assert check_allowed_path(str(outside / "run"), workspace, write=True)
    with pytest.raises(PathNotAllowedError):
        check_allowed_path("/etc/passwd", workspace)


def test_config_paths_checked_for_the_app_only(workspace, tmp_path, monkeypatch):
    """start_training(restrict_paths=True) refuses paths outside the allowed places before anything
    is created; the CLI (restrict_paths=False) is a local user and may use any path."""
    from finetune.paths import PathNotAllowedError, check_config_paths, check_model_path
    from finetune.train.start import start_training

    monkeypatch.delenv("FINETUNE_ALLOWED_PATHS", raising=False)
    outside_model = _fake_model(tmp_path / "models" / "tiny")
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(GOOD) + "\n")
    cfg = RunConfig(
        model_name_or_path=str(outside_model),
        dataset_path=str(data),
        eval_dataset_path="/etc/passwd",
        output_dir=str(tmp_path / "elsewhere" / "run"),
        max_steps=1,
        quantization="none",
    )
    with pytest.raises(PathNotAllowedError) as err:
        check_config_paths(cfg, workspace)
    text = _assert_clear(err.value, ["model_name_or_path", "dataset_path", "eval_dataset_path", "output_dir"])
    assert text.count("outside the folders") == 4
    with pytest.raises(PathNotAllowedError):
        start_training(cfg, workspace=workspace, restrict_paths=True)
    assert not (tmp_path / "elsewhere").exists() and not list(workspace.glob("runs/*"))
    # Hub ids, the demo model, Hub dataset ids and the sample pass
    check_config_paths(RunConfig(model_name_or_path="Qwen/Qwen2.5-0.5B-Instruct", dataset_path="org/data"), workspace)
    check_config_paths(RunConfig(), workspace)
    (workspace / "link-out").symlink_to(outside_model, target_is_directory=True)
    for name in ("/opt/models/x", "~/models/x", "../models/x", str(workspace / "link-out")):
        with pytest.raises(PathNotAllowedError):
            check_model_path(name, workspace)


# --- run and export names ------------------------------------------------------------------------
HOSTILE_NAMES = [
    "../evil",
    "../../etc/passwd",
    "/etc/passwd",
    "/tmp/evil-run",
    "a/b",
    "..",
    ".",
    ".hidden",
    "",
    "x" * 200,
    "with space",
    "nul\x00byte",
    "..\\windows",
    "~root",
    "run\nname",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=[repr(n)[:30] for n in HOSTILE_NAMES])
def test_hostile_run_names(name, workspace):
    from finetune.paths import open_workspace_run
    from finetune.runs import check_name

    with pytest.raises(RunError) as err:
        check_name(name)
    _assert_clear(err.value, ["not allowed", "at most 100 characters" if len(name) > 100 else "no slashes or '..'"])
    assert "\x00" not in str(err.value) and "\n" not in str(err.value)  # control characters are escaped
    with pytest.raises(RunError):
        open_workspace_run(name, workspace)
    if name:
        with pytest.raises(ConfigError) as err:
            RunConfig(run_name=name).check()
        _assert_clear(err.value, ["run_name"])


def _run_with_adapter(workspace: Path, name: str):
    """A finished-looking run: config, status and an adapter folder (enough for export's checks)."""
    from finetune.runs import create_run

    run = create_run(RunConfig(run_name=name, quantization="none"), workspace)
    run.adapter_dir.mkdir()
    (run.adapter_dir / "adapter_config.json").write_text("{}")
    # a well-formed safetensors file holding no tensor (export checks that the weights are whole)
    (run.adapter_dir / "adapter_model.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}")
    run.write_status("done", "Finished", step=1, total_steps=1)
    return run


def test_bad_export_destinations(workspace, tmp_path):
    from finetune.export.merge import merge_adapter, zip_adapter
    from finetune.paths import PathNotAllowedError, check_allowed_path, open_workspace_run

    run = _run_with_adapter(workspace, "exported")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")

    with pytest.raises(RunError) as err:
        zip_adapter(run, a_file / "adapter.zip")  # a folder that is a file
    _assert_clear(err.value, ["cannot write the zip", "adapter.zip"])
    with pytest.raises(RunError) as err:
        merge_adapter(run, a_file)
    _assert_clear(err.value, ["is a file", "choose a folder"])
    with pytest.raises(RunError) as err:
        merge_adapter(run, foreign)
    _assert_clear(err.value, ["is not empty", "nothing was changed"])
    assert (foreign / "precious.txt").read_text() == "keep me"
    with pytest.raises(RunError) as err:
        merge_adapter(run, a_file / "merged")
    _assert_clear(err.value, ["cannot write to", "choose a writable folder"])
    # an export folder typed into the app: the allowed places for writing only
    for out in (str(tmp_path / "out"), "/etc/cron.d/x", str(workspace / ".." / "escaped")):
        with pytest.raises(PathNotAllowedError):
            check_allowed_path(out, workspace, "export folder", write=True)
    # the app opens runs by name only: a path to a run folder is refused even when one is there
    outside_run = _run_with_adapter(tmp_path / "other-ws", "elsewhere")
    for name in (str(outside_run.path), "../../other-ws/runs/elsewhere"):
        with pytest.raises(RunError):
            open_workspace_run(name, workspace)
    assert open_workspace_run("exported", workspace).path == run.path


# --- the running app ---------------------------------------------------------------------------------
APP_DATA_CASES = [
    "empty",
    "binary",
    "utf16",
    "latin1",
    "broken-json-lines",
    "wrong-columns-csv",
    "no-assistant-turn",
    "empty-assistant-turn",
    "unknown-role",
    "deeply-nested-line",
    "10mb-single-line",
    "csv-duplicate-header",
]
APP_YAML_CASES = [
    "unknown-key",
    "wrong-type-int",
    "negative-learning-rate",
    "zero-batch-size",
    "max-length-zero",
    "lora-rank-zero",
    "invalid-yaml",
    "billion-laughs",
]


@pytest.mark.slow
def test_bad_input_through_the_app(workspace, tmp_path, tmp_path_factory, monkeypatch):
    """Every category through the served app: a message each time, the app still serving after each
    request, and nothing written outside the workspace (pytest's temp tree and the repository)."""
    from gradio_client import handle_file

    from ui.config_form import field_names

    monkeypatch.delenv("FINETUNE_ALLOWED_PATHS", raising=False)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    cases = {c[0]: c for c in DATA_CASES}
    files = {}
    for name in APP_DATA_CASES:
        _, fname, content, _, _ = cases[name]
        folder = inputs / name
        folder.mkdir()
        files[name] = _write_case(folder, fname, content)
    yaml_cases = {c[0]: c for c in YAML_CASES}
    for name in APP_YAML_CASES:
        (inputs / f"{name}.yaml").write_text(yaml_cases[name][1], encoding="utf-8")
    outside = tmp_path / "outside"
    secret = outside / "secret.jsonl"
    outside.mkdir()
    secret.write_text(json.dumps(_chat(("user", "TOP-SECRET-QUESTION"), ("assistant", "TOP-SECRET-ANSWER"))) + "\n")
    outside_model = _fake_model(outside / "model")
    outside_run = _run_with_adapter(outside / "ws", "hostile-target")

    basetemp = tmp_path_factory.getbasetemp()
    keep_out = (workspace, Path(os.path.realpath(workspace / "cache")))
    before_tmp = snapshot(basetemp, skip=keep_out)
    before_repo = untracked_repo_files()
    answered = []

    with served(workspace) as (blocks, client, _url):
        base = blocks.finetune_ctx.base_config
        values = start_values(base)

        def still_serving():
            assert client.predict("", api_name="/run_status")["state"] in ("none", "stopped", "done")

        def data_outputs(out):
            return dict(zip(data_output_keys(), out))

        # datasets: uploaded files
        for name in APP_DATA_CASES:
            out = client.predict(handle_file(str(files[name])), "demo", 1024, False, False, api_name="/load_data_file")
            summary = plain(data_outputs(out)["data_summary"])
            assert "Cannot use" in summary, (name, summary[:500])
            for part in cases[name][4]:
                assert plain(part) in summary, (name, part, summary[:800])
            assert "Traceback" not in summary and len(summary) < MAX_MESSAGE
            answered.append(name)
            still_serving()
        # a dataset path typed into the form (set_data_format takes it): refused, and the file never shown
        out = client.predict(str(secret), "auto", "", "demo", 1024, False, False, api_name="/set_data_format")
        shown = json.dumps(out)
        assert "outside the folders this app may read" in plain(data_outputs(out)["data_summary"])
        assert "TOP-SECRET" not in shown
        out = client.predict(str(secret), "auto", "", "demo", 1, False, False, api_name="/preview_example")
        assert "TOP-SECRET" not in json.dumps(out)
        answered.append("dataset-path-outside")
        still_serving()

        # config YAML
        for name in APP_YAML_CASES:
            out = client.predict(handle_file(str(inputs / f"{name}.yaml")), *values, api_name="/load_config")
            message = plain(out[len(values)])
            assert "was not loaded" in message, (name, message[:500])
            for part in yaml_cases[name][2]:
                assert plain(part) in message, (name, part, message[:800])
            assert all(v == {"__type__": "update"} for v in out[: len(values)])  # nothing changed
            answered.append(f"yaml-{name}")
            still_serving()

        # model ids: the memory estimate, the Data tab's tokenizer and Start all refuse
        from ui.model_tab import estimate

        estimate_md, _ = estimate(blocks.finetune_ctx, base.replace(model_name_or_path=str(outside_model)))
        assert "Cannot estimate memory" in plain(estimate_md) and "outside the folders" in plain(estimate_md)
        for model, expected in [
            (str(outside_model), "outside the folders this app may read"),
            (str(workspace / "models" / "missing"), "does not exist"),
            ("nobody-xyz/no-such-model-1234", "Could not download"),
            ("bad id!!", "neither a local folder nor a valid Hub model id"),
        ]:
            out = client.predict(model, 1024, False, False, api_name="/load_sample_data")
            trunc = plain(data_outputs(out)["data_trunc"])
            assert "Cannot measure token lengths" in trunc and expected in trunc, (model, trunc[:500])
            answered.append(f"model-{model}")
            still_serving()

        # Start with hostile settings: refused with a message, no run folder anywhere
        def start_with(**changes):
            cfg_values = dict(zip(field_names(), values))
            cfg_values.update(changes)
            return plain(client.predict(*cfg_values.values(), api_name="/start_training")[0])

        for changes, expected in [
            ({"run_name": "../../ft-hostile-evil"}, "run_name: '../../ft-hostile-evil' is not allowed"),
            ({"run_name": "/tmp/ft-hostile-evil"}, "run_name"),
            ({"output_dir": str(tmp_path / "ft-hostile-out")}, "output_dir"),
            ({"output_dir": str(workspace / ".." / "ft-hostile-out")}, "outside the folders this app may write to"),
            ({"model_name_or_path": str(outside_model)}, "model_name_or_path"),
            ({"dataset_path": str(secret)}, "dataset_path"),
            ({"eval_dataset_path": "/etc/passwd"}, "eval_dataset_path"),
            ({"learning_rate": -1.0, "per_device_train_batch_size": 0}, "per_device_train_batch_size"),
        ]:
            message = start_with(**changes)
            assert "Training did not start" in message and expected in message, (changes, message[:600])
            answered.append(f"start-{changes}")
            still_serving()
        assert not list(workspace.glob("runs/*"))

        # run names for resume and export: names of this workspace's runs only
        hostile_runs = [str(outside_run.path), "../../outside/ws/runs/hostile-target", "../evil", "/etc"]
        for name in hostile_runs:
            message = plain(client.predict(name, api_name="/resume_training")[0])
            assert "Not resumed" in message, (name, message)
            zipped, logs = call(client, name, api_name="/zip_adapter")
            assert zipped is None and logs and any("not allowed" in m or "no run named" in m for m in logs), logs
            merge_msg, _ = client.predict(name, api_name="/merge_model")
            assert "Merge failed" in plain(merge_msg), merge_msg
            hub_msg, _ = client.predict(name, "alice/model", "hf_FAKE_not_a_token", "adapter", True,
                                        api_name="/push_to_hub")  # fmt: skip
            assert "Not uploaded" in plain(hub_msg) and "hf_FAKE" not in hub_msg
            status = client.predict(name, api_name="/run_status")
            assert status["state"] == "none", status  # never read from a folder outside the workspace
            answered.append(f"run-name-{name}")
            still_serving()
        assert not (outside_run.path / "exports").exists()
        # a hostile run_name in Save config never escapes the configs folder
        cfg_values = dict(zip(field_names(), values))
        cfg_values["run_name"] = "../../../ft-hostile-config"
        saved, note = client.predict(*cfg_values.values(), api_name="/save_config")
        assert "Start will refuse" in plain(note)
        saved_path = Path(saved["value"] if isinstance(saved, dict) else saved)
        assert saved_path.name.startswith("ft-hostile-config-")  # '../' and '/' are gone from the name
        assert len(list((workspace / "configs").glob("ft-hostile-config-*.yaml"))) == 1
        answered.append("save-config-hostile-name")
        still_serving()

    assert len(answered) >= 15
    after_tmp = snapshot(basetemp, skip=keep_out)
    created = sorted(set(after_tmp) - set(before_tmp))
    changed = sorted(k for k in before_tmp if k in after_tmp and after_tmp[k] != before_tmp[k] and not k.endswith("/"))
    assert not created and not changed, f"written outside the workspace: {created[:20]} {changed[:20]}"
    new_in_repo = sorted(p for p in untracked_repo_files() - before_repo if "hostile" in p or "evil" in p)
    assert not new_in_repo, new_in_repo


@pytest.mark.slow
def test_upload_over_the_limit_is_refused(workspace, tmp_path):
    """max_file_size is enforced by the server (413), not only by the page; the app keeps serving."""
    import httpx
    from gradio_client import handle_file

    big = tmp_path / "big.jsonl"
    line = json.dumps({"text": "x" * 1000}) + "\n"
    big.write_text(line * 2100, encoding="utf-8")  # ~2 MB
    assert big.stat().st_size > 2 * 10**6
    small = tmp_path / "small.jsonl"
    small.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n", encoding="utf-8")
    with served(workspace, max_file_size="1mb") as (_blocks, client, url):
        with big.open("rb") as fh:
            response = httpx.post(url.rstrip("/") + "/gradio_api/upload", files={"files": ("big.jsonl", fh)})
        assert response.status_code == 413 and "maximum allowed size" in response.text
        with pytest.raises(Exception, match="exceeds the maximum file size"):  # the client says so too
            client.predict(handle_file(str(big)), "demo", 1024, False, False, api_name="/load_data_file")
        out = client.predict(handle_file(str(small)), "demo", 1024, False, False, api_name="/load_data_file")
        assert "**2** of 2 rows usable" in dict(zip(data_output_keys(), out))["data_summary"]
    assert not list((workspace / "uploads").glob("*big*"))


def test_start_from_run_in_the_app_is_a_run_of_this_workspace_by_name(workspace, tmp_path):
    """The app's start_from_run names a run of the workspace; a folder path (anywhere) is refused, and the
    engine refuses a run without an adapter or trained for another base model, before any run folder exists."""
    from helpers_runs import make_run

    from finetune.errors import ConfigError
    from finetune.paths import PathNotAllowedError, check_config_paths
    from finetune.train.start import start_training

    make_run(workspace, run_name="sft-done")
    make_run(workspace, run_name="no-adapter", with_adapter=False)
    check_config_paths(RunConfig(objective="dpo", start_from_run="sft-done"), workspace)
    for bad in (str(workspace / "runs" / "sft-done"), "/etc", "../x", "missing-run"):
        with pytest.raises(PathNotAllowedError, match="start_from_run"):
            check_config_paths(RunConfig(objective="dpo", start_from_run=bad), workspace)
    for name, expected in (("no-adapter", "no saved LoRA/DoRA adapter"), ("missing-run", "no run found")):
        with pytest.raises(ConfigError, match=expected):
            start_training(RunConfig(objective="dpo", start_from_run=name, max_steps=1), workspace=workspace)
    other = make_run(workspace, run_name="other-base", model="Qwen/Qwen2.5-0.5B-Instruct")
    with pytest.raises(ConfigError, match="use the same base model"):
        start_training(RunConfig(objective="dpo", start_from_run=other.name, max_steps=1), workspace=workspace)
    assert sorted(p.name for p in (workspace / "runs").iterdir()) == ["no-adapter", "other-base", "sft-done"]

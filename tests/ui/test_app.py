"""The app's main endpoints, called with gradio_client against a launched server (as a browser would)."""

from __future__ import annotations

import os
import sys
import time
import zipfile
from pathlib import Path

import pytest
from helpers_app import served

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # app.py and ui/ live at the repository root
    sys.path.insert(0, str(ROOT))

pytestmark = pytest.mark.slow

ACTIVE = ("queued", "loading", "training", "evaluating", "saving")


@pytest.fixture
def app(workspace):
    """(blocks, Client) for an app served exactly as app.py serves it, on a free port."""
    with served(workspace) as (blocks, client, _):
        yield blocks, client


def demo_config(blocks, **changes):
    """The config the Train tab starts from on first open (RunConfig <- suggested preset), made tiny."""
    base = blocks.finetune_ctx.base_config
    assert base.model_name_or_path == "demo"
    settings = {"max_steps": 40, "logging_steps": 2, "eval_steps": 10, "save_steps": 20}
    settings.update(changes)
    return base.replace(**settings)


def plain(markdown: str) -> str:
    """Markdown without its backslash escapes (names like learning_rate are escaped)."""
    return markdown.replace("\\", "")


def start(client, cfg) -> str:
    from ui.config_form import values_from_config

    return plain(client.predict(*values_from_config(cfg), api_name="/start_training")[0])


def wait_done(client, timeout: float = 240) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.predict("", api_name="/run_status")
        if status["state"] not in ACTIVE:
            return status
        time.sleep(0.5)
    raise AssertionError(f"run did not finish in {timeout} s: {status}")


def test_first_open_defaults(app):
    blocks, _ = app
    ctx = blocks.finetune_ctx
    assert ctx.base_config.model_name_or_path == "demo"
    assert ctx.base_config.dataset_path == ""  # the sample dataset
    if ctx.studio.hardware is not None and not getattr(ctx.studio.hardware, "gpus", None):
        assert ctx.studio.suggested_preset and "cpu" in ctx.studio.suggested_preset.lower()


def test_sample_data_format_and_rows(app):
    blocks, client = app
    out = client.predict("demo", 1024, False, False, api_name="/load_sample_data")
    assert len(out) == len(_output_keys())
    summary, detected = out[0], out[1]
    assert "messages" in detected
    assert "110" in summary and "usable" in summary
    named = dict(zip(_output_keys(), out))
    assert "suggested max_length" in named["data_trunc"]
    assert "seg-trained" in named["data_text"] and "seg-masked" in named["data_text"]
    assert "&lt;" not in summary  # plain text, no stray escaping
    assert named["f.dataset_path"] == ""
    chat, text = client.predict("", "auto", "", "demo", 3, False, False, api_name="/preview_example")
    assert chat and chat != named["data_chat"] and "seg-trained" in text


def _output_keys():
    """The Data tab's output names as the API returns them (no State, Accordion or Button)."""
    from ui.data_tab import OUTPUT_KEYS

    return [k for k in OUTPUT_KEYS if k not in ("data_state", "data_mapping_acc", "data_suggest_btn")]


def test_bad_data_file_shows_columns(app, tmp_path):
    from gradio_client import handle_file

    _, client = app
    bad = tmp_path / "qa.csv"
    bad.write_text("question,answer\nWhat is 2+2?,4\nCapital of France?,Paris\n", encoding="utf-8")
    out = client.predict(handle_file(str(bad)), "demo", 1024, False, False, api_name="/load_data_file")
    named = dict(zip(_output_keys(), out))
    assert "Cannot use" in named["data_summary"]
    assert "question" in named["data_mapping_md"] and "answer" in named["data_mapping_md"]
    # map the columns: instruction <- question, output <- answer
    from finetune.studio import MAP_TARGETS

    maps = ["" for _ in MAP_TARGETS]
    maps[MAP_TARGETS.index("instruction")] = "question"
    maps[MAP_TARGETS.index("output")] = "answer"
    out = client.predict(
        named["f.dataset_path"], "auto", *maps, "demo", 1024, False, False, api_name="/apply_column_mapping"
    )
    named = dict(zip(_output_keys(), out))
    assert "alpaca" in named["data_detected"], named["data_summary"]
    assert "**2** of 2 rows usable" in named["data_summary"]


def test_bad_yaml_gives_a_message(app, tmp_path):
    from gradio_client import handle_file

    from ui.config_form import values_from_config

    blocks, client = app
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 0.001\nmax_steps: lots\nmethod: magic\n", encoding="utf-8")
    values = values_from_config(blocks.finetune_ctx.base_config)
    out = client.predict(handle_file(str(bad)), *values, api_name="/load_config")
    message = plain(out[len(values)])
    assert "was not loaded" in message
    assert "learning_rat" in message and "learning_rate" in message  # the hint
    assert "max_steps" in message
    assert all(v == {"__type__": "update"} for v in out[: len(values)])  # gr.skip(): no field changed

    broken = tmp_path / "broken.yaml"
    broken.write_text("max_steps: [1, 2\n", encoding="utf-8")
    out = client.predict(handle_file(str(broken)), *values, api_name="/load_config")
    assert "not valid YAML" in out[len(values)]

    good = tmp_path / "good.yaml"
    good.write_text("max_steps: 7\nlora_r: 4\n", encoding="utf-8")
    out = client.predict(handle_file(str(good)), *values, api_name="/load_config")
    from ui.config_form import field_names

    loaded = dict(zip(field_names(), out[: len(values)]))
    assert loaded["max_steps"] == 7 and loaded["lora_r"] == 4
    assert "Loaded" in out[len(values)]


def test_save_config_roundtrip(app):
    from finetune.config import RunConfig
    from ui.config_form import values_from_config

    blocks, client = app
    cfg = demo_config(blocks, lora_r=8)
    saved, note = client.predict(*values_from_config(cfg), api_name="/save_config")
    path = saved["value"] if isinstance(saved, dict) else saved  # an update that also shows the file
    assert "Saved" in note
    # the sample data ('' in the form) is saved by its path, so the file says which data it trains on
    from finetune.demo import SAMPLE_DATASET

    assert cfg.dataset_path == ""
    assert RunConfig.from_yaml(path) == cfg.replace(dataset_path=str(SAMPLE_DATASET))


def test_train_compare_export(app, workspace):
    blocks, client = app
    client.predict("demo", 1024, False, False, api_name="/load_sample_data")
    cfg = demo_config(blocks, learning_rate=3e-3)
    message = start(client, cfg)
    assert "Started" in message, message
    status = wait_done(client)
    assert status["state"] == "done", status
    assert status["has_adapter"] and status["metrics"] > 0
    run_name = status["run"]

    overlay = client.predict([run_name], api_name="/overlay_runs")
    assert run_name in str(overlay)  # the run's loss curve is on the overlay chart

    base, tuned, note, stats, diff = client.predict(
        run_name, "Spell the word garden backwards.", "", 0.0, 1.0, 24, 0, api_name="/compare"
    )
    assert base.strip() and tuned.strip(), note
    assert base != tuned, "the adapter did not change the answer"
    assert "Done" in note
    assert "tokens in" in stats and "word-diff" in diff  # each answer's length and time; the word diff

    # batch evaluation on the run's own validation split, as training held it out
    msg, summary, _, table, files = client.predict(run_name, None, 2, "all", "", 0.0, 1.0, 16, 0, api_name="/evaluate")
    assert "Done: 2 rows" in msg, msg
    assert len(table["data"]) == 2 and "| ROUGE-L |" in summary and len(files) == 2

    adapter_zip = client.predict(run_name, api_name="/zip_adapter")
    with zipfile.ZipFile(adapter_zip) as zf:
        assert "adapter_config.json" in zf.namelist()

    merge_note, card = client.predict(run_name, api_name="/merge_model")
    assert "Merged model saved" in merge_note, merge_note
    assert "float32 weights" in merge_note and "exports/merged" in merge_note, merge_note
    assert "library_name: transformers" in card and card.startswith("```yaml")
    merged_zip = client.predict(run_name, api_name="/zip_merged_model")
    target = workspace / "unzipped-merged"
    with zipfile.ZipFile(merged_zip) as zf:
        zf.extractall(target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(target)
    tok = AutoTokenizer.from_pretrained(target)
    assert model.num_parameters() > 0 and tok("hello")["input_ids"]


def test_second_start_is_busy_then_stop_and_resume(app):
    blocks, client = app
    first = start(client, demo_config(blocks, max_steps=5000, save_steps=4, eval_steps=0, save_total_limit=2))
    assert "Started" in first
    second = start(client, demo_config(blocks))
    assert "Busy" in second and "Training did not start" in second
    assert "Traceback" not in second
    run_name = client.predict("", api_name="/run_status")["run"]
    deadline = time.time() + 120
    while client.predict(run_name, api_name="/run_status")["step"] < 9 and time.time() < deadline:
        time.sleep(0.5)
    stopped = plain(client.predict(api_name="/stop_training"))
    assert "Stop requested" in stopped
    status = wait_done(client)
    assert status["state"] == "stopped", status
    stopped_at = status["step"]

    resumed = plain(client.predict(run_name, api_name="/resume_training")[0])
    assert "Resumed" in resumed, resumed
    deadline = time.time() + 120
    while client.predict(run_name, api_name="/run_status")["step"] <= stopped_at and time.time() < deadline:
        time.sleep(0.5)
    assert client.predict(run_name, api_name="/run_status")["step"] > stopped_at
    client.predict(api_name="/stop_training")
    assert wait_done(client)["state"] == "stopped"


def test_problem_rows_report(app, tmp_path):
    import csv

    from gradio_client import handle_file

    _, client = app
    data = tmp_path / "mixed.jsonl"
    good = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}'
    data.write_text("\n".join([good, '{"messages": "oops"}', good, "not json", good]) + "\n", encoding="utf-8")
    out = client.predict(handle_file(str(data)), "demo", 256, False, False, api_name="/load_data_file")
    named = dict(zip(_output_keys(), out))
    assert "**3** of 5 rows usable" in named["data_summary"]
    table = named["data_problems"]
    rows = table["data"] if isinstance(table, dict) else table
    assert [r[0] for r in rows] == [2, 4]
    with open(named["data_problems_file"], encoding="utf-8") as fh:
        report = list(csv.DictReader(fh))
    assert [r["row"] for r in report] == ["2", "4"] and all(r["reason"] for r in report)


def test_start_error_is_a_message(app):
    blocks, client = app
    message = start(client, demo_config(blocks, dataset_path=os.path.join("nowhere", "missing.jsonl")))
    # the run starts in the background and fails there, or is refused up front: either way, no traceback
    if "Started" in message:
        status = wait_done(client)
        assert status["state"] == "failed"
        assert "Traceback" not in status["message"]
    else:
        assert "Training did not start" in message


def test_bad_settings_refused(app):
    blocks, client = app
    message = start(client, demo_config(blocks, learning_rate=5.0))
    assert "Training did not start" in message and "learning_rate" in message


def test_launch_kwargs_and_auth(tmp_path, monkeypatch):
    from ui.launch import exposure_warning, launch_kwargs, parse_auth, resolve_host_port

    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    assert resolve_host_port(None, None) == ("127.0.0.1", 7860)
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "9000")
    assert resolve_host_port(None, None) == ("0.0.0.0", 9000)
    assert resolve_host_port("127.0.0.1", 8000) == ("127.0.0.1", 8000)  # flags win
    assert parse_auth("a:b, c:d:e") == [("a", "b"), ("c", "d:e")]
    assert parse_auth("") is None
    with pytest.raises(ValueError):
        parse_auth("nopassword")
    assert exposure_warning("0.0.0.0", None, False)
    assert exposure_warning("0.0.0.0", [("a", "b")], False) is None
    assert exposure_warning("127.0.0.1", None, False) is None
    assert exposure_warning("localhost", None, True)
    kw = launch_kwargs(tmp_path, host="127.0.0.1", port=1234, auth=[("a", "b")], max_file_size="10mb")
    assert kw["allowed_paths"] == [str(tmp_path.resolve())]
    assert kw["enable_monitoring"] is False and kw["max_file_size"] == "10mb" and callable(kw["auth"])  # throttled
    monkeypatch.setenv("FINETUNE_MAX_FILE_SIZE", "2gb")
    assert launch_kwargs(tmp_path)["max_file_size"] == "2gb"


def test_app_cli_parses(monkeypatch):
    import app as app_module

    args = app_module.build_parser().parse_args(
        ["--host", "0.0.0.0", "--port", "8001", "--share", "--workspace", "/tmp/x", "--max-file-size", "1gb"]
    )
    assert (args.host, args.port, args.share, args.workspace, args.max_file_size) == (
        "0.0.0.0",
        8001,
        True,
        "/tmp/x",
        "1gb",
    )


def test_banner_when_exposed(workspace):
    from ui import build_app

    blocks = build_app(workspace, exposure_warning="exposed without auth")
    html_blocks = [b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "exposure-banner-block"]
    assert html_blocks and "exposed without auth" in html_blocks[0].value


def test_every_config_field_has_a_component(workspace):
    from finetune.config import field_help
    from ui import build_app

    blocks = build_app(workspace)
    assert list(blocks.finetune_ctx.fields) == list(field_help())
    Path(workspace).exists()

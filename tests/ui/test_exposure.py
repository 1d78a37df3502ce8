"""Exposure: who can reach the app and what it hands out. Loopback by default, a login when exposed,
a Gradio without the known advisories, files served from the workspace only, no typed path reaching
a file output, the Hub token never written anywhere, trust_remote_code off unless asked (and loud)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers_app import ROOT, call, local_client, plain, served, wait_for

from finetune.config import RunConfig

FAKE_TOKEN = "hf_FAKEtokenForLeakTests0123456789abcdef"
MIN_GRADIO = (6, 20)  # the `/gradio_api/file=` open redirect (and older advisories) are fixed from 6.20


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


# --- binding, auth, versions -----------------------------------------------------------------------
def test_default_bind_is_loopback(tmp_path, monkeypatch):
    from ui.launch import exposure_warning, is_loopback, launch_kwargs

    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    monkeypatch.delenv("FINETUNE_AUTH", raising=False)
    kwargs = launch_kwargs(tmp_path)
    assert kwargs["server_name"] == "127.0.0.1" and is_loopback(kwargs["server_name"])
    assert kwargs["share"] is False and "auth" not in kwargs
    assert kwargs["show_error"] is False and kwargs["enable_monitoring"] is False
    assert exposure_warning(kwargs["server_name"], None, False) is None
    for exposed in ("0.0.0.0", "::", "192.168.1.5", "example.com"):
        assert "WITHOUT a password" in exposure_warning(exposed, None, False)
    assert "public gradio.live link" in exposure_warning("127.0.0.1", None, True)


def test_app_py_turns_auth_on_and_warns_when_exposed(tmp_path, monkeypatch, capsys):
    """app.py's own wiring: FINETUNE_AUTH reaches launch(); exposed without it, a warning on stderr."""
    import gradio as gr

    import app as app_module

    captured = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: captured.update(kwargs))
    monkeypatch.setenv("FINETUNE_WORKSPACE", str(tmp_path / "ws"))  # app.main sets it: restored after the test
    monkeypatch.setenv("FINETUNE_AUTH", "alice:s3cret")
    assert app_module.main(["--host", "0.0.0.0", "--port", "7999", "--workspace", str(tmp_path / "ws")]) == 0
    from ui.launch import LoginThrottle

    throttle = captured["auth"].__self__
    assert isinstance(throttle, LoginThrottle) and throttle.pairs == {"alice": "s3cret"}
    assert captured["server_name"] == "0.0.0.0"
    assert captured["allowed_paths"] == [str((tmp_path / "ws").resolve())]
    assert "WARNING" not in capsys.readouterr().err

    monkeypatch.delenv("FINETUNE_AUTH")
    captured.clear()
    assert app_module.main(["--host", "0.0.0.0", "--workspace", str(tmp_path / "ws")]) == 0
    assert "auth" not in captured
    assert "WITHOUT a password" in capsys.readouterr().err
    monkeypatch.setenv("FINETUNE_AUTH", "no-colon")
    assert app_module.main(["--workspace", str(tmp_path / "ws")]) == 2  # a bad login spec: refuse to start


def test_gradio_is_new_enough_everywhere():
    import gradio

    assert _version(gradio.__version__) >= MIN_GRADIO, gradio.__version__
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    pins = re.findall(r'^\s*"gradio([^"_a-z-][^"]*)",?\s*$', pyproject, re.M)  # not gradio_client
    assert len(pins) == 1 and pins[0].startswith(">=") and _version(pins[0]) >= MIN_GRADIO, pins
    image = (ROOT / "docker" / "requirements.txt").read_text(encoding="utf-8")
    assert _version(re.search(r"^gradio==(\S+)", image, re.M).group(1)) >= MIN_GRADIO
    space = re.search(r"^sdk_version:\s*(\S+)", (ROOT / "README.md").read_text(encoding="utf-8"), re.M)
    assert space and _version(space.group(1)) >= MIN_GRADIO


def test_allowed_paths_is_only_the_workspace(tmp_path):
    from ui.launch import launch_kwargs

    (tmp_path / "ws").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "ws")
    for given in (tmp_path / "ws", tmp_path / "link", tmp_path / "ws" / ".." / "ws"):
        kwargs = launch_kwargs(given, host="127.0.0.1", port=1234)
        assert kwargs["allowed_paths"] == [str((tmp_path / "ws").resolve())]  # the real folder, nothing more
        assert [key for key in kwargs if key.endswith("_paths")] == ["allowed_paths"]  # no other path list


# --- trust_remote_code ---------------------------------------------------------------------------------
def test_trust_remote_code_is_off_by_default_and_warned_about():
    from finetune.config import field_help
    from finetune.models import check_runnable
    from finetune.plan.hardware import Machine
    from ui.model_tab import TRUST_REMOTE_CODE_WARNING, config_summary

    assert RunConfig().trust_remote_code is False and field_help()["trust_remote_code"]["default"] is False
    with pytest.warns(UserWarning, match="trust_remote_code is on"):
        check_runnable(RunConfig(trust_remote_code=True), Machine.virtual("cpu"))
    assert "trust_remote_code is on" in TRUST_REMOTE_CODE_WARNING
    assert TRUST_REMOTE_CODE_WARNING in config_summary(RunConfig(trust_remote_code=True), "cpu")
    assert "trust_remote_code" not in config_summary(RunConfig(), "cpu")


# --- the running app -------------------------------------------------------------------------------------
def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.slow
def test_served_files_come_from_the_workspace_only(workspace, tmp_path):
    """`/gradio_api/file=` serves the workspace and nothing else; a file input only takes real uploads."""
    import httpx

    inside = workspace / "reports" / "inside.txt"
    inside.parent.mkdir(parents=True)
    inside.write_text("inside the workspace")
    outside = tmp_path / "outside-secret.txt"
    outside.write_text("TOP-SECRET")
    with served(workspace) as (blocks, client, url):
        base = url.rstrip("/")
        assert _get(f"{base}/gradio_api/file={inside}") == (200, b"inside the workspace")
        for path in (str(outside), "/etc/passwd", f"{workspace}/../outside-secret.txt", str(ROOT / "pyproject.toml")):
            status, body = _get(f"{base}/gradio_api/file={path}")
            assert status in (403, 404) and b"TOP-SECRET" not in body and b"root:" not in body, (path, status)
        # an API caller naming a server path instead of uploading a file is refused by Gradio
        fake_upload = tmp_path / "not-uploaded.jsonl"
        fake_upload.write_text('{"text": "TOP-SECRET"}\n')
        payload = {
            "data": [{"path": str(fake_upload), "meta": {"_type": "gradio.FileData"}}, "demo", 256, False, False]
        }
        event = httpx.post(f"{base}/gradio_api/call/load_data_file", json=payload, timeout=30).json()["event_id"]
        answer = httpx.get(f"{base}/gradio_api/call/load_data_file/{event}", timeout=60).text
        assert "event: error" in answer and "TOP-SECRET" not in answer
        assert not list(workspace.glob("uploads/*not-uploaded*"))
        assert client.predict("", api_name="/run_status")["state"] == "none"  # still serving


@pytest.fixture
def auth_app(workspace):
    """The app served with a login, and its URL (no client: connecting is what is tested)."""
    from helpers_app import free_port

    from ui import build_app
    from ui.launch import launch_kwargs

    blocks = build_app(workspace)
    kwargs = launch_kwargs(workspace, port=free_port(), quiet=True, auth=[("alice", "s3cret")])
    _, url, _ = blocks.launch(prevent_thread_lock=True, **kwargs)
    yield url
    blocks.close()


@pytest.mark.slow
def test_login_is_enforced_when_auth_is_set(auth_app):

    assert _get(auth_app + "config")[0] == 401
    assert _get(auth_app + "gradio_api/info")[0] == 401
    with pytest.raises(ValueError, match="credentials|login"):
        local_client(auth_app)
    with pytest.raises(ValueError, match="[Ii]nvalid credentials|login"):
        local_client(auth_app, auth=("alice", "wrong"))
    client = local_client(auth_app, auth=("alice", "s3cret"))
    assert client.predict("", api_name="/run_status")["state"] == "none"


@pytest.mark.slow
def test_login_is_rate_limited(workspace):
    """50 wrong passwords at once: at most 5 are checked, each wrong one costs a second, then the user
    name is locked (a right password too) while the app keeps answering; after the lockout it works."""
    import concurrent.futures

    import httpx
    from helpers_app import free_port

    from ui import build_app
    from ui.launch import launch_kwargs

    blocks = build_app(workspace)
    kwargs = launch_kwargs(workspace, port=free_port(), quiet=True, auth=[("alice", "s3cret")])
    throttle = kwargs["auth"].__self__
    throttle.lockout_s = 12.0  # the default is a minute; a short one keeps the test short
    _, url, _ = blocks.launch(prevent_thread_lock=True, **kwargs)
    try:

        def login(password: str) -> int:
            return httpx.post(url + "login", data={"username": "alice", "password": password}, timeout=60).status_code

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(login, [f"guess-{i}" for i in range(50)]))
        assert codes == [400] * 50 and throttle.checked <= 5 + 16, throttle.checked
        assert throttle.delayed == 50  # no instant answers to wrong passwords: each one waited
        assert login("s3cret") == 400  # locked: even the right password is refused
        # a refused attempt waits without holding anyone else: the page answers while it still waits
        throttle.delay_s = 3.0
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(login, "s3cret")
            wait_for(lambda: throttle.waiting == 1, 30, what="the refused attempt waiting")
            assert _get(url + "config")[0] == 401 and not pending.done() and throttle.waiting == 1
            assert pending.result(60) == 400
        time.sleep(max(0.0, max(throttle.locked_until.values()) - time.monotonic() + 0.2))
        assert login("s3cret") == 200
    finally:
        blocks.close()


# --- the Hub token ---------------------------------------------------------------------------------------
def _fake_finished_run(workspace: Path, name: str):
    from finetune.runs import create_run

    run = create_run(RunConfig(run_name=name, quantization="none"), workspace)
    run.adapter_dir.mkdir()
    (run.adapter_dir / "adapter_config.json").write_text("{}")
    (run.adapter_dir / "adapter_model.safetensors").write_bytes(b"0")
    run.log("trained")
    run.write_status("done", "Finished", step=1, total_steps=1)
    return run


def _files_holding(root: Path, secret: str) -> list[str]:
    hits = []
    for path in Path(root).rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if secret.encode() in path.read_bytes():
                    hits.append(str(path))
            except OSError:
                continue
    return hits


def _closed_port() -> int:
    from helpers_app import free_port

    return free_port()  # nothing listens there once the probe socket is closed: connection refused


@pytest.mark.slow
def test_hub_token_is_never_logged_or_saved_by_the_app(workspace, monkeypatch, capfd):
    """Push with a recognizable fake token, offline and with an unreachable Hub: the message never
    echoes it, the token box is cleared, and no file, log or console line holds it."""
    import huggingface_hub

    run = _fake_finished_run(workspace, "to-push")
    with served(workspace) as (_blocks, client, _url):
        for label in ("offline", "unreachable"):
            if label == "unreachable":  # online mode, but the Hub endpoint refuses connections
                monkeypatch.setenv("HF_HUB_OFFLINE", "0")
                monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
                monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
            for what in ("adapter", "merged model"):
                (message, token_box), logs = call(client, "to-push", "alice/my-adapter", FAKE_TOKEN, what, True,
                                                  api_name="/push_to_hub")  # fmt: skip
                assert "Not uploaded" in plain(message), message
                assert FAKE_TOKEN not in message and token_box == "" and not any(FAKE_TOKEN in m for m in logs)
                if what == "adapter":
                    reason = "offline" if label == "offline" else "Connection refused"
                    assert reason in plain(message), message
        status = client.predict("to-push", api_name="/run_status")
        assert FAKE_TOKEN not in json.dumps(status)
    out, err = capfd.readouterr()
    assert FAKE_TOKEN not in out and FAKE_TOKEN not in err
    assert not _files_holding(workspace, FAKE_TOKEN)
    assert FAKE_TOKEN not in run.log_path.read_text()


@pytest.mark.slow
def test_hub_token_is_never_logged_or_saved_by_the_cli(workspace, tmp_path):
    run = _fake_finished_run(workspace, "cli-push")
    hf_home = tmp_path / "hf-home"
    for offline in ("1", "0"):
        env = {**os.environ, "HF_TOKEN": FAKE_TOKEN, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": offline,
               "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}", "FINETUNE_WORKSPACE": str(workspace)}  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "finetune.cli", "export", "--run", "cli-push", "--push-to-hub", "alice/my-adapter"],
            env=env, capture_output=True, text=True, timeout=120, cwd=str(ROOT),
        )  # fmt: skip
        assert done.returncode == 1, done.stderr[-2000:]
        assert "error:" in done.stderr and "Traceback" not in done.stderr
        assert FAKE_TOKEN not in done.stdout and FAKE_TOKEN not in done.stderr
    assert not _files_holding(workspace, FAKE_TOKEN) and not _files_holding(tmp_path, FAKE_TOKEN)
    assert run.has_adapter()

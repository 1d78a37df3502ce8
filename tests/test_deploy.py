"""The Docker image's entry command, run here without Docker (no engine on this machine).

docker/entrypoint.sh is what the container runs: it must serve the app with a login when it
listens on the network, and refuse to start exposed without one. The Dockerfile itself is
checked statically (and by hadolint when it is installed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
DOCKERFILE = ROOT / "Dockerfile"
pytestmark = pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(workspace: Path, **extra: str) -> dict[str, str]:
    env = os.environ.copy()
    for name in ("FINETUNE_AUTH", "FINETUNE_ALLOW_NO_AUTH", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        env.pop(name, None)
    env.update(PYTHON=sys.executable, FINETUNE_WORKSPACE=str(workspace))
    env.update(extra)
    return env


@pytest.fixture
def fake_python(tmp_path) -> Path:
    """Stands in for python: records the argv and cwd the entrypoint execs, instead of serving."""
    script = tmp_path / "fake-python"
    record = tmp_path / "exec.json"
    script.write_text(
        textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, sys
        json.dump({{"argv": sys.argv[1:], "cwd": os.getcwd()}}, open({str(record)!r}, "w"))
        """)
    )
    script.chmod(0o755)
    return script


def _run_entrypoint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=60)


def _exec_record(fake_python: Path) -> dict | None:
    record = fake_python.parent / "exec.json"
    return json.loads(record.read_text()) if record.is_file() else None


# --- the real app through the entry command --------------------------------------
def _get(url: str, data: dict | None = None, headers: dict | None = None) -> tuple[int, str, dict]:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode(errors="replace"), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace"), dict(exc.headers)


@pytest.mark.slow
def test_entrypoint_serves_the_app_with_a_login(workspace, tmp_path):
    """As in the container: GRADIO_SERVER_NAME=0.0.0.0 plus FINETUNE_AUTH -> the app answers, behind a login."""
    port = _free_port()
    env = _env(workspace, GRADIO_SERVER_NAME="0.0.0.0", GRADIO_SERVER_PORT=str(port), FINETUNE_AUTH="alice:s3cret")
    log = (tmp_path / "app.log").open("w")
    proc = subprocess.Popen([str(ENTRYPOINT)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        status = None
        while time.time() < deadline and proc.poll() is None:
            try:
                status, page, _ = _get(base + "/")
                break
            except OSError:
                time.sleep(0.5)
        log_text = (tmp_path / "app.log").read_text()
        assert proc.poll() is None, f"the app exited with {proc.returncode}:\n{log_text[-3000:]}"
        assert status == 200, f"no HTTP answer on port {port}:\n{log_text[-3000:]}"
        # the login is really on: the app's config is refused until the right password is given
        assert _get(base + "/config")[0] == 401
        assert _get(base + "/login", {"username": "alice", "password": "wrong"})[0] >= 400
        code, _, headers = _get(base + "/login", {"username": "alice", "password": "s3cret"})
        assert code == 200
        cookie = "; ".join(c.split(";")[0] for c in headers.get("set-cookie", "").split(", ") if "=" in c)
        assert _get(base + "/config", headers={"Cookie": cookie})[0] == 200
        assert "WARNING" not in log_text  # no exposure warning: a password is set
    finally:
        proc.terminate()  # the entrypoint exec'd python, so this is the app itself
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert workspace.is_dir()


# --- the exposure rule, with a stand-in python ------------------------------------
@pytest.mark.parametrize(
    "extra, args",
    [
        ({}, ()),  # the image's default: 0.0.0.0
        ({"GRADIO_SERVER_NAME": "0.0.0.0"}, ()),
        ({"GRADIO_SERVER_NAME": "127.0.0.1"}, ("--host", "0.0.0.0")),
        ({"GRADIO_SERVER_NAME": "127.0.0.1"}, ("--host=::",)),
        ({"GRADIO_SERVER_NAME": "127.0.0.1"}, ("--share",)),
        ({"FINETUNE_AUTH": ""}, ()),
        ({"FINETUNE_ALLOW_NO_AUTH": "yes"}, ()),  # only the documented value 1 opts out
    ],
)
def test_refuses_to_start_exposed_without_auth(tmp_path, fake_python, extra, args):
    env = _env(tmp_path, PYTHON=str(fake_python), **extra)
    result = _run_entrypoint(env, *args)
    assert result.returncode == 2
    assert "refusing" in result.stderr and "FINETUNE_AUTH" in result.stderr
    assert _exec_record(fake_python) is None, "the app must not be started at all"


@pytest.mark.parametrize(
    "extra, args, host",
    [
        ({"FINETUNE_AUTH": "alice:s3cret"}, (), "0.0.0.0"),
        ({"FINETUNE_ALLOW_NO_AUTH": "1"}, (), "0.0.0.0"),
        ({"GRADIO_SERVER_NAME": "127.0.0.1"}, (), "127.0.0.1"),
        ({"GRADIO_SERVER_NAME": "localhost"}, (), "localhost"),
        ({"GRADIO_SERVER_NAME": "0.0.0.0"}, ("--host", "127.0.0.1"), "127.0.0.1"),
    ],
)
def test_starts_when_protected_or_local(tmp_path, fake_python, extra, args, host):
    env = _env(tmp_path, PYTHON=str(fake_python), GRADIO_SERVER_PORT="7999", **extra)
    result = _run_entrypoint(env, *args)
    assert result.returncode == 0, result.stderr
    record = _exec_record(fake_python)
    argv = record["argv"]
    assert argv[0] == "app.py" and Path(record["cwd"]) == ROOT
    # app.py's argparse keeps the last --host: that is the one the check looked at
    assert [a for i, a in enumerate(argv) if i and argv[i - 1] == "--host"][-1] == host
    assert argv[argv.index("--port") + 1] == "7999"
    assert argv[argv.index("--workspace") + 1] == str(tmp_path)


def test_flags_are_passed_on(tmp_path, fake_python):
    env = _env(tmp_path, PYTHON=str(fake_python), FINETUNE_AUTH="a:b")
    assert _run_entrypoint(env, "--share", "--max-file-size", "2gb").returncode == 0
    argv = _exec_record(fake_python)["argv"]
    assert argv[-3:] == ["--share", "--max-file-size", "2gb"]


# --- the Dockerfile and its context ---------------------------------------------
def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    lines = [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def test_dockerfile_shape():
    steps = _instructions(DOCKERFILE.read_text())
    froms = [arg for op, arg in steps if op == "FROM"]
    assert len(froms) == 1, "one base image, so one copy of CUDA"
    # the base brings no CUDA of its own when torch's CUDA wheels are installed on top (or the reverse)
    assert ("cuda" in froms[0].lower()) != any("torch==" in arg for op, arg in steps if op == "RUN")
    assert ("USER", "1000:1000") in steps
    assert ("EXPOSE", "7860") in steps
    env = " ".join(arg for op, arg in steps if op == "ENV")
    assert "GRADIO_SERVER_NAME=0.0.0.0" in env
    hf_home = re.search(r"HF_HOME=(\S+)", env).group(1)
    workspace = re.search(r"FINETUNE_WORKSPACE=(\S+)", env).group(1)
    volumes = json.loads(next(arg for op, arg in steps if op == "VOLUME"))
    assert hf_home in volumes and workspace in volumes
    entry = json.loads(next(arg for op, arg in steps if op == "ENTRYPOINT"))
    assert entry[-1].endswith("docker/entrypoint.sh")


def test_no_secret_is_baked_into_the_image():
    steps = _instructions(DOCKERFILE.read_text())
    for op, arg in steps:
        if op in ("ARG", "ENV"):
            assert not re.search(r"TOKEN|SECRET|PASSWORD|AUTH|KEY", arg, re.I), f"{op} {arg}"
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".env", "workspace/", "test-artifacts/"):
        assert entry in ignored


def test_image_requirements_cover_the_project():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {Requirement(r).name.lower().replace("_", "-"): Requirement(r) for r in project}
    lines = (ROOT / "docker" / "requirements.txt").read_text().splitlines()
    pins = [Requirement(ln) for ln in lines if ln.strip() and not ln.startswith("#")]
    pinned = {r.name.lower().replace("_", "-"): r for r in pins}
    assert set(wanted) - set(pinned) == {"torch"}, "torch comes from the CUDA wheels, everything else is pinned"
    for name, pin in pinned.items():
        version = next(iter(pin.specifier)).version
        if name in wanted:
            assert wanted[name].specifier.contains(version), f"{name}=={version} is outside pyproject's {wanted[name]}"


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint is not installed")
def test_hadolint_is_clean():
    result = subprocess.run(["hadolint", "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the Hugging Face Space front matter ------------------------------------------
def test_space_front_matter():
    import gradio
    import yaml

    text = (ROOT / "docs" / "space_front_matter.yaml").read_text(encoding="utf-8")
    assert text.startswith("---\n") and text.rstrip().endswith("---"), "a README.md front matter block"
    meta = next(yaml.safe_load_all(text))
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio.__version__
    assert (ROOT / meta["app_file"]).is_file()
    hardware = {"t4-small", "t4-medium", "l4x1", "a10g-small", "a10g-large", "a100-large", "l40sx1"}
    assert meta["suggested_hardware"] in hardware
    assert len(meta["short_description"]) <= 60  # the Hub's limit
    assert meta["license"] == "apache-2.0"  # pyproject's Apache-2.0
    for key in ("title", "emoji", "colorFrom", "colorTo", "pinned"):
        assert key in meta

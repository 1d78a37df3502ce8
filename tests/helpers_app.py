"""Serving the app for tests (in this process or as `python app.py`), calling it with gradio_client,
and snapshots of folders to prove that nothing was written where it must not be."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # app.py and ui/ live at the repository root
    sys.path.insert(0, str(ROOT))

ACTIVE = ("queued", "loading", "training", "evaluating", "saving")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_client(url: str, **kwargs):
    """A gradio_client for the app served over plain http on this machine. gradio_client opens a new httpx
    client for every call, and with certificate checks on each one loads the system's CA bundle (profiled:
    21 s of the hostile-corpus test's 121 s), though nothing here speaks TLS."""
    from gradio_client import Client

    return Client(url, verbose=False, ssl_verify=False, **kwargs)


@contextlib.contextmanager
def served(workspace: Path, **launch_overrides):
    """(blocks, client, url) for the app served in this process exactly as app.py serves it."""
    from ui import build_app
    from ui.launch import launch_kwargs

    blocks = build_app(workspace)
    kwargs = launch_kwargs(workspace, port=free_port(), quiet=True)
    kwargs.update(launch_overrides)
    _, url, _ = blocks.launch(prevent_thread_lock=True, **kwargs)
    try:
        client = local_client(url, download_files=str(workspace / "client-downloads"))
        yield blocks, client, url
    finally:
        wait_idle()
        blocks.close()


def wait_idle(timeout: float = 120) -> None:
    from finetune.train.registry import current_job

    job = current_job()
    if job is not None and hasattr(job, "stop"):  # not a stand-in a test patched in
        job.stop()
        job.wait(timeout)


def plain(markdown) -> str:
    """Markdown without its backslash escapes (names like learning_rate are escaped)."""
    return str(markdown).replace("\\", "")


def call(client, *args, api_name: str):
    """(result, [warning/info texts]) of one endpoint call: gr.Warning toasts come back as log messages."""
    job = client.submit(*args, api_name=api_name)
    result = job.result(timeout=300)
    logs = []
    updates = job.communicator.updates if job.communicator else None
    while updates is not None and not updates.empty():
        update = updates.get_nowait()
        if getattr(update, "log", None):
            logs.append(update.log[0])
    return result, logs


def data_output_keys() -> list[str]:
    """The Data tab's output names as the API returns them (no State, Accordion or Button)."""
    from ui.data_tab import OUTPUT_KEYS

    return [k for k in OUTPUT_KEYS if k not in ("data_state", "data_mapping_acc", "data_suggest_btn")]


def start_values(cfg) -> list:
    from ui.config_form import values_from_config

    return values_from_config(cfg)


def app_base_config():
    """The config the app starts from on first open: RunConfig <- the preset suggested for this machine."""
    from finetune.config import RunConfig
    from finetune.plan.hardware import detect_hardware
    from finetune.presets import apply_preset, suggest_preset

    preset = suggest_preset(detect_hardware())
    return apply_preset(RunConfig(), preset) if preset else RunConfig()


def wait_for(predicate, timeout: float, interval: float = 0.3, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_done(client, run_name: str = "", timeout: float = 240) -> dict:
    status = {}
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.predict(run_name, api_name="/run_status")
        if status["state"] not in ACTIVE:
            return status
        time.sleep(0.5)
    raise AssertionError(f"run did not finish in {timeout} s: {status}")


# --- `python app.py` as a real process ------------------------------------------------------
class AppProcess:
    """`python app.py --port P --workspace W` in its own process group, output to a log file."""

    def __init__(self, workspace: Path, log_path: Path, env: dict | None = None, port: int | None = None):
        self.workspace, self.log_path, self.port = workspace, log_path, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        full_env = {**os.environ, **(env or {})}
        full_env.pop("GRADIO_SERVER_NAME", None)
        self._log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "--port", str(self.port), "--workspace", str(workspace)],
            cwd=str(ROOT), env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def client(self, timeout: float = 180):
        """A gradio_client Client once the app answers."""

        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"app.py exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                return local_client(self.url, download_files=str(self.workspace / "client-downloads"))
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
                time.sleep(0.5)
        raise AssertionError(f"app.py did not answer in {timeout} s ({last}):\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def kill9(self) -> None:
        self.proc.kill()  # SIGKILL: no handler, no cleanup, like a crash or the OOM killer
        self.proc.wait(30)
        self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if not self._log.closed:
            self._log.close()


# --- what is on disk -------------------------------------------------------------------------
def snapshot(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime_ns) of every file and folder under `root`, except under `skip`."""
    root = Path(root)
    skip_real = tuple(Path(os.path.realpath(s)) for s in skip)
    out: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        kept = []
        for name in dirnames:
            full = here / name
            if any(Path(os.path.realpath(full)) == s or full == s for s in skip_real + tuple(skip)):
                continue
            kept.append(name)
            out[str(full.relative_to(root)) + "/"] = (0, 0)
        dirnames[:] = kept
        for name in filenames:
            full = here / name
            try:
                st = full.lstat()
            except OSError:
                continue
            out[str(full.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def untracked_repo_files() -> set[str]:
    """Files in the repository tree git does not track (ignored ones included)."""
    out = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard", "--directory", "--no-empty-directory"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    ignored = subprocess.run(
        ["git", "ls-files", "--others", "--ignored", "--exclude-standard", "--directory"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return set(out.stdout.split("\n")) | set(ignored.stdout.split("\n"))

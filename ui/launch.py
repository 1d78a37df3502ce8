"""How the app is served: host/port resolution, auth, exposure warning, and launch() kwargs.

app.py parses the command line and calls `launch_kwargs(...)`; tests reuse the same function
so they serve the app exactly as `python app.py` does.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import Any

import gradio as gr

from ui.headers import middleware as security_middleware

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MAX_FILE_SIZE = "500mb"
AUTH_ENV = "FINETUNE_AUTH"
MAX_FILE_SIZE_ENV = "FINETUNE_MAX_FILE_SIZE"

CSS = """
.ft-banner { background: #fef2f2; border: 2px solid #dc2626; color: #7f1d1d; padding: 10px 14px;
             border-radius: 8px; font-weight: 600; }
.ft-progress { margin: 4px 0 8px 0; }
.ft-bar { width: 100%; height: 14px; background: #e5e7eb; border-radius: 7px; overflow: hidden; }
.ft-fill { height: 100%; background: linear-gradient(90deg, #2563eb, #3b82f6); }
.ft-progress.done .ft-fill { background: #16a34a; }
.ft-progress.failed .ft-fill, .ft-progress.interrupted .ft-fill { background: #dc2626; }
.ft-progress.stopped .ft-fill { background: #9ca3af; }
.ft-progress-text { font-size: 0.9em; color: #374151; margin-top: 3px; font-variant-numeric: tabular-nums; }
.seg-text { white-space: pre-wrap; word-break: break-word; font-family: ui-monospace, SFMono-Regular, Menlo, monospace;
            font-size: 0.85em; line-height: 1.5; padding: 10px; border: 1px solid #e5e7eb; border-radius: 6px;
            max-height: 380px; overflow-y: auto; background: #fafafa; }
.seg-trained { background: #dcfce7; color: #14532d; border-radius: 2px; }
.seg-masked { color: #9ca3af; }
.seg-legend { font-size: 0.85em; margin-bottom: 6px; }
.pair-row { display: flex; gap: 10px; margin-top: 8px; }
.pair-col { flex: 1 1 0; min-width: 0; border: 1px solid #e5e7eb; border-radius: 6px; padding: 6px; }
.pair-head { font-weight: 600; font-size: 0.9em; margin-bottom: 4px; }
.pair-chosen .pair-head, .pair-good .pair-head { color: #15803d; }
.pair-rejected .pair-head, .pair-bad .pair-head { color: #b91c1c; }
.seg-legend span { padding: 1px 6px; margin-right: 6px; border-radius: 3px; }
.seg-legend .seg-masked { border: 1px dashed #d1d5db; }
.seg-error { color: #b91c1c; }
.ft-muted, .ft-muted p { font-size: 0.85em; color: #6b7280; }
.ft-diff-legend { font-size: 0.85em; margin-bottom: 6px; }
.ft-diff-legend del, .ft-diff-legend ins { padding: 1px 6px; margin-right: 6px; border-radius: 3px; }
.ft-diff-legend del { background: #fbd6d6; }
.ft-diff-legend ins { background: #d4f8d4; text-decoration: none; }
.ft-diff-empty, .ft-diff-same { color: #6b7280; font-size: 0.9em; }
.word-diff { line-height: 1.6; padding: 4px 2px; }
#ab-buttons button { min-height: 44px; font-size: 1.05em; }
#model-estimate table td, #model-estimate table th { word-break: normal; overflow-wrap: normal; hyphens: none; }
#model-estimate table td:first-child { white-space: nowrap; }
"""

# Blind A/B shortcut keys (ui.ab_view): 1/a, 2/b, 3/t, 4/x click the matching vote button, which must be
# on screen and enabled; keys typed into a text field, or with a modifier, are left alone.
JS = """
() => {
  if (window.__ftAbKeys) return;
  window.__ftAbKeys = true;
  const keys = {"1": "ab-a", "a": "ab-a", "2": "ab-b", "b": "ab-b", "3": "ab-tie", "t": "ab-tie",
                "4": "ab-bad", "x": "ab-bad"};
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat || e.defaultPrevented) return;
    const el = e.target;
    const tag = el && el.tagName ? el.tagName.toLowerCase() : "";
    if (tag === "input" || tag === "textarea" || tag === "select" || (el && el.isContentEditable)) return;
    const id = keys[(e.key || "").toLowerCase()];
    if (!id) return;
    const button = document.getElementById(id);
    if (!button || button.disabled || button.offsetParent === null) return;
    e.preventDefault();
    button.click();
  });
}
"""


def theme() -> gr.themes.Base:
    """A theme with system fonts only: the app must not reach out to Google Fonts (offline use)."""
    fonts = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]
    mono = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
    return gr.themes.Soft(primary_hue="blue", font=fonts, font_mono=mono)


def parse_auth(text: str | None) -> list[tuple[str, str]] | None:
    """`user:pass[,user2:pass2]` -> [(user, pass), ...]; None when empty. ValueError on a bad entry."""
    if not text or not text.strip():
        return None
    pairs = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise ValueError(
                f"{AUTH_ENV} entries must look like user:password (got an entry without ':' or empty parts)"
            )
        pairs.append((user, password))
    return pairs or None


class LoginThrottle:
    """Gradio's `auth` (`.check`) with a rate limit: every wrong password costs `delay_s` (awaited, so
    the server keeps serving), and after `max_failures` wrong passwords for one user name within
    `window_s` (or `max_failures * 6` for all names together: password spraying) every attempt is
    refused, even a right one, for `lockout_s`. Passwords are compared in constant time."""

    def __init__(
        self,
        pairs: list[tuple[str, str]],
        *,
        max_failures: int = 5,
        window_s: float = 60.0,
        lockout_s: float = 60.0,
        delay_s: float = 1.0,
    ):
        self.pairs = dict(pairs)
        self.max_failures, self.window_s, self.lockout_s, self.delay_s = max_failures, window_s, lockout_s, delay_s
        self.failures: dict[str, list[float]] = {}  # user name ("*": every name) -> times of wrong passwords
        self.locked_until: dict[str, float] = {}
        self.checked = 0  # passwords actually compared (for tests and logs)
        self.delayed = 0  # refused attempts that waited delay_s before their answer
        self.waiting = 0  # attempts waiting right now

    def _locked(self, key: str, now: float) -> bool:
        return self.locked_until.get(key, 0.0) > now

    def _fail(self, key: str, limit: int, now: float) -> None:
        recent = [t for t in self.failures.get(key, []) if now - t < self.window_s] + [now]
        self.failures[key] = recent[-limit:]
        if len(recent) >= limit:
            self.locked_until[key] = now + self.lockout_s
            self.failures[key] = []

    async def check(self, username: str, password: str) -> bool:
        """The `auth` callable (a coroutine function: Gradio awaits only what inspect says is one)."""
        import hmac
        import time

        now = time.monotonic()
        user = str(username)[:200]
        if self._locked(user, now) or self._locked("*", now):
            await self._delay()
            return False
        self.checked += 1
        expected = self.pairs.get(user)
        ok = expected is not None and hmac.compare_digest(str(password).encode(), expected.encode())
        if ok:
            self.failures.pop(user, None)
            return True
        if len(self.failures) > 10_000:  # many made-up names: forget the oldest
            self.failures.clear()
        self._fail(user, self.max_failures, now)
        self._fail("*", self.max_failures * 6, now)
        await self._delay()
        return False

    async def _delay(self) -> None:
        """A refused attempt's wait: awaited, so every other request is served meanwhile."""
        import asyncio

        self.delayed += 1
        self.waiting += 1
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.waiting -= 1


def is_loopback(host: str) -> bool:
    if host in ("localhost", "") or host.startswith("localhost."):
        return host != ""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, auth: Any, share: bool) -> str | None:
    """The warning to show when anyone on the network can use the app (run code, read the workspace)."""
    if auth:
        return None
    if share:
        return (
            "This app is shared on a public gradio.live link WITHOUT a password: anyone with the link can "
            f"train, read your data and export models. Set {AUTH_ENV}=user:password."
        )
    if not is_loopback(host):
        return (
            f"This app listens on {host} (not only this computer) WITHOUT a password: anyone who can reach "
            f"it can train, read your data and export models. Set {AUTH_ENV}=user:password, or bind to 127.0.0.1."
        )
    return None


def resolve_host_port(host: str | None, port: int | None) -> tuple[str, int]:
    """Flags win over GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, which win over 127.0.0.1:7860."""
    host = host or os.environ.get("GRADIO_SERVER_NAME") or DEFAULT_HOST
    if port is None:
        env = os.environ.get("GRADIO_SERVER_PORT")
        port = int(env) if env and env.strip().isdigit() else DEFAULT_PORT
    return host, int(port)


def launch_kwargs(
    workspace: str | Path,
    *,
    host: str | None = None,
    port: int | None = None,
    share: bool = False,
    auth: list[tuple[str, str]] | None = None,
    max_file_size: str | int | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Everything `Blocks.launch()` gets, in one place (tests use it too)."""
    host, port = resolve_host_port(host, port)
    size = max_file_size or os.environ.get(MAX_FILE_SIZE_ENV) or DEFAULT_MAX_FILE_SIZE
    if isinstance(size, str) and size.strip().isdigit():
        size = int(size.strip())
    kwargs: dict[str, Any] = {
        "server_name": host,
        "server_port": port,
        "share": bool(share),
        "max_file_size": size,
        "allowed_paths": [str(Path(workspace).resolve())],
        "enable_monitoring": False,
        "show_error": False,  # errors are shown as messages by the handlers, never as tracebacks
        "ssr_mode": False,
        "theme": theme(),
        "css": CSS,
        "js": JS,
        "quiet": quiet,
        "footer_links": ["api", "gradio"],
        # Gradio 6.31 announces a finished progress bar as the untranslated key "common.complete"
        "i18n": gr.I18n(en={"common.complete": "Complete"}),
        # X-Frame-Options / CSP frame-ancestors, nosniff, Referrer-Policy on every response (ui/headers.py)
        "app_kwargs": {"middleware": security_middleware()},
    }
    if auth:
        kwargs["auth"] = auth if callable(auth) else LoginThrottle(auth).check
        kwargs["auth_message"] = "finetune studio: sign in"
    return kwargs


def warn_stderr(message: str | None) -> None:
    if message:
        bar = "!" * 78
        print(f"\n{bar}\nWARNING: {message}\n{bar}\n", file=sys.stderr, flush=True)

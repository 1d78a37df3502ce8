"""Security headers on every response the app serves (pages, API, files, event streams): the page may not
be framed by another site (clickjacking: a page that frames the app could click Start or Delete), the
browser must not guess content types, and no referrer leaves for other sites.

Framing is refused unless the host embeds the app on purpose: on a Hugging Face Space ($SPACE_ID is set)
huggingface.co may frame it; anywhere else FINETUNE_FRAME_ANCESTORS names the sites that may (a CSP
frame-ancestors source list, e.g. "https://intranet.example.com"; "*" allows every site).
"""

from __future__ import annotations

import os

FRAME_ANCESTORS_ENV = "FINETUNE_FRAME_ANCESTORS"
SPACE_FRAME_ANCESTORS = "https://huggingface.co https://*.huggingface.co"


def frame_ancestors() -> str:
    """The CSP frame-ancestors sources: 'none' unless the host embeds the app on purpose."""
    configured = os.environ.get(FRAME_ANCESTORS_ENV, "").strip()
    if configured:
        return configured
    if os.environ.get("SPACE_ID"):
        return SPACE_FRAME_ANCESTORS
    return "'none'"


def security_headers() -> list[tuple[bytes, bytes]]:
    ancestors = frame_ancestors()
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
    ]
    if ancestors != "*":
        headers.append((b"content-security-policy", f"frame-ancestors {ancestors}".encode()))
    if ancestors == "'none'":
        headers.append((b"x-frame-options", b"DENY"))  # for browsers older than CSP level 2
    return headers


class SecurityHeaders:
    """Pure ASGI middleware (streamed responses pass through untouched): adds `headers` to every HTTP
    response that does not set them itself."""

    def __init__(self, app, headers: list[tuple[bytes, bytes]] | None = None):
        self.app = app
        self.headers = headers if headers is not None else security_headers()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in self.headers if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def middleware() -> list:
    """What `launch(app_kwargs={"middleware": ...})` gets: FastAPI builds it into the app before it starts.
    Each entry is (class, args, kwargs), the form Starlette's Middleware unpacks to when it builds the stack."""
    return [(SecurityHeaders, (), {"headers": security_headers()})]

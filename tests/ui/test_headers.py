"""Security headers on every response: no framing by other sites (unless the host embeds the app on
purpose), no content sniffing, no referrer to other sites."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from helpers_app import served

from ui.headers import SPACE_FRAME_ANCESTORS, SecurityHeaders, security_headers

EXPECTED = {
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def _tiny_app(headers):
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse, StreamingResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    async def page(request):
        return PlainTextResponse("hello")

    async def own(request):
        return PlainTextResponse("framed on purpose", headers={"X-Frame-Options": "SAMEORIGIN"})

    async def stream(request):
        async def chunks():
            yield b"data: 1\n\n"
            yield b"data: 2\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/", page), Route("/own", own), Route("/stream", stream)])
    return TestClient(SecurityHeaders(app, headers))


def test_every_response_carries_the_headers_and_streams_pass_through(monkeypatch):
    monkeypatch.delenv("FINETUNE_FRAME_ANCESTORS", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    client = _tiny_app(security_headers())
    for path in ("/", "/stream", "/missing"):
        response = client.get(path)
        assert {k: response.headers.get(k) for k in EXPECTED} == EXPECTED, path
    assert client.get("/stream").text == "data: 1\n\ndata: 2\n\n"
    assert client.get("/own").headers["x-frame-options"] == "SAMEORIGIN"  # a route's own choice stays


def test_a_host_that_embeds_the_app_on_purpose_turns_framing_on(monkeypatch):
    monkeypatch.delenv("FINETUNE_FRAME_ANCESTORS", raising=False)
    monkeypatch.setenv("SPACE_ID", "alice/finetune-studio")  # set by Hugging Face Spaces
    space = dict(security_headers())
    assert b"x-frame-options" not in space
    assert space[b"content-security-policy"] == f"frame-ancestors {SPACE_FRAME_ANCESTORS}".encode()
    assert space[b"x-content-type-options"] == b"nosniff"
    monkeypatch.setenv("FINETUNE_FRAME_ANCESTORS", "https://intranet.example.com")
    assert dict(security_headers())[b"content-security-policy"] == b"frame-ancestors https://intranet.example.com"
    monkeypatch.setenv("FINETUNE_FRAME_ANCESTORS", "*")
    assert b"content-security-policy" not in dict(security_headers())


@pytest.mark.slow
def test_the_served_app_sends_them_on_pages_api_files_and_errors(workspace, monkeypatch):
    monkeypatch.delenv("FINETUNE_FRAME_ANCESTORS", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    with served(workspace) as (_blocks, client, url):
        client.predict("", api_name="/run_status")  # the queue and event stream work through the middleware
        for path in ("", "config", "gradio_api/info", "gradio_api/file=/etc/passwd", "no-such-page"):
            try:
                response = urllib.request.urlopen(url + path, timeout=30)
                headers = response.headers
            except urllib.error.HTTPError as exc:  # 403 / 404: refused, with the headers all the same
                headers = exc.headers
            assert {k: headers.get(k) for k in EXPECTED} == EXPECTED, path

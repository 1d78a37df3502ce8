"""Every handler of the page funnels an exception it did not expect into one line plus where the details
were written; the Data tab's heavy reads share a pool, so one user's long upload queues no one else's."""

from __future__ import annotations

import inspect
import json
import threading

import gradio as gr
import pytest
from helpers_app import local_client, served

from finetune.errors import RunError
from ui.guard import GUARDED, guarded


@pytest.fixture
def error_log(tmp_path, monkeypatch):
    from finetune import incidents

    monkeypatch.setattr(incidents, "_workspace", tmp_path / "ws")
    return tmp_path / "ws" / "logs" / "errors.log"


def test_an_unexpected_error_becomes_one_line_naming_the_log(error_log):
    def handler(name, progress=gr.Progress()):
        raise TypeError("type str doesn't define __round__ method")

    wrapped = guarded(handler, "listing the runs")
    assert inspect.signature(wrapped) == inspect.signature(handler) and getattr(wrapped, GUARDED)
    with pytest.raises(gr.Error) as caught:
        wrapped("x")
    assert caught.value.message == (
        "Unexpected error: TypeError: type str doesn&#x27;t define __round__ method. This is a bug, not something "
        "you did; the details were written to logs/errors.log in the workspace."
    )
    assert "while listing the runs" in error_log.read_text() and "Traceback" in error_log.read_text()


def test_engine_errors_pass_as_their_own_message_escaped_and_gr_errors_untouched(error_log):
    def refused():
        raise RunError("no run named '<b>x</b>' in this workspace")

    with pytest.raises(gr.Error) as caught:
        guarded(refused, "x")()
    assert caught.value.message == "no run named &#x27;&lt;b&gt;x&lt;/b&gt;&#x27; in this workspace"
    own = gr.Error("shown as it is")

    def already():
        raise own

    with pytest.raises(gr.Error) as caught:
        guarded(already, "x")()
    assert caught.value is own and not error_log.exists()


def test_generators_and_coroutines_keep_their_kind(error_log):
    import asyncio

    def stream():
        yield "first"
        raise KeyError("gone")

    async def coroutine():
        raise ValueError("bad")

    wrapped = guarded(stream, "streaming")
    assert inspect.isgeneratorfunction(wrapped)
    results = wrapped()
    assert next(results) == "first"
    with pytest.raises(gr.Error, match="Unexpected error: KeyError: &#x27;gone&#x27;"):
        next(results)
    wrapped = guarded(coroutine, "awaiting")
    assert inspect.iscoroutinefunction(wrapped)
    with pytest.raises(gr.Error, match="Unexpected error: ValueError: bad"):
        asyncio.run(wrapped())


@pytest.mark.slow
def test_the_served_app_answers_a_bug_with_one_line_and_pools_data_reads(workspace, tmp_path, monkeypatch):
    from gradio_client import handle_file

    from finetune.studio.data import DataDesk
    from ui.pools import DATA_POOL

    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    slow, quick = tmp_path / "slow.jsonl", tmp_path / "quick.jsonl"
    for path in (slow, quick):
        path.write_text("\n".join(json.dumps(row) for _ in range(5)) + "\n")
    release, reading = threading.Event(), threading.Event()
    real_report = DataDesk.report

    def report(self, dataset_path, *args, **kwargs):
        if str(dataset_path).endswith("slow.jsonl"):  # one user's heavy upload: held until released
            reading.set()
            assert release.wait(300)
        return real_report(self, dataset_path, *args, **kwargs)

    monkeypatch.setattr(DataDesk, "report", report)
    with served(workspace) as (blocks, client, url):
        assert all(getattr(fn.fn, GUARDED, False) for fn in blocks.fns.values() if fn.fn is not None)
        pooled = [fn for fn in blocks.fns.values() if fn.api_name == "load_data_file"]
        assert pooled and all(fn.concurrency_id == DATA_POOL for fn in pooled)

        other = local_client(url)  # a second user
        held = client.submit(handle_file(str(slow)), "demo", 256, False, False, api_name="/load_data_file")
        try:
            assert reading.wait(300)
            # the other user's read must finish while the heavy one is still held (with one worker per
            # listener it would wait for it: then this times out, and the release below frees both)
            out = other.submit(handle_file(str(quick)), "demo", 256, False, False, api_name="/load_data_file")
            out = out.result(timeout=240)
            assert not held.done()
            assert any("5** of 5 rows usable" in str(value) for value in out)
        finally:
            release.set()
        assert any("5** of 5 rows usable" in str(value) for value in held.result(timeout=300))

        def broken(self, name):
            raise TypeError("an unforeseen bug")

        monkeypatch.setattr(type(blocks.finetune_ctx.studio), "progress", broken)
        from finetune.config import RunConfig
        from finetune.runs import create_run

        create_run(RunConfig(run_name="some-run"), workspace)
        with pytest.raises(Exception) as caught:
            client.predict("some-run", api_name="/run_status")
    text = str(caught.value)
    assert "Unexpected error: TypeError: an unforeseen bug" in text and "logs/errors.log in the workspace" in text
    assert str(workspace) not in text and "Traceback" not in text
    assert "an unforeseen bug" in (workspace / "logs" / "errors.log").read_text()

"""The Test tab's judging views through gradio_client against a launched app: blind A/B votes and
their tally (also after a restart), batch evaluation with filters, stop and downloads, the prompt
set x checkpoints grid, the word diff and the report.

One fake finished run (demo model, a random LoRA, checkpoint-5, four labelled validation rows) and
one served app are shared by the whole module to keep it quick."""

from __future__ import annotations

import csv
import json
import socket
import sys
import time
from pathlib import Path

import pytest
from helpers_app import local_client
from helpers_runs import make_run_with_data

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytestmark = pytest.mark.slow

FAST = ("", 0.0, 1.0, 6, 0)  # system prompt, temperature, top_p, max_new_tokens, seed
SENTIMENT = [
    ("I loved this film", "positive"),
    ("Terrible, a waste of time", "negative"),
    ("Great acting and story", "positive"),
    ("Boring and too long", "negative"),
]


def chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(workspace: Path):

    from ui import build_app
    from ui.launch import launch_kwargs

    blocks = build_app(workspace)
    _, url, _ = blocks.launch(prevent_thread_lock=True, **launch_kwargs(workspace, port=free_port(), quiet=True))
    return blocks, local_client(url, download_files=str(workspace / "client-downloads"))


@pytest.fixture(scope="module")
def served(tmp_path_factory, shared_cache):
    """(workspace, run, blocks, client) for the whole module."""
    from finetune.demo import demo_model_path
    from finetune.evaluation.compare import release_comparer

    ws = tmp_path_factory.mktemp("eval-ui-workspace")
    demo_model_path(shared_cache)
    (ws / "cache").symlink_to(shared_cache / "cache", target_is_directory=True)
    release_comparer()
    run = make_run_with_data(
        ws,
        [chat(f"train {i}", "positive") for i in range(4)],
        [chat(t, a) for t, a in SENTIMENT],
        checkpoints=(5,),
        run_name="judged",
    )
    blocks, client = serve(ws)
    yield ws, run, blocks, client
    blocks.close()
    release_comparer()


def rows_of(table) -> tuple[list[str], list[list]]:
    """(headers, rows) of a Dataframe output, also when it came as an update (with column widths)."""
    if table.get("__type__") == "update":
        table = table["value"]
    return table["headers"], table["data"]


def test_compare_shows_word_diff_and_token_counts(served):
    _, run, _, client = served
    base, tuned, note, stats, diff = client.predict(run.name, "Say hello.", *FAST, api_name="/compare")
    assert base.strip() and tuned.strip() and "Done" in note
    assert stats.count("tokens in") == 2 and "Fine-tuned" in stats
    assert "word-diff" in diff or "identical" in diff
    if base != tuned:
        assert "<ins" in diff or "<del" in diff


def test_blind_votes_tally_export_and_survive_a_restart(served):
    ws, run, _, client = served
    for choice in ("a", "tie"):
        # (the vote buttons' enabled state is not part of the API: the browser test checks it)
        a, b, note, reveal = client.predict(run.name, "What is 17 plus 4?", *FAST, api_name="/ab_new_pair")
        assert a.strip() and b.strip() and ("Vote" in note or "same" in note)
        assert reveal == ""  # nothing revealed before the vote
        reveal, tally_text, plot = client.predict(api_name=f"/ab_vote_{choice}")
        assert "Vote saved" in reveal and "base model" in reveal and "fine-tuned" in reveal
    assert "1 tie(s)" in tally_text and "2 vote(s) in all" in tally_text and plot  # the tally and its chart
    # voting again without a new pair is refused: nothing is counted twice
    client.predict(api_name="/ab_vote_b")
    assert "2 vote(s) in all" in client.predict(run.name, api_name="/ab_tally")
    votes = [json.loads(line) for line in (run.path / "votes.jsonl").read_text().splitlines()]
    assert [v["choice"] for v in votes] == ["a", "tie"] and votes[0]["winner"] in ("base", "finetuned")

    with open(client.predict(run.name, api_name="/export_votes_csv"), encoding="utf-8") as fh:
        assert [r["choice"] for r in csv.DictReader(fh)] == ["a", "tie"]
    jsonl = Path(client.predict(run.name, api_name="/export_votes_jsonl")).read_text().splitlines()
    assert len(jsonl) == 2

    drawn = client.predict(run.name, api_name="/ab_draw_prompt")  # a held-out prompt to judge next
    assert drawn in [t for t, _ in SENTIMENT]

    blocks2, client2 = serve(ws)  # a new app instance reads the votes from the run folder
    try:
        assert "2 vote(s) in all" in client2.predict(run.name, api_name="/ab_tally")
    finally:
        blocks2.close()


def test_batch_evaluation_table_metrics_filters_and_downloads(served):
    _, run, _, client = served
    msg, summary, chart, table, files = client.predict(run.name, None, 4, "all", *FAST, api_name="/evaluate")
    assert "Done: 4 rows" in msg, msg  # the whole validation split: 2 + 2 labels, so label metrics too
    assert "| accuracy |" in summary and "| macro F1 |" in summary and "| ROUGE-L |" in summary
    headers, data = rows_of(table)
    assert len(data) == 4 and chart
    for col in ("prompt", "reference", "base", "fine-tuned", "EM base", "EM ft", "F1 base", "ROUGE-L ft", "✓ ft"):
        assert col in headers
    assert data[0][headers.index("reference")] == "positive"
    assert sorted(Path(f).suffix for f in files) == [".csv", ".jsonl"]
    assert len(Path(next(f for f in files if f.endswith(".jsonl"))).read_text().splitlines()) == 4

    differ_table, differ_files = client.predict("differ", api_name="/filter_evaluation")
    n_differ = len(rows_of(differ_table)[1])
    assert all(Path(f).name.startswith("rows-differ") for f in differ_files)
    with open(differ_files[0], newline="", encoding="utf-8") as fh:  # answers may hold line breaks
        assert len(list(csv.reader(fh))) == n_differ + 1  # CSV header + rows
    assert len(rows_of(client.predict("worse", api_name="/filter_evaluation")[0])[1]) <= 4

    shown = client.predict(run.name, "all", api_name="/latest_evaluation")  # what choosing the run shows
    assert shown["summary"] == summary and rows_of(shown) == rows_of(table)
    assert Path(shown["folder"]).parent.name == "evaluations"
    assert len(client.predict(run.name, "worse", api_name="/latest_evaluation")["data"]) <= 4


def test_batch_evaluation_stops_and_keeps_finished_rows(served, tmp_path):
    from gradio_client import handle_file

    _, run, _, client = served
    data = tmp_path / "many.jsonl"
    data.write_text("".join(json.dumps(chat(f"Review number {i}: fine", "positive")) + "\n" for i in range(40)))
    job = client.submit(run.name, handle_file(str(data)), 40, "all", "", 0.0, 1.0, 24, 0, api_name="/evaluate")
    deadline = time.time() + 60
    while time.time() < deadline:
        progress = job.status().progress_data
        if progress and progress[0].index and progress[0].index >= 1:
            break
        time.sleep(0.1)
    assert "Stopping" in client.predict(api_name="/stop_evaluation")
    msg, summary, _, table, _ = job.result(timeout=120)
    assert "Stopped after" in msg and "stopped early" in summary
    assert 1 <= len(rows_of(table)[1]) < 40
    assert "Nothing to stop" in client.predict(api_name="/stop_evaluation")


def test_prompt_set_and_checkpoint_grid(served):
    ws, run, _, client = served
    msg, sets = client.predict("smoke", "Say hello.\nWhat is 2 plus 2?", api_name="/save_prompt_set")
    assert "Saved prompt set" in msg and (ws / "prompt_sets" / "smoke.json").is_file()
    text, name, msg = client.predict("smoke", api_name="/load_prompt_set")
    assert text.splitlines() == ["Say hello.", "What is 2 plus 2?"] and name == "smoke"

    msg, table = client.predict(run.name, text, *FAST, api_name="/run_grid")
    headers, data = rows_of(table)
    assert headers == ["prompt", "base", "checkpoint-5", "final"], msg
    assert len(data) == 2 and all(cell for row in data for cell in row)
    assert "2 prompt(s) × 3 models" in msg
    shown = client.predict(run.name, api_name="/latest_grid")
    assert rows_of(shown) == (headers, data) and "Last grid" in shown["note"]


def test_report_files(served):
    _, run, _, client = served
    html = Path(client.predict(run.name, api_name="/report_html"))
    assert html.suffix == ".html" and "<script" not in html.read_text()
    markdown = Path(client.predict(run.name, api_name="/report_markdown"))
    assert markdown.suffix == ".md" and markdown.read_text().startswith("#")


def test_refused_while_training_and_without_a_run(served, monkeypatch):
    from types import SimpleNamespace

    import finetune.train.registry

    ws, run, _, client = served
    busy = SimpleNamespace(run=SimpleNamespace(name="other-run"))
    monkeypatch.setattr(finetune.train.registry, "current_job", lambda: busy)
    note = client.predict(run.name, "Say hello.", *FAST, api_name="/ab_new_pair")[2]
    assert "other-run" in note and "is training" in note and "Traceback" not in note
    msg = client.predict(run.name, None, 3, "all", *FAST, api_name="/evaluate")[0]
    assert "is training" in msg
    msg = client.predict(run.name, "Say hello.", *FAST, api_name="/run_grid")[0]
    assert "is training" in msg
    monkeypatch.undo()
    msg = client.predict(None, None, 3, "all", *FAST, api_name="/evaluate")[0]
    assert "No run with a saved adapter" in msg
    outside = ws.parent / "elsewhere"  # a typed path to a run folder outside the workspace is refused
    outside.mkdir(exist_ok=True)
    (outside / "config.yaml").write_text((run.path / "config.yaml").read_text())
    assert client.predict(str(outside), api_name="/report_html") is None
    assert not (outside / "reports").exists()

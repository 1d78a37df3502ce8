"""The Test tab's views beyond the run's own rows, through gradio_client against a launched app: the two-pane
chat, benchmarks and the forgetting check, the checkpoint curve with export and "continue from", the prompt
grid's checkpoint choice, and blind votes turned into a DPO run whose preference accuracy on those pairs rises.

One served app for the module, over copies of the session's trained runs (`trained_sft_run`, and
`trained_curve_run` with four checkpoints)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers_app import call, free_port, local_client, plain, wait_done

pytestmark = pytest.mark.slow

FAST = ("", 0.0, 1.0, 24, 0)  # system prompt, temperature, top_p, max_new_tokens, seed
SFT, CURVE = "views-sft", "views-curve"


@pytest.fixture(scope="module")
def served(tmp_path_factory, shared_cache, trained_sft_run, trained_curve_run):
    """(workspace, blocks, client) with the two trained runs copied in under names of their own."""

    from finetune.demo import demo_model_path
    from finetune.evaluation.compare import release_comparer
    from ui import build_app
    from ui.launch import launch_kwargs

    ws = tmp_path_factory.mktemp("views-workspace")
    demo_model_path(shared_cache)
    (ws / "cache").symlink_to(shared_cache / "cache", target_is_directory=True)
    for run, name in ((trained_sft_run, SFT), (trained_curve_run, CURVE)):
        shutil.copytree(run.path, ws / "runs" / name, symlinks=True)
    release_comparer()
    blocks = build_app(ws)
    _, url, _ = blocks.launch(prevent_thread_lock=True, **launch_kwargs(ws, port=free_port(), quiet=True))
    client = local_client(url, download_files=str(ws / "client-downloads"))
    yield ws, blocks, client
    blocks.close()
    release_comparer()


def contents(pane: list) -> list[tuple[str, str]]:
    """(role, text) of a Chatbot value as gradio_client returns it."""
    out = []
    for message in pane:
        content = message["content"]
        text = "".join(part.get("text", "") for part in content) if isinstance(content, list) else str(content)
        out.append((message["role"], text))
    return out


def test_chat_sends_each_turn_to_both_panes_with_the_runs_system_prompt(served):
    _, _, client = served
    _, _, system_line, _ = client.predict(SFT, api_name="/chat_clear")
    assert "You are a concise assistant" in system_line  # the system turn the sample's rows carry
    for turn, text in enumerate(("What is 17 plus 4?", "Spell the word pencil backwards."), start=1):
        base, tuned, box, system_line, msg = client.predict(SFT, text, *FAST, api_name="/chat_send")
        assert f"Turn {turn}: both answered" in msg and box == ""
    base, tuned = contents(base), contents(tuned)
    assert [r for r, _ in base] == [r for r, _ in tuned] == ["user", "assistant"] * 2
    assert [t for r, t in base if r == "user"] == [t for r, t in tuned if r == "user"]
    assert base[1][1] != tuned[1][1] and tuned[1][1] == "17 plus 4 is 21."  # each keeps its own answers
    base, tuned, *_ = client.predict(SFT, api_name="/chat_clear")
    assert base == [] and tuned == []
    msg = client.predict(SFT, "   ", *FAST, api_name="/chat_send")[-1]
    assert "Type a message" in msg


def test_benchmark_table_and_forgetting_check(served):
    _, _, client = served
    msg, table, chart = client.predict(SFT, ["finetune_general"], None, 8, False, api_name="/benchmark")
    assert "Done:" in msg and chart
    assert table["headers"][:4] == ["task", "metric", "base (95%)", "fine-tuned (95%)"]
    rows = {row[1]: row for row in table["data"]}
    assert set(rows) == {"acc", "acc_norm"} and rows["acc"][0] == "finetune_general" and "±" in rows["acc"][2]
    verdict, msg, curated = client.predict(SFT, api_name="/forgetting_check")
    assert "Forgetting check" in msg and any(word in verdict for word in ("KEPT", "LOST", "GAINED"))
    assert "your task" in verdict or "no batch evaluation" in verdict
    times = {row[0]: row[3] for row in curated["data"]}
    assert "here" in times["arc_easy"] and "not measured" not in times["arc_easy"]  # measured by the check
    msg = client.predict(SFT, ["/etc/outside.yaml"], None, 5, False, api_name="/benchmark")[0]
    assert "benchmark task" in plain(msg) and "Traceback" not in msg  # a typed path outside the allowed places
    msg = client.predict(SFT, ["mmlu"], None, 5, False, api_name="/benchmark")[0]
    assert "need the Hugging Face Hub" in plain(msg) and "cais/mmlu" in plain(msg)


def test_checkpoint_curve_export_and_continue(served):
    ws, blocks, client = served
    msg, metric, plot, table, point = client.predict(CURVE, "batch", "", 2, *FAST, api_name="/checkpoint_curve")
    assert "Best by rouge" in plain(msg) and plot
    names = [row[0] for row in table["data"]]
    assert names[0] == "base" and len(names) == 6 and sum("★ best" in n for n in names) == 1
    best = point["value"]
    assert best in [c[1] for c in point["choices"]]
    step = best if best != "final" else "checkpoint-24"
    note, file = client.predict(CURVE, step, api_name="/export_checkpoint")
    assert "exported" in note and Path(file).name == f"{CURVE}-{step}-adapter.zip"
    note, start_from = client.predict(CURVE, step, api_name="/continue_from_checkpoint")
    assert start_from == f"{CURVE}@{step.split('-')[-1]}" and "starts from" in plain(note)
    msg, plot, table, point = client.predict(CURVE, "perplexity", api_name="/curve_metric")
    assert "Best by perplexity" in plain(msg)


def test_prompt_grid_offers_every_checkpoint(served):
    _, blocks, client = served
    msg, table = client.predict(CURVE, "Say hello.", *FAST, ["checkpoint-6", "checkpoint-18"], api_name="/run_grid")
    headers = (table.get("value") or table)["headers"]
    assert headers == ["prompt", "base", "checkpoint-6", "checkpoint-18", "final"], msg
    msg, table = client.predict(CURVE, "Say hello.", *FAST, [], api_name="/run_grid")
    assert len((table.get("value") or table)["headers"]) == 7  # prompt, base, the four checkpoints, final


def test_votes_cast_in_the_app_train_dpo_and_the_pairs_preference_accuracy_rises(served):
    from finetune.config import RunConfig
    from finetune.evaluation.preference import evaluate_preferences
    from ui.config_form import values_from_config

    ws, blocks, client = served
    prompts = ["What is 17 plus 4?", "Spell the word pencil backwards.", "What is the capital of Peru?",
               "Spell the word garden backwards.", "What is 12 plus 9?", "Name the capital of France."]  # fmt: skip
    for prompt in prompts:  # prefer the base's answer each time: what the SFT model does not prefer
        base, tuned, *_ = client.predict(SFT, prompt, *FAST, api_name="/compare")
        a, b, *_ = client.predict(SFT, prompt, *FAST, api_name="/ab_new_pair")
        assert {a, b} == {base, tuned}
        call(client, api_name="/ab_vote_a" if a == base else "/ab_vote_b")
    call(client, SFT, "One more.", *FAST, api_name="/ab_new_pair")
    call(client, api_name="/ab_vote_tie")  # a tie: left out, counted
    msg, pairs_file = client.predict([SFT], SFT, api_name="/votes_to_preference")
    assert "6 preference pair(s) from 7 vote(s) (6 preferring the base)" in plain(msg) and "1 tie(s)" in plain(msg)

    form = RunConfig(model_name_or_path="demo", lora_r=8, lora_alpha=16, learning_rate=5e-3, beta=0.1, max_steps=24,
                     per_device_train_batch_size=8, gradient_accumulation_steps=1, max_length=256, logging_steps=2,
                     eval_steps=0, save_steps=24, gradient_checkpointing=False)  # fmt: skip
    result = client.predict([SFT], SFT, *values_from_config(form), api_name="/train_dpo_from_votes")
    assert "Started DPO run" in plain(result[0]), result[0]
    status = wait_done(client, timeout=600)
    assert status["state"] == "done", status
    dpo = ws / "runs" / status["run"]
    config = (dpo / "config.yaml").read_text()
    assert "objective: dpo" in config and f"start_from_run: {SFT}" in config and "votes-" in config
    before = evaluate_preferences(ws / "runs" / SFT, pairs_file, save=False).summary["finetuned"]
    after = evaluate_preferences(dpo, pairs_file, save=False).summary["finetuned"]
    assert after["preference_accuracy"] > before["preference_accuracy"], (before, after)
    assert after["mean_margin"] > before["mean_margin"]

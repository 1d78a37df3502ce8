"""Export: what we save must load with plain libraries and behave like base + adapter."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch
import yaml
from helpers_runs import encode, load_plain_base, make_run, plain_generate

from finetune.errors import ConfigError, RunError
from finetune.export.merge import (
    HubError,
    check_repo_id,
    merge_adapter,
    model_card,
    push_to_hub,
    saved_dtype,
    zip_adapter,
)

SECRET = "hf_TopSecretToken1234567890"


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


# model card -------------------------------------------------------------------
def test_model_card_front_matter_and_body(workspace):
    run = make_run(workspace, model="Qwen/Qwen2.5-0.5B-Instruct", quantization="4bit", with_adapter=False)
    card = model_card(run)
    meta = _front_matter(card)
    assert meta["base_model"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert meta["library_name"] == "peft"
    assert {"finetune-studio", "qlora", "lora"} <= set(meta["tags"])
    assert meta["pipeline_tag"] == "text-generation"
    assert "| lora_r | 16 |" in card and "| learning_rate | 0.0002 |" in card
    assert "final loss | 2.2500" in card and "final eval_loss | 2.3750" in card
    assert "train_rows | 9" in card
    assert "/home/alice" not in card  # local paths are reduced to file names
    assert "PeftModel.from_pretrained" in card
    merged = _front_matter(model_card(run, merged=True))
    assert merged["library_name"] == "transformers" and "merged" in merged["tags"]


def test_model_card_for_the_demo_names_no_hub_base(workspace):
    run = make_run(workspace, with_adapter=False)
    card = model_card(run)
    assert "base_model" not in _front_matter(card)  # the Hub rejects ids that do not exist
    assert "demo model" in card


def test_model_card_of_a_preference_run_names_its_trainer_and_rewards(workspace):
    from finetune.config import RunConfig

    run = make_run(workspace, with_adapter=False)
    RunConfig(objective="dpo", beta=0.2, start_from_run="sft-run").to_yaml(run.config_path)
    run.append_metrics({"step": 3, "loss": 0.4, "rewards/accuracies": 0.875})
    card = model_card(run)
    assert "dpo" in _front_matter(card)["tags"] and "sft" not in _front_matter(card)["tags"]
    assert "TRL DPOTrainer + PEFT" in card
    assert (
        "| objective | dpo |" in card
        and "| beta | 0.2 |" in card
        and "| started from the adapter of | sft-run |" in card
    )
    assert "final rewards/accuracies | 0.8750 (step 3)" in card


# zip --------------------------------------------------------------------------
@pytest.mark.slow
def test_zip_holds_a_loadable_adapter(workspace, tmp_path):
    from peft import PeftModel

    run = make_run(workspace)
    path = zip_adapter(run)
    assert path == run.path / "exports" / f"{run.name}-adapter.zip"
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "unzipped")
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer.json"} <= names
    assert (run.adapter_dir / "README.md").read_text().startswith("---\n")

    base, tokenizer = load_plain_base(workspace)
    before = plain_generate(base, tokenizer)
    loaded = PeftModel.from_pretrained(base, str(tmp_path / "unzipped")).eval()
    assert plain_generate(loaded, tokenizer) != before  # the saved adapter loads and changes outputs


def test_zip_of_a_run_without_adapter_is_refused(workspace):
    with pytest.raises(RunError, match="no saved adapter yet"):
        zip_adapter(make_run(workspace, with_adapter=False))


# merge ------------------------------------------------------------------------
def _logits(model, tokenizer):
    with torch.no_grad():
        return model(**encode(tokenizer)).logits.float()


@pytest.mark.slow
@pytest.mark.parametrize("quantization", ["none", "4bit"])
def test_merged_model_matches_base_plus_adapter(workspace, quantization):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = make_run(workspace, quantization=quantization)
    calls = []
    out = merge_adapter(run, progress=lambda fraction, message: calls.append((fraction, message)))
    assert out == run.path / "exports" / "merged"
    assert [f for f, _ in calls] == sorted(f for f, _ in calls) and calls[-1][0] == 1.0
    assert len(calls) >= 5

    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config  # merged into 16/32-bit weights, never 4-bit
    assert saved_dtype(out) == "float32"  # the demo is stored in float32 and merged on CPU: said as it is
    assert list(out.glob("*.safetensors")) and (out / "generation_config.json").is_file()
    assert _front_matter((out / "README.md").read_text())["library_name"] == "transformers"

    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    # reference: the 16-bit (here float32) base + adapter, since merging starts from it
    base, tokenizer = load_plain_base(workspace)
    reference = PeftModel.from_pretrained(base, str(run.adapter_dir)).eval()
    torch.testing.assert_close(_logits(merged, tokenizer), _logits(reference, tokenizer), atol=1e-4, rtol=1e-4)
    assert plain_generate(merged, tokenizer) == plain_generate(reference, tokenizer)


@pytest.mark.slow
def test_merge_replaces_its_own_output_but_never_user_data(workspace, tmp_path):
    run = make_run(workspace)
    out = merge_adapter(run, tmp_path / "merged")
    merge_adapter(run, out)  # an earlier merge of this run may be replaced
    assert (out / "config.json").is_file()

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(RunError, match="not empty"):
        merge_adapter(run, precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in precious.iterdir()) == ["notes.txt"]

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(RunError, match="cannot write"):
        merge_adapter(run, blocker / "merged")
    with pytest.raises(RunError, match="is a file"):
        merge_adapter(run, blocker)


@pytest.mark.slow
def test_merge_of_a_full_run_copies_the_model(workspace):
    from transformers import AutoModelForCausalLM

    run = make_run(workspace, method="full")
    out = merge_adapter(run)
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    saved = AutoModelForCausalLM.from_pretrained(run.adapter_dir).eval()
    _, tokenizer = load_plain_base(workspace)
    torch.testing.assert_close(_logits(merged, tokenizer), _logits(saved, tokenizer))


# hub --------------------------------------------------------------------------
@pytest.mark.parametrize("repo_id", ["", "name-only", "a/b/c", "me/../x", "me/bad name", "me/x.git", "/x", "me/a--b"])
def test_bad_repo_ids_are_refused(repo_id):
    with pytest.raises(ConfigError, match="owner/name"):
        check_repo_id(repo_id)


def test_good_repo_id_passes():
    assert check_repo_id(" alice/my-adapter_v1.0 ") == "alice/my-adapter_v1.0"


def _fake_adapter_folder(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    return folder


def test_push_offline_is_a_clear_error_without_the_token(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="offline") as info:
        push_to_hub(_fake_adapter_folder(tmp_path), "alice/my-adapter", token=SECRET)
    assert SECRET not in str(info.value)


def test_push_failure_never_shows_the_token(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    class FailingApi:
        def __init__(self, token=None):
            self.token = token

        def create_repo(self, *args, **kwargs):
            raise OSError(f"401 Unauthorized: invalid token {self.token}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "HfApi", FailingApi)
    with pytest.raises(HubError, match="401") as info:
        push_to_hub(_fake_adapter_folder(tmp_path), "alice/my-adapter", token=SECRET)
    assert SECRET not in str(info.value) and "***" in str(info.value)
    assert not any(SECRET in p.read_text(errors="ignore") for p in tmp_path.rglob("*") if p.is_file())


def test_push_without_token_or_model_is_refused(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(HubError, match="no Hugging Face token"):
        push_to_hub(_fake_adapter_folder(tmp_path), "alice/my-adapter")
    with pytest.raises(RunError, match="no adapter or model"):
        push_to_hub(tmp_path / "missing", "alice/my-adapter", token=SECRET)


@pytest.mark.slow
def test_merged_export_is_ready_for_other_servers(workspace, tmp_path):
    """Plain Jinja (llama.cpp, Ollama converters) must parse the exported chat template, and a
    server running as another user must read the weights."""
    import jinja2

    run = make_run(workspace, quantization="none")
    out = merge_adapter(run, tmp_path / "merged")
    template = (out / "chat_template.jinja").read_text()
    assert "{% generation %}" not in template and "endgeneration" not in template
    jinja2.Environment().from_string(template)
    for file in out.iterdir():
        if file.is_file():
            assert file.stat().st_mode & 0o044 == 0o044, file.name


# damaged files and leftovers (issue 22) ------------------------------------------------------------------
def _cut(path, drop: int = 100) -> int:
    """The file cut short by `drop` bytes (a copy or a disk that filled up mid-write); returns its new size."""
    data = path.read_bytes()
    path.write_bytes(data[:-drop])
    return len(data) - drop


def test_a_cut_adapter_is_named_never_zipped_merged_or_compared(workspace):
    from finetune.evaluation.compare import resolve_adapter_path
    from finetune.runs import list_runs

    run = make_run(workspace, run_name="cut")
    size = _cut(run.adapter_dir / "adapter_model.safetensors")
    named = f"adapter/adapter_model.safetensors: is cut short ({size:,} of {size + 100:,} bytes)"
    for action in (lambda: zip_adapter(run), lambda: merge_adapter(run), lambda: resolve_adapter_path(run, None)):
        with pytest.raises(RunError, match="has a damaged adapter") as caught:
            action()
        assert named in str(caught.value)
    assert not (run.path / "exports" / "cut-adapter.zip").exists()
    (summary,) = list_runs(workspace)
    assert summary.damaged[0].startswith(named)
    (run.adapter_dir / "adapter_config.json").write_text('{"r": 8,')
    with pytest.raises(RunError, match=r"adapter/adapter_config.json: is not valid JSON"):
        zip_adapter(run)


def test_a_run_with_a_damaged_config_still_exports_its_adapter(workspace):
    run = make_run(workspace, run_name="no-config")
    run.config_path.write_text("model_name_or_path: [unclosed\n")
    out = zip_adapter(run)
    with zipfile.ZipFile(out) as archive:
        assert "adapter_model.safetensors" in archive.namelist()


def test_a_merge_killed_earlier_leaves_nothing_behind_after_the_next_export(workspace):
    import os
    import time

    from finetune.export.merge import clean_stale_staging
    from finetune.runs import this_host

    run = make_run(workspace, run_name="leftovers")
    exports = run.path / "exports"
    exports.mkdir()
    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    old_style = exports / f".merged.merging-{dead}"  # as merges before this fix named it
    this_hosts = exports / f".merged.merging-{this_host()}-{dead}"
    replaced = exports / f".merged.old-{this_host()}-{dead}"
    mine = exports / f".merged.merging-{this_host()}-{os.getpid()}"  # a merge running right now, here
    other_host = exports / f".merged.merging-node-b-{dead}"  # another host's merge: its pid means nothing here
    abandoned = exports / f".merged.merging-node-c-{dead}"
    for folder in (old_style, this_hosts, replaced, mine, other_host, abandoned):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x" * 1000)
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(abandoned, (day_ago, day_ago))
    zip_adapter(run)  # the next export cleans up
    assert sorted(p.name for p in exports.iterdir() if p.name.startswith(".")) == sorted([mine.name, other_host.name])
    assert clean_stale_staging(exports) == []


def test_the_model_card_follows_a_run_written_by_another_process(workspace):
    """The Studio keeps a run it opened; when another process (a CLI resume) trains it further, the card
    shows the new final numbers, not the ones read first."""
    from finetune.runs import Run
    from finetune.studio import Studio

    run = make_run(workspace, run_name="resumed-elsewhere")
    run.write_status("stopped", "Stopped at step 2", step=2, total_steps=4)
    studio = Studio(workspace)
    card = studio.export.model_card("resumed-elsewhere")
    assert "final loss | 2.2500 (step 2)" in card and "| state | stopped |" in card
    elsewhere = Run(run.path)  # the other process's own view of the folder
    elsewhere.append_metrics({"step": 3, "loss": 1.5})
    elsewhere.append_metrics({"step": 4, "loss": 0.0532})
    elsewhere.write_status("done", "Finished 4 steps", step=4, total_steps=4)
    card = studio.export.model_card("resumed-elsewhere")
    assert "final loss | 0.0532 (step 4)" in card and "| state | done |" in card and "| steps | 4 |" in card

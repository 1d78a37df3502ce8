"""Tokenized-data cache: a second run skips tokenization and trains on exactly TRL's tensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from finetune.config import RunConfig
from finetune.data import prepare_data
from finetune.models import load_model, load_tokenizer
from finetune.train import datacache
from finetune.train.sft import build_sft_config, build_trainer, choose_loss_mode

PROMPT_COMPLETION = str(Path(__file__).resolve().parents[2] / "finetune/samples/sample_prompt_completion.csv")


@pytest.fixture
def ws(workspace, demo_path, tmp_path):
    """A workspace with a cache of its own (the demo model linked in), so entries never leak between tests."""
    own = tmp_path / "own-workspace"
    (own / "cache").mkdir(parents=True)
    (own / "cache" / demo_path.name).symlink_to(demo_path, target_is_directory=True)
    return own


def setup(ws, demo_path, **changes):
    cfg = RunConfig(model_name_or_path="demo", max_length=128, val_split=0.1, eval_steps=5, **changes)
    tokenizer = load_tokenizer(cfg, ws, path=str(demo_path))
    data = prepare_data(cfg, tokenizer)
    loss_mode, train = choose_loss_mode(data.train_rows, tokenizer, cfg.train_on_prompt)
    _, evaluation = choose_loss_mode(data.eval_rows, tokenizer, cfg.train_on_prompt)
    return cfg, tokenizer, loss_mode, train, evaluation


def trainer_for(ws, demo_path, tmp_path, cfg, tokenizer, loss_mode, train, evaluation, use_cache, notes=None):
    from finetune.plan.hardware import Machine
    from finetune.plan.planner import make_plan

    plan = make_plan(cfg, Machine.virtual("cpu"), model=str(demo_path))
    model = load_model(cfg, ws, plan=plan, path=str(demo_path))
    return build_trainer(
        cfg,
        plan,
        model=model,
        tokenizer=tokenizer,
        train_rows=train,
        eval_rows=evaluation,
        loss_mode=loss_mode,
        output_dir=str(tmp_path / "out"),
        workspace=ws,
        use_cache=use_cache,
        log=(notes.append if notes is not None else None),
    )


def assert_same_tensors(reference, cached):
    for name in ("train_dataset", "eval_dataset"):
        ref, got = getattr(reference, name), getattr(cached, name)
        cols = [c for c in datacache.KEEP_COLUMNS if c in ref.column_names]
        assert cols[:2] == ["input_ids", "labels"]
        assert [c for c in datacache.KEEP_COLUMNS if c in got.column_names] == cols
        for col in cols:
            assert ref[col] == got[col], (name, col)
        rows = list(range(min(4, len(ref))))
        a = reference.data_collator([ref[i] for i in rows])
        b = cached.data_collator([got[i] for i in rows])
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key], key


@pytest.mark.parametrize(
    "changes",
    [
        {},  # conversations, assistant-only loss
        {"dataset_path": PROMPT_COMPLETION},  # prompt-completion, completion-only loss
        {"packing": True},  # packed (bfd, padding-free): seq_lengths kept
        {"train_on_prompt": True},  # full-sequence loss
    ],
    ids=["assistant_only", "completion_only", "packed", "full_sequence"],
)
def test_second_run_hits_the_cache_with_the_same_tensors_as_trl(ws, demo_path, tmp_path, changes):
    cfg, tok, mode, train, evaluation = setup(ws, demo_path, **changes)
    reference = trainer_for(ws, demo_path, tmp_path, cfg, tok, mode, train, evaluation, use_cache=False)
    first_notes, second_notes = [], []
    first = trainer_for(ws, demo_path, tmp_path, cfg, tok, mode, train, evaluation, True, first_notes)
    second = trainer_for(ws, demo_path, tmp_path, cfg, tok, mode, train, evaluation, True, second_notes)
    assert any("cached" in n for n in first_notes) and not any("from the cache" in n for n in first_notes)
    assert any("from the cache" in n for n in second_notes)
    assert second.args.dataset_kwargs == {"skip_prepare_dataset": True}
    assert_same_tensors(reference, first)
    assert_same_tensors(reference, second)
    if changes.get("packing"):
        assert "seq_lengths" in second.train_dataset.column_names
        assert "position_ids" in second.data_collator([second.train_dataset[0]])


def test_cached_run_trains(ws, demo_path, tmp_path):
    cfg, tok, mode, train, evaluation = setup(ws, demo_path, max_steps=2, logging_steps=1)
    trainer_for(ws, demo_path, tmp_path, cfg, tok, mode, train, evaluation, True)
    cached = trainer_for(ws, demo_path, tmp_path, cfg, tok, mode, train, evaluation, True)
    assert cached.args.dataset_kwargs == {"skip_prepare_dataset": True}
    cached.train()
    assert cached.state.global_step == 2 and any("loss" in h for h in cached.state.log_history)


def key_for(cfg, tokenizer, loss_mode, train, evaluation, tmp_path):
    from finetune.plan.hardware import Machine
    from finetune.plan.planner import make_plan

    plan = make_plan(cfg, Machine.virtual("cpu"))
    args = build_sft_config(cfg, plan, str(tmp_path), has_eval=bool(evaluation), loss_mode=loss_mode)
    return datacache.cache_key(train, evaluation, tokenizer, args)


def test_key_changes_with_tokenizer_max_length_rows_and_packing(ws, demo_path, tmp_path):
    cfg, tok, mode, train, evaluation = setup(ws, demo_path)
    key = key_for(cfg, tok, mode, train, evaluation, tmp_path)
    assert key == key_for(cfg, tok, mode, train, evaluation, tmp_path)  # stable
    assert key != key_for(cfg.replace(max_length=256), tok, mode, train, evaluation, tmp_path)
    assert key != key_for(cfg.replace(packing=True), tok, mode, train, evaluation, tmp_path)
    assert key != key_for(cfg, tok, "completion_only", train, evaluation, tmp_path)
    assert key != key_for(cfg, tok, mode, train[:-1], evaluation, tmp_path)
    assert key != key_for(cfg, tok, mode, train, evaluation[:-1], tmp_path)
    other = load_tokenizer(cfg, ws, path=str(demo_path))
    assert key == key_for(cfg, other, mode, train, evaluation, tmp_path)  # same files, same key
    other.chat_template = other.chat_template.replace("<|im_start|>", "<|im_start|> ")
    assert key != key_for(cfg, other, mode, train, evaluation, tmp_path)
    added = load_tokenizer(cfg, ws, path=str(demo_path))
    added.add_tokens(["<new_token>"])
    assert key != key_for(cfg, added, mode, train, evaluation, tmp_path)


def test_changed_max_length_is_a_miss(ws, demo_path, tmp_path):
    cfg, tok, mode, train, evaluation = setup(ws, demo_path)
    trainer_for(ws, demo_path, tmp_path, cfg, tok, mode, train, evaluation, True)
    notes: list[str] = []
    longer = cfg.replace(max_length=64)
    short = trainer_for(ws, demo_path, tmp_path, longer, tok, mode, train, evaluation, True, notes)
    assert not any("from the cache" in n for n in notes)
    assert max(len(ids) for ids in short.train_dataset["input_ids"]) <= 64


def test_broken_entry_is_a_miss_and_old_entries_are_pruned(ws, demo_path, tmp_path):
    cfg, tok, mode, train, evaluation = setup(ws, demo_path)
    trainer_for(ws, demo_path, tmp_path, cfg, tok, mode, train, evaluation, True)
    key = key_for(cfg, tok, mode, train, evaluation, tmp_path)
    folder = datacache.entry_dir(key, ws)
    assert datacache.load(key, ws) is not None
    for arrow in (folder / "train").glob("*.arrow"):
        arrow.write_bytes(b"not arrow")
    assert datacache.load(key, ws) is None and not folder.exists()
    root = datacache.cache_root(ws)
    for i in range(3):
        (root / f"old{i}").mkdir(parents=True)
        (root / f"old{i}" / "meta.json").write_text("{}")
    removed = datacache.prune(ws, keep=1)
    assert len(removed) >= 2 and len([p for p in root.iterdir() if (p / "meta.json").exists()]) == 1

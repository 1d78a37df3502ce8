"""Compare: the base answer must come from the plain base, the adapter must change it,
streaming must match, and the cache must hold one model at most."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest
from helpers_runs import PROMPT, load_plain_base, make_run, plain_generate

from finetune.errors import ConfigError, RunError
from finetune.evaluation.compare import (
    Comparer,
    GenerationSettings,
    cached_comparer,
    get_comparer,
    release_comparer,
)

GREEDY = GenerationSettings(max_new_tokens=16)


@pytest.fixture(autouse=True)
def _no_cached_model():
    release_comparer()
    yield
    release_comparer()


def test_settings_defaults_are_valid_and_greedy():
    settings = GenerationSettings()
    assert settings.validate() == []
    assert settings.greedy
    kwargs = settings.generate_kwargs()
    assert kwargs["do_sample"] is False and kwargs["temperature"] is None


def test_settings_report_every_problem():
    bad = GenerationSettings(temperature=-1, top_p=0, max_new_tokens=0, seed=-3, repetition_penalty=0)
    problems = bad.validate()
    assert len(problems) == 5
    assert any(p.startswith("temperature") for p in problems)
    with pytest.raises(ConfigError, match="top_p"):
        bad.check()


def test_sampling_settings_pass_temperature_and_top_p():
    kwargs = GenerationSettings(temperature=0.7, top_p=0.9).generate_kwargs()
    assert kwargs["do_sample"] is True and kwargs["temperature"] == 0.7 and kwargs["top_p"] == 0.9


def test_run_without_adapter_is_a_clear_error(workspace):
    run = make_run(workspace, with_adapter=False)
    with pytest.raises(RunError, match="no saved adapter yet"):
        Comparer(run)
    with pytest.raises(RunError, match="wait for it to finish, or stop it"):
        get_comparer(run)


@pytest.mark.slow
def test_base_is_the_plain_base_and_adapter_changes_the_answer(workspace):
    from peft import PeftModel

    run = make_run(workspace)
    comparer = Comparer(run)
    result = comparer.compare(PROMPT, GREEDY)

    base_model, tokenizer = load_plain_base(workspace)
    expected_base = plain_generate(base_model, tokenizer)
    tuned = PeftModel.from_pretrained(base_model, str(run.adapter_dir)).eval()
    expected_tuned = plain_generate(tuned, tokenizer)

    assert result.base == expected_base  # not generated with the LoRA still active
    assert result.finetuned == expected_tuned
    assert result.base != result.finetuned
    assert result.base_tokens > 0 and result.finetuned_tokens > 0
    assert result.base_seconds >= 0 and result.finetuned_seconds >= 0
    # toggling leaves no trace: a second round gives the same answers
    again = comparer.compare(PROMPT, GREEDY)
    assert (again.base, again.finetuned) == (result.base, result.finetuned)
    assert PROMPT not in result.base and "user" not in result.base  # only generated tokens are decoded


@pytest.mark.slow
def test_4bit_run_compares_against_the_4bit_base(workspace):
    run = make_run(workspace, quantization="4bit")
    comparer = Comparer(run)
    result = comparer.compare(PROMPT, GREEDY)
    assert "4bit" in type(next(m for m in comparer.model.modules() if "Linear4bit" in type(m).__name__)).__name__
    base_model, tokenizer = load_plain_base(workspace, quantization="4bit")
    assert result.base == plain_generate(base_model, tokenizer)
    assert result.base != result.finetuned


@pytest.mark.slow
def test_stream_ends_with_the_non_streaming_text(workspace):
    comparer = Comparer(make_run(workspace))
    for use_adapter in (False, True):
        pieces = list(comparer.stream(PROMPT, use_adapter, GREEDY))
        assert pieces, "the stream yielded nothing"
        assert all(b.startswith(a) for a, b in zip(pieces, pieces[1:]))  # growing text
        whole = comparer.generate(PROMPT, use_adapter, GREEDY)
        assert pieces[-1] == whole.text
        # the generated-token count, not the answer re-tokenized (which can exceed max_new_tokens)
        assert pieces[-1].tokens == whole.tokens <= GREEDY.max_new_tokens
        assert all(p.tokens is None for p in pieces[:-1])


@pytest.mark.slow
def test_closing_a_stream_early_frees_the_model(workspace):
    comparer = Comparer(make_run(workspace))
    stream = comparer.stream(PROMPT, False, GenerationSettings(max_new_tokens=64))
    next(stream)
    stream.close()
    done = []
    worker = threading.Thread(target=lambda: done.append(comparer.generate(PROMPT, True, GREEDY)))
    worker.start()
    worker.join(timeout=30)
    assert done, "the lock was not released after the stream was closed"


@pytest.mark.slow
def test_same_seed_gives_same_sample(workspace):
    comparer = Comparer(make_run(workspace))
    sampling = GenerationSettings(temperature=1.0, top_p=0.95, max_new_tokens=16, seed=7)
    first = comparer.compare(PROMPT, sampling)
    second = comparer.compare(PROMPT, sampling)
    assert (first.base, first.finetuned) == (second.base, second.finetuned)


@pytest.mark.slow
def test_bad_prompt_and_settings_are_clear_errors(workspace):
    comparer = Comparer(make_run(workspace))
    with pytest.raises(RunError, match="prompt is empty"):
        comparer.generate("   ", True, GREEDY)
    with pytest.raises(RunError, match="prompt is empty"):
        comparer.stream("", False, GREEDY)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        comparer.compare(PROMPT, GenerationSettings(max_new_tokens=0))


@pytest.mark.slow
def test_checkpoints_switch_without_reloading_the_base(workspace):
    from peft import PeftModel

    run = make_run(workspace, checkpoints=(2,))
    comparer = Comparer(run, adapter_path="checkpoints/checkpoint-2")
    model = comparer.model
    at_checkpoint = comparer.generate(PROMPT, True, GREEDY).text

    base_model, tokenizer = load_plain_base(workspace)
    reference = PeftModel.from_pretrained(base_model, str(run.checkpoints_dir / "checkpoint-2")).eval()
    assert at_checkpoint == plain_generate(reference, tokenizer)

    assert comparer.load_adapter(run.adapter_dir) == "final"
    assert comparer.model is model  # same base, adapter attached beside the first
    final = comparer.generate(PROMPT, True, GREEDY).text
    assert final != at_checkpoint
    assert sorted(comparer.adapters) == ["checkpoint_2", "final"]
    assert comparer.generate(PROMPT, True, GREEDY, adapter="checkpoint_2").text == at_checkpoint
    with pytest.raises(RunError, match="not inside the run"):
        comparer.load_adapter(workspace)


@pytest.mark.slow
def test_a_re_saved_adapter_is_reloaded(workspace):
    import torch
    from helpers_runs import save_random_adapter

    run = make_run(workspace)
    comparer = get_comparer(run)
    before = comparer.generate(PROMPT, True, GREEDY).text
    save_random_adapter(workspace, run.adapter_dir, seed=5)  # e.g. a resumed run saved again
    assert get_comparer(run) is comparer
    after = comparer.generate(PROMPT, True, GREEDY).text
    assert after != before and comparer.adapters == ["final"]
    state = torch.random.get_rng_state()
    comparer.generate(PROMPT, True, GenerationSettings(temperature=1.0, max_new_tokens=4, seed=3))
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is left as it was


@pytest.mark.slow
def test_full_runs_compare_two_models(workspace):
    run = make_run(workspace, method="full")
    comparer = Comparer(run)
    assert comparer.model is None  # loaded lazily
    result = comparer.compare(PROMPT, GREEDY)
    base_model, tokenizer = load_plain_base(workspace)
    assert result.base == plain_generate(base_model, tokenizer)
    assert result.base != result.finetuned


@pytest.mark.slow
def test_cache_holds_one_model(workspace):
    first_run = make_run(workspace, run_name="first")
    second_run = make_run(workspace, run_name="second", seed=1)
    first = get_comparer(first_run)
    assert get_comparer(first_run.path) is first  # same run: reused
    first_model = weakref.ref(first.model)

    second = get_comparer(second_run)
    gc.collect()
    assert first_model() is None, "the previous run's model is still in memory"
    assert cached_comparer() is second and second is not first
    with pytest.raises(RunError, match="closed"):
        first.generate(PROMPT, True, GREEDY)

    second_model = weakref.ref(second.model)
    release_comparer()
    gc.collect()
    assert cached_comparer() is None and second_model() is None


def test_releasing_collects_garbage_only_when_a_model_was_cached(workspace, monkeypatch):
    """Every Start frees the comparison model first: with none cached it must not run a full garbage
    collection, which takes seconds in a large process (the CLI in the hostile-corpus test spent most of its
    time there)."""
    collections = []
    monkeypatch.setattr(gc, "collect", lambda *args: collections.append(args) or 0)
    release_comparer()
    assert collections == []
    get_comparer(make_run(workspace, run_name="cached"))
    release_comparer()
    assert len(collections) == 1 and cached_comparer() is None

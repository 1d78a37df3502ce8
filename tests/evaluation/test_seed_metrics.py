"""The tutorial's metrics beside ours (finetune/evaluation/seed_metrics.py): corpus BLEU through sacreBLEU,
validation perplexity of base and fine-tuned checked against plain transformers, and the notes on where
each misleads."""

from __future__ import annotations

import math

import pytest

from finetune.evaluation.seed_metrics import BLEU_NOTE, bleu_note, corpus_bleu


def test_bleu_is_sacrebleus_corpus_score_on_the_zero_to_one_scale():
    import sacrebleu

    answers = ["the cat sat on the mat today", "a quick brown fox jumps"]
    refs = ["the cat sat on the mat", "the quick brown fox jumps high"]
    assert corpus_bleu(answers, refs) == pytest.approx(sacrebleu.corpus_bleu(answers, [refs]).score / 100)
    assert corpus_bleu(refs, refs) == pytest.approx(1.0) and corpus_bleu([], []) is None


def test_bleu_says_it_misleads_on_short_answers():
    assert bleu_note(["Lima", "Paris", "two words"]) == BLEU_NOTE.format(words="1")
    assert corpus_bleu(["Lima"], ["Lima"]) < 0.5  # a right one-word answer still scores low
    assert bleu_note(["the capital of Peru is Lima", "it is Paris in France"]) is None


@pytest.mark.slow
def test_perplexity_is_exp_of_the_mean_answer_token_nll_as_plain_transformers_computes_it(
    trained_sft_run, copy_run, workspace
):
    import torch
    from peft import PeftModel

    from finetune.evaluation.compare import get_comparer, release_comparer
    from finetune.evaluation.examples import examples_from_rows, load_eval_rows
    from finetune.evaluation.seed_metrics import perplexities
    from tests.helpers_runs import load_plain_base

    run = copy_run(trained_sft_run)
    rows, _, _ = load_eval_rows(run)
    examples, _ = examples_from_rows(rows, 2)
    ours = perplexities(get_comparer(run), examples, "final", run.config().max_length)
    release_comparer()

    base, tokenizer = load_plain_base(workspace, "4bit")
    tokenizer.chat_template = get_comparer_template(run)

    def plain(model) -> float:
        nll, count = 0.0, 0
        for example in examples:
            prompt = tokenizer.apply_chat_template(example.prompt_input, add_generation_prompt=True, tokenize=True,
                                                   return_dict=True)["input_ids"]  # fmt: skip
            full = tokenizer.apply_chat_template(
                [*example.prompt_input, {"role": "assistant", "content": example.reference}],
                tokenize=True,
                return_dict=True,
            )["input_ids"]
            assert full[: len(prompt)] == prompt
            ids = torch.tensor([full])
            with torch.no_grad():
                logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
            targets = ids[0, 1:]
            token_logps = logps.gather(1, targets[:, None])[:, 0][len(prompt) - 1 :]
            nll -= float(token_logps.sum())
            count += len(full) - len(prompt)
        return math.exp(nll / count)

    assert ours["base"]["perplexity"] == pytest.approx(plain(base), rel=1e-3)
    tuned = PeftModel.from_pretrained(base, str(run.adapter_dir)).eval()
    assert ours["finetuned"]["perplexity"] == pytest.approx(plain(tuned), rel=1e-3)  # float noise of the 4-bit kernels
    assert ours["finetuned"]["perplexity"] < ours["base"]["perplexity"]  # it learned these answers


def get_comparer_template(run) -> str:
    """The chat template saved with the run's adapter (what the Comparer encodes with)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(run.adapter_dir)).chat_template


@pytest.mark.slow
def test_batch_evaluation_reports_bleu_and_perplexity_with_their_notes(trained_sft_run, copy_run):
    from finetune.evaluation.batch import evaluate
    from finetune.evaluation.compare import GenerationSettings
    from finetune.evaluation.seed_metrics import PERPLEXITY_NOTE

    run = copy_run(trained_sft_run)
    summary = evaluate(run, limit=3, settings=GenerationSettings(max_new_tokens=24)).summary
    for side in ("base", "finetuned"):
        assert 0 <= summary[side]["bleu"] <= 1 and summary[side]["perplexity"] > 1
        assert summary[side]["perplexity_tokens"] > 0
    assert summary["finetuned"]["perplexity"] < summary["base"]["perplexity"]
    assert PERPLEXITY_NOTE in summary["notes"]

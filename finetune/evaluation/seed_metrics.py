"""The metrics the users' tutorial computes, next to ours: corpus BLEU (sacreBLEU, which lm-eval brings)
and the validation perplexity of base and fine-tuned, each with a note where it misleads.

- BLEU: sacreBLEU's corpus score of the generated answers (reasoning stripped) against the references,
  divided by 100 to sit on the 0-1 scale of the other metrics. It counts matching word sequences up to
  four words long, so on answers of one to three words it is near 0 even when they are right.
- Perplexity: exp(mean negative log-likelihood per reference-answer token): the tokens the chat template
  writes for the answer after its prompt (its end-of-turn marker included; for prompt-completion rows the
  plain text + EOS), cut at max_length, as preference evaluation cuts an answer. That is the tutorial's
  exp(eval_loss) over these rows, up to what the training loss masks (e.g. the newline a template writes
  after the end-of-turn marker). Both sides are scored with the run's tokenizer and chat template: a base
  model trained with another template (or none) reads worse than it is, and numbers from different
  tokenizers are never comparable.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from finetune.data.templates import pair_token_ids
from finetune.evaluation.common import should_stop
from finetune.evaluation.metrics import strip_think
from finetune.models import load_tokenizer

SIDES = ("base", "finetuned")
SHORT_ANSWER_WORDS = 4  # BLEU's longest n-gram
BLEU_NOTE = (
    "BLEU counts matching word sequences of up to four words: the references here are mostly shorter "
    "(median {words} words), so BLEU stays near 0 even for right answers; read exact match and token F1."
)
PERPLEXITY_NOTE = (
    "Perplexity is comparable only under one tokenizer and chat template: both models are scored with the "
    "run's; a base model trained with another template (or none) reads worse than it is."
)
TEMPLATE_NOTE = (
    "The base model's own chat template differs from the one the run trained with: its perplexity (and its "
    "answers) are measured under the run's template, which it never saw."
)


def corpus_bleu(answers: list[str], references: list[str]) -> float | None:
    """sacreBLEU corpus BLEU / 100 (None without rows)."""
    import sacrebleu

    if not answers:
        return None
    return min(1.0, float(sacrebleu.corpus_bleu(answers, [references]).score) / 100.0)


def bleu_note(references: list[str]) -> str | None:
    words = [len(r.split()) for r in references if r.strip()]
    if not words:
        return None
    median = statistics.median(words)
    return BLEU_NOTE.format(words=f"{median:g}") if median < SHORT_ANSWER_WORDS else None


def answer_tokens(tokenizer: Any, example: Any, max_length: int | None) -> tuple[list[int], list[int]]:
    """(prompt ids, reference-answer ids) of an example (the one rule preference evaluation uses too:
    data.templates.pair_token_ids)."""
    prompt = example.prompt_input
    answer = [{"role": "assistant", "content": example.reference}] if isinstance(prompt, list) else example.reference
    prompt_ids, (answer_ids, _) = pair_token_ids(tokenizer, {"prompt": prompt, "chosen": answer, "rejected": answer},
                                                 max_length)  # fmt: skip
    return prompt_ids, answer_ids


def perplexities(comparer: Any, examples: list[Any], adapter: str | None, max_length: int | None, stop=None):
    """{side: {"perplexity", "nll_per_token", "tokens"}} over the examples' reference answers."""
    totals = {side: [0.0, 0] for side in SIDES}
    for example in examples:
        if should_stop(stop):
            break
        prompt_ids, answer_ids = answer_tokens(comparer.tokenizer, example, max_length)
        if not answer_ids:  # the prompt alone fills max_length, as training would have cut it
            continue
        for side in SIDES:
            (logp,) = comparer.completion_logps(prompt_ids, [answer_ids], side == "finetuned", adapter)
            totals[side][0] -= logp
            totals[side][1] += len(answer_ids)
    out = {}
    for side, (nll, tokens) in totals.items():
        mean = nll / tokens if tokens else None
        out[side] = {
            "perplexity": math.exp(min(mean, 700.0)) if mean is not None else None,
            "nll_per_token": mean,
            "tokens": tokens,
        }
    return out


def templates_differ(comparer: Any) -> bool:
    """Does the base model's own tokenizer carry another chat template than the run's?"""

    try:
        own = load_tokenizer(comparer.config, comparer.workspace)
    except Exception:  # noqa: BLE001 - the base tokenizer cannot be read here: nothing to compare
        return False
    return (getattr(own, "chat_template", None) or "") != (getattr(comparer.tokenizer, "chat_template", None) or "")


def seed_metrics(comparer: Any, examples: list[Any], rows: list[Any], adapter: str | None, stop=None):
    """({side: {"bleu", "perplexity", "perplexity_tokens"}}, notes) for the scored rows."""
    done = {row.index for row in rows}
    examples = [e for e in examples if e.index in done]
    references = [row.reference for row in rows]

    scored = hasattr(comparer, "completion_logps")  # a scripted comparer (tests) has no model to score with
    ppl = perplexities(comparer, examples, adapter, comparer.config.max_length, stop) if scored else {}

    scores = {}
    for side in SIDES:
        answers = [strip_think(getattr(row, side)) for row in rows]
        scores[side] = {
            "bleu": corpus_bleu(answers, references),
            "perplexity": ppl[side]["perplexity"] if scored else None,
            "perplexity_tokens": ppl[side]["tokens"] if scored else 0,
        }
    notes = [n for n in (bleu_note(references),) if n] + ([PERPLEXITY_NOTE] if scored else [])
    if scored and templates_differ(comparer):
        notes.append(TEMPLATE_NOTE)
    return scores, notes

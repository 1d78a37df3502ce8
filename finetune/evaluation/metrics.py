"""Scoring one generated answer against a reference: exact match, token F1, ROUGE-L, labels.

Answers are scored on the GENERATED text only (the Comparer decodes only new tokens), after
removing reasoning blocks: seed 004 read 0 on every metric because the prompt was decoded
with the answer, and a reasoning model's `<think>` block would sink the scores the same way.

Normalization follows SQuAD's evaluation script (lowercase, strip punctuation and the
articles a/an/the, collapse whitespace), so numbers are comparable to what people know.
ROUGE-L is implemented here (LCS F-measure, beta = 1, like `rouge_score` without stemming)
to avoid another dependency.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from finetune.data.answer_text import normalize_answer, strip_think

MAX_LCS_TOKENS = 2000  # caps the O(n*m) LCS; longer answers are scored on their first 2000 words

# short-label detection: every reference this short, and few distinct values that repeat
LABEL_MAX_WORDS = 3
LABEL_MAX_VALUES = 20
NO_LABEL = "(none)"


def _tokens(text: str) -> list[str]:
    return normalize_answer(text).split()


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalized texts are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1: harmonic mean of precision and recall of the shared word multiset.
    Two empty texts agree (1.0); one empty text scores 0.0."""
    pred, ref = _tokens(prediction), _tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (two-row dynamic programme)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (beta = 1) on normalized words: rewards the reference's words in order."""
    pred, ref = _tokens(prediction)[:MAX_LCS_TOKENS], _tokens(reference)[:MAX_LCS_TOKENS]
    if not pred or not ref:
        return float(pred == ref)
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


# labels ---------------------------------------------------------------------------
def detect_labels(references: list[str]) -> list[str] | None:
    """The label set when the references look like classification labels, else None.

    Label-like means: every reference has 1 to LABEL_MAX_WORDS words, there are 2 to
    LABEL_MAX_VALUES distinct (normalized) values, and values repeat (on average at least two
    rows per label) - five short, all-different answers are QA ("Paris", "Rome"), not labels.
    Labels are returned normalized, most frequent first.
    """
    normalized = [normalize_answer(r) for r in references]
    if not normalized or any(not r or len(r.split()) > LABEL_MAX_WORDS for r in normalized):
        return None
    counts = Counter(normalized)
    if not 2 <= len(counts) <= LABEL_MAX_VALUES or len(counts) > len(normalized) / 2:
        return None
    return [label for label, _ in counts.most_common()]


def extract_label(answer: str, labels: list[str]) -> str | None:
    """The first known label in the answer's first non-empty line (case-insensitive, whole
    words, longest label first at each position), e.g. "Positive." or "The sentiment is
    positive" -> "positive". None when no label appears there."""
    answer = strip_think(answer)
    first_line = next((line for line in answer.splitlines() if normalize_answer(line)), "")
    words = _tokens(first_line)
    by_length = sorted((label.split() for label in labels), key=len, reverse=True)
    for i in range(len(words)):
        for label in by_length:
            if words[i : i + len(label)] == label:
                return " ".join(label)
    return None


@dataclass
class LabelScores:
    accuracy: float
    macro_f1: float
    per_label: dict[str, float]  # F1 per label


def label_scores(predicted: list[str | None], references: list[str], labels: list[str]) -> LabelScores:
    """Accuracy and macro F1 over `labels` (normalized references vs extracted predictions).

    An answer with no recognizable label (None) is simply wrong: it adds a false negative to
    its reference's label and is not a class of its own, so it cannot raise the macro average.
    """
    refs = [normalize_answer(r) for r in references]
    preds = [p if p is not None else NO_LABEL for p in predicted]
    n = len(refs)
    accuracy = sum(p == r for p, r in zip(preds, refs)) / n if n else 0.0
    per_label: dict[str, float] = {}
    for label in labels:
        tp = sum(p == label and r == label for p, r in zip(preds, refs))
        fp = sum(p == label and r != label for p, r in zip(preds, refs))
        fn = sum(p != label and r == label for p, r in zip(preds, refs))
        if tp + fp + fn == 0:
            continue  # a label absent from these rows on both sides says nothing
        per_label[label] = 2 * tp / (2 * tp + fp + fn)
    macro = sum(per_label.values()) / len(per_label) if per_label else 0.0
    return LabelScores(accuracy, macro, per_label)


def score_answer(answer: str, reference: str, labels: list[str] | None = None) -> dict[str, float | str | None]:
    """Every per-answer metric for one generated answer (reasoning stripped first).
    With `labels`, adds the extracted `label` and `correct` (1.0/0.0)."""
    clean = strip_think(answer)
    scores: dict[str, float | str | None] = {
        "exact_match": exact_match(clean, reference),
        "token_f1": token_f1(clean, reference),
        "rouge_l": rouge_l(clean, reference),
    }
    if labels:
        label = extract_label(clean, labels)
        scores["label"] = label
        scores["correct"] = float(label is not None and label == normalize_answer(reference))
    return scores

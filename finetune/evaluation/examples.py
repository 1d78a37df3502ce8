"""Turning normalized data rows into (prompt, reference) examples, and generating for them
exactly as training formatted them.

Which rows: by default the run's validation split, rebuilt with `prepare_data(run.config())`
(the same seeded split or validation file training used); or a file the user picks.

The prompt of a row is what the model saw before the answer it learned:
  conversational    every message before the LAST assistant turn (the reference)
  prompt-completion the `prompt` string (reference: `completion`)
  text              no prompt/answer split: cannot be evaluated (EvaluationError)

Generation must see the prompt formatted as in training: TRL tokenizes a plain-string prompt
WITHOUT the chat template, and a multi-turn conversation needs all its turns. The Comparer's one
encoder (`Comparer.encode`) does both: messages as they are, a string prompt `as_text`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.data import load_records, prepare_data
from finetune.data.prompts import is_prompt_row
from finetune.errors import DataError
from finetune.evaluation.common import EvaluationError
from finetune.names import display_name
from finetune.runs import Run

TEXT_ROWS_MESSAGE = (
    'rows in the language-modeling shape ({{"text": ...}}) have no prompt/answer split, so there is no '
    "reference answer to score the models against. Evaluate with a conversational (messages) or "
    "prompt-completion file instead{hint}."
)


@dataclass
class Example:
    """One evaluable row: `prompt_input` is a string (plain prompt) or a list of messages."""

    index: int  # position in the source rows (0-based)
    prompt_input: str | list[dict[str, Any]]
    reference: str

    @property
    def prompt_text(self) -> str:
        """The prompt for display and CSV: the text, or the last user turn with any earlier
        turns shown as `role: content` lines above it."""
        if isinstance(self.prompt_input, str):
            return self.prompt_input
        turns = self.prompt_input
        if len(turns) == 1 or (len(turns) == 2 and turns[0].get("role") == "system"):
            return str(turns[-1].get("content", ""))
        return "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in turns)


def _content(message: Any) -> str:
    return str(message.get("content", "")) if isinstance(message, dict) else str(message)


def example_from_row(index: int, row: dict[str, Any]) -> Example | str:
    """An Example, or the reason this row cannot be evaluated. `text` rows raise instead:
    a whole file of them is unusable, which deserves an error, not N skipped rows."""
    if is_prompt_row(row):  # GRPO's prompts: the answer (when the data has one) is the reference
        prompt = row["prompt"]
        return Example(index, list(prompt) if isinstance(prompt, list) else str(prompt), str(row.get("answer", "")))
    if "messages" in row:
        messages = list(row["messages"])
        last = max(
            (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"), default=-1
        )
        if last < 0:
            return "no assistant turn to use as the reference answer"
        if last == 0:
            return "nothing before the assistant turn to use as the prompt"
        return Example(index, messages[:last], _content(messages[last]))
    if "prompt" in row:
        prompt, completion = row["prompt"], row.get("completion", "")
        reference = _content(completion[-1]) if isinstance(completion, list) and completion else str(completion)
        if isinstance(prompt, list):
            return Example(index, list(prompt), reference) if prompt else "empty prompt"
        return Example(index, str(prompt), reference) if str(prompt).strip() else "empty prompt"
    raise EvaluationError(TEXT_ROWS_MESSAGE.format(hint=""))


def examples_from_rows(rows: list[dict], limit: int | None = None) -> tuple[list[Example], list[str]]:
    """The first `limit` evaluable rows, and `row N: reason` for each row skipped on the way."""
    if limit is not None and limit < 1:
        raise EvaluationError(f"limit must be at least 1 row, got {limit}")
    examples: list[Example] = []
    skipped: list[str] = []
    for i, row in enumerate(rows):
        if limit is not None and len(examples) >= limit:
            break
        result = example_from_row(i, row)
        if isinstance(result, str):
            skipped.append(f"row {i + 1}: {result}")
        else:
            examples.append(result)
    if not examples:
        detail = f" ({'; '.join(skipped[:3])})" if skipped else ""
        raise EvaluationError(f"no row can be evaluated{detail}: each needs a prompt and a reference answer")
    return examples, skipped


def load_eval_rows(run: Run, data: str | Path | None = None) -> tuple[list[dict], str, list[str]]:
    """(rows, source description, warnings): `data` read like the run's validation file
    (its format and column mapping, else auto-detected), or the run's own validation rows."""

    cfg = run.config()
    if data:
        try:
            report = load_records(str(data), cfg.dataset_format, dict(cfg.column_mapping or {}))
        except DataError as first:
            try:
                report = load_records(str(data))
            except DataError:
                raise first from None
        return list(report.rows), display_name(report.source), list(report.warnings)
    if cfg.dataset_format == "text":
        raise EvaluationError(TEXT_ROWS_MESSAGE.format(hint=" (choose one as the data to evaluate on)"))
    prepared = prepare_data(cfg)  # no tokenizer: the split is all we need, token stats are skipped
    if prepared.report.shape == "text":
        raise EvaluationError(TEXT_ROWS_MESSAGE.format(hint=" (choose one as the data to evaluate on)"))
    if not prepared.eval_rows:
        raise EvaluationError(
            f"run {run.name} trained without validation rows (val_split=0 and no eval_dataset_path), so there is "
            "no held-out data to evaluate on; choose a data file instead"
        )
    warnings = []
    expected = run.data_summary().get("val_rows")
    if isinstance(expected, int) and expected != len(prepared.eval_rows):
        warnings.append(
            f"training held out {expected} validation rows but the data now gives {len(prepared.eval_rows)}: "
            "the data file changed since training, so some of these rows may have been trained on"
        )
    eval_source = prepared.summary.get("eval_source")
    source = (
        display_name(eval_source) if eval_source else f"{display_name(prepared.summary['source'])} (validation split)"
    )
    return list(prepared.eval_rows), source, warnings


def generate_example(
    comparer: Any,
    example: Example,
    use_adapter: bool,
    settings: Any,
    adapter: str | None,
    stop: Any = None,
    against: str | None = None,
):
    """One answer (a Generation) for an example, formatted exactly as training formatted its prompt
    (messages through the chat template, a prompt-completion prompt as plain text), through the
    Comparer's one public `generate`. `stop` also ends a long generation early (the caller drops that row).
    `against` ("gguf:<file>") answers the base side with that GGUF export of the run."""
    prompt = example.prompt_input
    extra = {"against": against} if against else {}  # scripted test comparers need not know the option
    return comparer.generate(
        prompt, use_adapter, settings.check(), adapter=adapter, stop=stop, as_text=isinstance(prompt, str), **extra
    )

"""Blind A/B votes turned into preference data: the pairs DPO trains on.

Every decided vote (A or B better) is a pair: its prompt, the preferred answer as `chosen`, the other
as `rejected`. Ties and "both bad" say nothing about which answer is better, so they are left out and
counted; so are votes whose two answers are the same text or one is empty, and a pair already taken
from another vote. Rows are written in the app's `preference` format, as conversations (the prompt as
a user turn after the vote's system prompt, each answer as an assistant turn) because the answers were
generated through the chat template; for a run whose tokenizer has no chat template, as plain texts.

The file goes to `<workspace>/datasets/votes-<timestamp>.jsonl` (or `out`), where a run can read it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.evaluation.ab import Vote, load_votes
from finetune.evaluation.common import EvaluationError, as_run, stamp, unique_path
from finetune.files import write_text_atomic


@dataclass
class VotePairs:
    """What a conversion wrote and left out."""

    path: Path | None
    runs: list[str]
    votes: int = 0
    pairs: int = 0
    ties: int = 0
    both_bad: int = 0
    same_text: int = 0  # a decided vote whose two answers are identical or one is empty
    duplicates: int = 0
    by_winner: dict[str, int] = field(default_factory=dict)  # chosen side: base / finetuned

    def text(self) -> str:
        left = f"{self.ties} tie(s) and {self.both_bad} both-bad vote(s) left out"
        if self.same_text:
            left += f", {self.same_text} with identical or empty answers"
        if self.duplicates:
            left += f", {self.duplicates} repeated pair(s)"
        wins = ", ".join(f"{n} preferring the {'fine-tuned' if k == 'finetuned' else k}" for k, n in
                         sorted(self.by_winner.items()))  # fmt: skip
        return f"{self.pairs} preference pair(s) from {self.votes} vote(s) ({wins or 'none decided'}); {left}."


def has_chat_template(run: Any) -> bool:
    """Does the tokenizer saved with the run's adapter carry a chat template? (no model load)"""
    folder = as_run(run).adapter_dir
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True  # unknown: conversations, as the app's default data are
    return bool(config.get("chat_template"))


def pair_of(vote: Vote, conversational: bool) -> dict[str, Any] | None:
    """The preference row of a decided vote, None for ties and both bad."""
    if vote.winner not in ("base", "finetuned"):
        return None
    answers = {vote.a_is: vote.answer_a, ("finetuned" if vote.a_is == "base" else "base"): vote.answer_b}
    chosen, rejected = answers[vote.winner], answers["base" if vote.winner == "finetuned" else "finetuned"]
    system = str((vote.settings or {}).get("system_prompt") or "")
    if not conversational:
        prompt = f"{system}\n\n{vote.prompt}" if system.strip() else vote.prompt
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    turns = ([{"role": "system", "content": system}] if system.strip() else []) + [
        {"role": "user", "content": vote.prompt}
    ]
    return {
        "prompt": turns,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def collect_pairs(runs: list[Any]) -> tuple[list[dict], VotePairs]:
    """The preference rows of every decided vote of `runs`, and the counts."""
    result = VotePairs(None, [as_run(r).name for r in runs])
    rows: list[dict] = []
    seen: set[str] = set()
    for run in runs:
        conversational = has_chat_template(run)
        for vote in load_votes(run):
            result.votes += 1
            if vote.winner == "tie":
                result.ties += 1
                continue
            if vote.winner == "both_bad":
                result.both_bad += 1
                continue
            row = pair_of(vote, conversational)
            if row is None:
                continue
            texts = [vote.answer_a.strip(), vote.answer_b.strip()]
            if texts[0] == texts[1] or not all(texts):
                result.same_text += 1
                continue
            key = json.dumps(row, sort_keys=True, ensure_ascii=False)
            if key in seen:
                result.duplicates += 1
                continue
            seen.add(key)
            rows.append(row)
            result.by_winner[vote.winner] = result.by_winner.get(vote.winner, 0) + 1
    result.pairs = len(rows)
    return rows, result


def votes_to_preference(runs: list[Any], out: str | Path | None = None, workspace: str | Path | None = None):
    """Write the decided votes of `runs` as a preference JSONL file; a VotePairs with its path and counts.
    Refused (nothing written) when no vote is decided."""
    if not runs:
        raise EvaluationError("name at least one run whose votes to use")
    if out is not None and Path(out).suffix.lower() != ".jsonl":
        raise EvaluationError(f"the preference file must end in .jsonl (got '{Path(out).name}')")
    runs = [as_run(r) for r in runs]
    rows, result = collect_pairs(runs)
    if not rows:
        if not result.votes:
            raise EvaluationError(f"{', '.join(result.runs)}: no blind A/B votes yet; cast some in the Test tab")
        raise EvaluationError(f"No preference pair can be made: {result.text()} Vote A or B on some pairs.")
    if out is None:
        root = Path(workspace) if workspace else runs[0].path.parent.parent
        path = unique_path(root / "datasets", f"votes-{stamp()}", ".jsonl")
    else:
        path = Path(out).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    except OSError as exc:
        raise EvaluationError(f"cannot write {path}: {exc.strerror or exc}") from None
    result.path = path
    return result

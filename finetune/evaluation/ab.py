"""Blind A/B rating of base vs fine-tuned answers, with votes kept in the run folder.

Side by side with labels invites bias toward "the fine-tuned one". Here each prompt's two
answers are shown as A and B, the side of each model drawn at random per pair (stored in
the pair, revealed only after the vote). Votes go to `<run>/votes.jsonl`: append-only, one
JSON object per line, flushed and fsynced, so they survive restarts and a kill mid-write
costs at most the line being written.

The tally reports the fine-tuned model's win rate over base as wins / (wins + losses), with
a 95% Wilson score interval (it stays inside [0, 1] and behaves at small n, unlike the
normal approximation). Ties are NOT in that figure; they are reported as a count and in a
second figure, `score_with_ties` = (wins + ties / 2) / (wins + losses + ties), the usual
"tie = half a win" convention. "Both bad" votes say nothing about which model is better, so
they are excluded from both figures and only counted (many of them mean neither is good).
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from finetune.evaluation.common import (
    EvaluationError,
    as_run,
    comparer_for,
    evaluations_dir,
    settings_dict,
    spreadsheet_safe,
    stamp,
    unique_path,
)
from finetune.evaluation.compare import GenerationSettings
from finetune.runs import Run

CHOICES = ("a", "b", "tie", "both_bad")
SIDES = ("base", "finetuned")
Z_95 = 1.959963984540054
_CHOICE_ALIASES = {"tie": "tie", "both_bad": "both_bad", "bothbad": "both_bad", "bad": "both_bad", "a": "a", "b": "b"}
_write_lock = threading.Lock()


@dataclass
class BlindPair:
    """Two answers to one prompt, sides assigned at random. Keep `a_is` away from the page
    until the vote is in (hold the pair in server-side state; show `public()` only)."""

    prompt: str
    answer_a: str
    answer_b: str
    a_is: str  # "base" or "finetuned"
    settings: dict[str, Any]
    adapter: str  # adapter name the fine-tuned side used: "final" or "checkpoint_N"
    tokens_a: int = 0
    tokens_b: int = 0
    seconds_a: float = 0.0
    seconds_b: float = 0.0
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: float = field(default_factory=time.time)

    @property
    def b_is(self) -> str:
        return "finetuned" if self.a_is == "base" else "base"

    @property
    def identical(self) -> bool:
        """Both models gave the same text: a vote can only be a tie or both bad."""
        return self.answer_a.strip() == self.answer_b.strip()

    def public(self) -> dict[str, Any]:
        """What may be shown before the vote (no side assignment)."""
        return {"id": self.id, "prompt": self.prompt, "answer_a": self.answer_a, "answer_b": self.answer_b}

    def reveal(self) -> dict[str, str]:
        """{"a": "base"|"finetuned", "b": ...}, to show after the vote."""
        return {"a": self.a_is, "b": self.b_is}


@dataclass
class Vote:
    """One judgement, as stored in votes.jsonl (`time` is seconds since the epoch)."""

    prompt: str
    settings: dict[str, Any]
    answer_a: str
    answer_b: str
    a_is: str
    choice: str  # a | b | tie | both_bad
    winner: str  # base | finetuned | tie | both_bad
    adapter: str
    time: float
    pair_id: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vote:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Tally:
    """Counts and the fine-tuned model's win rate over base (see the module docstring)."""

    wins: int  # fine-tuned preferred
    losses: int  # base preferred
    ties: int
    both_bad: int
    n: int  # all votes
    win_rate: float | None  # wins / (wins + losses); None before any decided vote
    ci_low: float | None  # 95% Wilson interval of win_rate
    ci_high: float | None
    score_with_ties: float | None  # (wins + ties/2) / (wins + losses + ties)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        """One line for people, e.g. for the UI under the vote buttons."""
        if self.n == 0:
            return "No votes yet."
        counts = f"{self.ties} tie(s), {self.both_bad} both bad, {self.n} vote(s) in all"
        if self.win_rate is None:
            return f"No decided votes yet: {counts}."
        decided = self.wins + self.losses
        return (
            f"Fine-tuned preferred in {self.wins} of {decided} decided votes: {self.win_rate:.0%} "
            f"(95% CI {self.ci_low:.0%}-{self.ci_high:.0%}); {counts}."
        )


def wilson_interval(successes: float, n: float, z: float = Z_95) -> tuple[float | None, float | None]:
    """Wilson score interval for a binomial proportion; (None, None) when n == 0."""
    if n <= 0:
        return None, None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


# pairs and votes ------------------------------------------------------------------
def new_blind_pair(
    comparer_or_run: Any,
    prompt: str,
    settings: Any = None,
    rng: random.Random | None = None,
    *,
    adapter: str | Path | None = None,
) -> BlindPair:
    """Generate the base and fine-tuned answers (same settings and seed) and put them on
    random sides. `rng` makes the draw reproducible (tests); by default it is unpredictable.
    `adapter` is a checkpoint folder inside the run (default: the comparer's active adapter)."""

    settings = settings or GenerationSettings()
    comparer = comparer_for(comparer_or_run, adapter)
    name = comparer.active_adapter  # pinned: another tab switching checkpoints cannot split the pair
    base = comparer.generate(prompt, False, settings, adapter=name)
    tuned = comparer.generate(prompt, True, settings, adapter=name)
    a_is = (rng or random.SystemRandom()).choice(SIDES)
    a, b = (base, tuned) if a_is == "base" else (tuned, base)
    return BlindPair(
        prompt=prompt,
        answer_a=a.text,
        answer_b=b.text,
        a_is=a_is,
        settings=settings_dict(settings),
        adapter=name or "final",
        tokens_a=a.tokens,
        tokens_b=b.tokens,
        seconds_a=a.seconds,
        seconds_b=b.seconds,
    )


def normalize_choice(choice: str) -> str:
    """'A', 'b', 'Tie', 'both bad', 'both-bad' -> a | b | tie | both_bad; anything else is an error."""
    key = str(choice).strip().lower().replace(" ", "_").replace("-", "_")
    if key not in _CHOICE_ALIASES:
        raise EvaluationError(f"vote choice '{choice}' is not one of: {', '.join(CHOICES)} (A, B, tie, both bad)")
    return _CHOICE_ALIASES[key]


def winner_of(pair: BlindPair, choice: str) -> str:
    choice = normalize_choice(choice)
    return {"a": pair.a_is, "b": pair.b_is}.get(choice, choice)


def votes_path(run: Any) -> Path:
    return as_run(run).path / "votes.jsonl"


def record_vote(run: Any, pair: BlindPair, choice: str) -> Vote:
    """Append the vote to `<run>/votes.jsonl` (flushed and fsynced) and return it.
    Voting twice on the same pair is refused (a double click must not count twice)."""
    if pair.a_is not in SIDES:
        raise EvaluationError(f"this pair's side assignment is broken (a_is={pair.a_is!r})")
    choice = normalize_choice(choice)
    vote = Vote(
        prompt=pair.prompt,
        settings=dict(pair.settings),
        answer_a=pair.answer_a,
        answer_b=pair.answer_b,
        a_is=pair.a_is,
        choice=choice,
        winner=winner_of(pair, choice),
        adapter=pair.adapter,
        time=time.time(),
        pair_id=pair.id,
    )
    run = as_run(run)
    path = votes_path(run)
    line = json.dumps(asdict(vote), ensure_ascii=False)
    with _write_lock:
        if any(v.pair_id == pair.id for v in load_votes(run)):
            raise EvaluationError("this pair already has a vote; generate a new pair to vote again")
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    return vote


def load_votes(run: Any) -> list[Vote]:
    """Every stored vote, oldest first. Unreadable lines (cut by a kill) are skipped."""
    votes: list[Vote] = []
    try:
        with open(votes_path(run), encoding="utf-8") as fh:
            for line in fh:
                try:
                    data = json.loads(line)
                    if isinstance(data, dict):
                        votes.append(Vote.from_dict(data))
                except (json.JSONDecodeError, TypeError):
                    continue
    except FileNotFoundError:
        pass
    return votes


def tally(votes: list[Vote], adapter: str | None = None) -> Tally:
    """Count votes (optionally only those for one adapter/checkpoint) and compute the win rate."""
    chosen = [v for v in votes if adapter is None or v.adapter == adapter]
    wins = sum(v.winner == "finetuned" for v in chosen)
    losses = sum(v.winner == "base" for v in chosen)
    ties = sum(v.winner == "tie" for v in chosen)
    both_bad = sum(v.winner == "both_bad" for v in chosen)
    decided = wins + losses
    low, high = wilson_interval(wins, decided)
    with_ties = (wins + ties / 2) / (decided + ties) if decided + ties else None
    return Tally(
        wins=wins,
        losses=losses,
        ties=ties,
        both_bad=both_bad,
        n=len(chosen),
        win_rate=wins / decided if decided else None,
        ci_low=low,
        ci_high=high,
        score_with_ties=with_ties,
    )


CSV_COLUMNS = ("time", "pair_id", "adapter", "prompt", "answer_a", "answer_b", "a_is", "choice", "winner", "settings")


def export_votes(run: Any, fmt: str = "csv", out: str | Path | None = None) -> Path:
    """Write every vote as CSV (settings as a JSON column) or JSONL; returns the file.
    Default location: `<run>/evaluations/votes-<timestamp>.<fmt>`."""
    fmt = str(fmt).lower().lstrip(".")
    if fmt not in ("csv", "jsonl"):
        raise EvaluationError(f"export format '{fmt}' is not supported: use csv or jsonl")
    run = as_run(run)
    path = Path(out) if out else unique_path(evaluations_dir(run), f"votes-{stamp()}", f".{fmt}")
    path.parent.mkdir(parents=True, exist_ok=True)
    votes = load_votes(run)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        if fmt == "jsonl":
            for vote in votes:
                fh.write(json.dumps(asdict(vote), ensure_ascii=False) + "\n")
        else:
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for vote in votes:
                row = asdict(vote)
                row["settings"] = json.dumps(vote.settings, ensure_ascii=False)
                writer.writerow(spreadsheet_safe({k: row[k] for k in CSV_COLUMNS}))
    return path


def run_tally(run: Run | str | Path, adapter: str | None = None) -> Tally:
    """Shortcut for the UI: tally of the votes stored in a run folder."""
    return tally(load_votes(run), adapter)

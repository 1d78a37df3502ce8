"""Sampled GRPO completions with their rewards, in the run folder: `completions/step-000010.jsonl`.

`CompletionLog` wraps the run's reward functions: every call of one batch of completions (TRL calls each
reward function on the same list) is gathered, and on the steps `sample_completions_steps` names the
batch is written, one line per completion: step, prompt, completion, answer, each function's reward and
the weighted total. Completions sampled for an evaluation are not written (`evaluating`). Readers
(`read_samples`) see a file only once it is whole (written to a temporary name, then renamed).
Importing this module loads no torch.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from finetune.files import write_text_atomic
from finetune.train.rewards import completion_text

FOLDER = "completions"
MAX_ROWS_PER_SAMPLE = 64  # a generation batch of a big run holds thousands: the first groups tell enough
_FILE = re.compile(r"step-(\d+)\.jsonl$")


def samples_dir(run_path: str | Path) -> Path:
    return Path(run_path) / FOLDER


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in value if isinstance(m, dict))
    return "" if value is None else str(value)


class CompletionLog:
    """Collects one batch's rewards across the reward functions and writes a sample every `every` steps."""

    def __init__(self, run_path: str | Path | None, functions: list, weights: list[float], every: int):
        self.folder = samples_dir(run_path) if run_path is not None else None
        self.names = [f.__name__ for f in functions]
        self.weights = dict(zip(self.names, weights))
        self.every = every
        self.evaluating = False  # set by the callback around evaluations
        self._batch: tuple[int, dict[str, list[float]]] | None = None
        self.wrapped = [self._wrap(f) for f in functions]

    def _wrap(self, function):
        log = self

        def call(prompts=None, completions=None, completion_ids=None, **columns):
            values = function(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)
            log.record(function.__name__, values, prompts, completions, columns)
            return values

        call.__name__ = function.__name__
        return call

    def due(self, step: int) -> bool:
        return (
            self.folder is not None and self.every > 0 and not self.evaluating and (step == 1 or step % self.every == 0)
        )

    def record(self, name: str, values: list[float], prompts, completions, columns: dict) -> None:
        state = columns.get("trainer_state")
        step = (getattr(state, "global_step", 0) or 0) + 1  # the step these completions train
        if not self.due(step):
            return
        key = id(completions)
        if self._batch is None or self._batch[0] != key:
            self._batch = (key, {})
        gathered = self._batch[1]
        gathered[name] = list(values)
        if len(gathered) == len(self.names):
            self._batch = None
            self.write(step, prompts, completions, columns, gathered)

    def write(self, step: int, prompts, completions, columns: dict, rewards: dict[str, list[float]]) -> Path:
        answers = columns.get("answer")
        rows = columns.get("source_row")
        lines = []
        for i in range(min(len(completions or []), MAX_ROWS_PER_SAMPLE)):
            record: dict[str, Any] = {
                "step": step,
                "row": rows[i] if rows else None,
                "prompt": _text(prompts[i]) if prompts else "",
                "completion": completion_text(completions[i]),
                "answer": answers[i] if answers else None,
                "rewards": {name: rewards[name][i] for name in self.names},
            }
            record["reward"] = sum(self.weights[name] * record["rewards"][name] for name in self.names)
            lines.append(json.dumps(record, ensure_ascii=False))
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"step-{step:06d}.jsonl"
        write_text_atomic(path, "\n".join(lines) + "\n")
        return path


def sample_files(run_path: str | Path) -> list[Path]:
    """The saved samples of a run, oldest step first."""
    folder = samples_dir(run_path)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if _FILE.search(p.name)), key=lambda p: int(_FILE.search(p.name)[1]))


def read_samples(run_path: str | Path, step: int | None = None) -> list[dict[str, Any]]:
    """The completions of one saved sample (default: the latest), each with its rewards; [] when none."""
    files = sample_files(run_path)
    if step is not None:
        files = [p for p in files if int(_FILE.search(p.name)[1]) == int(step)]
    if not files:
        return []
    out = []
    for line in files[-1].read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def sample_steps(run_path: str | Path) -> list[int]:
    return [int(_FILE.search(p.name)[1]) for p in sample_files(run_path)]


def prune_samples(run_path: str | Path, last_step: int) -> None:
    """Before a resume from the checkpoint of `last_step`: drop the samples of the steps that will be redone."""
    for path in sample_files(run_path):
        if int(_FILE.search(path.name)[1]) > last_step:
            path.unlink(missing_ok=True)

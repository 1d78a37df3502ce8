"""The studio's judging desk: base vs fine-tuned answers, blind A/B votes, batch evaluation, the
prompt grid across checkpoints and the report, for runs of one workspace named by their name.

Everything that generates holds the studio's GPU lease: one model in memory, never while training.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from finetune.errors import FinetuneError
from finetune.evaluation.generation import GenerationSettings

NO_RUN = "No run with a saved adapter yet: train one in the Train tab first."


class JudgeDesk:
    def __init__(self, studio: Any):
        self.studio = studio

    def _run(self, name: str | None):
        if not name:
            raise FinetuneError(NO_RUN)
        return self.studio.run(name)

    # side by side ------------------------------------------------------------------------
    def stream(
        self, name: str, prompt: str, use_adapter: bool, settings: GenerationSettings, against: str | None = None
    ) -> Iterator[Any]:
        """The answer of the base (`use_adapter=False`; or the side `against` names, see `sides`) or the
        fine-tuned model as it grows; the last item carries `.tokens`, the number of tokens generated."""
        from finetune.evaluation.compare import get_comparer

        run = self._run(name)
        with self.studio.lease.hold("comparing answers"):
            yield from get_comparer(run).stream(prompt, use_adapter, settings, against=against)

    def sides(self, name: str | None) -> list[tuple[str, str]]:
        """(label, side) of what can stand opposite the fine-tuned model: the base, then the run's GGUF
        exports ("gguf:<file>"), to see what a quantized file costs against the 16-bit fine-tune."""
        from finetune.evaluation.gguf_side import BASE_SIDE, side_choices

        if not name:
            return [("Base model", BASE_SIDE)]
        return side_choices(self._run(name))

    @staticmethod
    def side_label(side: str | None) -> str:
        from finetune.evaluation.gguf_side import side_label

        return side_label(side)

    def compare(self, name: str, prompt: str, settings: GenerationSettings, against: str | None = None):
        """Both answers at once (a CompareResult); `against` as in `stream`."""
        from finetune.evaluation.compare import get_comparer

        run = self._run(name)
        with self.studio.lease.hold("comparing answers"):
            return get_comparer(run).compare(prompt, settings, against=against)

    @staticmethod
    def diff_html(base: str, tuned: str) -> str:
        from finetune.evaluation import word_diff_html

        return word_diff_html(base, tuned)

    # blind A/B ---------------------------------------------------------------------------
    def blind_pair(self, name: str, prompt: str, settings: GenerationSettings):
        from finetune.evaluation import new_blind_pair

        run = self._run(name)
        with self.studio.lease.hold("generating a blind pair"):
            return new_blind_pair(run, prompt, settings)

    def vote(self, name: str, pair: Any, choice: str):
        from finetune.evaluation import record_vote

        return record_vote(self._run(name), pair, choice)

    def tally(self, name: str):
        from finetune.evaluation import run_tally

        return run_tally(self._run(name))

    @staticmethod
    def tally_figure(tally: Any):
        from finetune.evaluation import tally_figure

        return tally_figure(tally)

    def export_votes(self, name: str, fmt: str) -> Path:
        from finetune.evaluation import export_votes

        run = self._run(name)
        if not self.tally(name).n:
            raise FinetuneError("This run has no votes yet: cast a blind vote first.")
        return export_votes(run, fmt)

    def held_out_prompt(self, name: str) -> str:
        """A random prompt from the run's held-out (validation) rows."""
        from finetune.evaluation.examples import examples_from_rows, load_eval_rows

        rows, _, _ = load_eval_rows(self._run(name))
        examples, _ = examples_from_rows(rows)
        if not examples:
            raise FinetuneError("This run has no held-out rows with a prompt.")
        return random.SystemRandom().choice(examples).prompt_text

    # batch evaluation --------------------------------------------------------------------
    def evaluate(self, name: str, data: str | None, *, limit: int, settings, stop=None, progress=None, against=None):
        """Score base (or the GGUF side `against`) and fine-tuned answers on held-out rows (the run's own, or
        the file `data`); on preference pairs also each model's preference_accuracy and mean_margin."""
        from finetune.evaluation.preference import evaluate_with_preferences

        if int(limit) < 1:
            raise FinetuneError("The row limit must be at least 1.")
        run = self._run(name)
        with self.studio.lease.hold("evaluating"):  # on pairs: also preference accuracy and mean margin
            return evaluate_with_preferences(
                run,
                data or None,
                limit=int(limit),
                settings=settings,
                stop=stop,
                progress=progress,
                against=against,
                allow_custom_rewards=self.studio.rewards.custom_allowed,  # GRPO runs: their reward functions
            )

    def latest_evaluation(self, name: str):
        from finetune.evaluation import latest_evaluation

        return latest_evaluation(self._run(name))

    def load_evaluation(self, folder: str | Path):
        """A saved evaluation, only from a run folder of this workspace."""
        from finetune.evaluation import load_evaluation

        path = Path(folder).resolve()
        if not path.is_relative_to(self.studio.workspace.resolve()):
            raise FinetuneError("That evaluation is not in this workspace.")
        return load_evaluation(path)

    @staticmethod
    def summary_figure(summary: dict):
        from finetune.evaluation import summary_figure

        return summary_figure(summary)

    # prompt grid ---------------------------------------------------------------------------
    def prompt_grid(self, name: str, prompts: list[str], settings, *, stop=None, progress=None):
        from finetune.evaluation import run_prompt_grid

        if not prompts:
            raise FinetuneError("Type at least one prompt (one per line), or load a saved prompt set.")
        run = self._run(name)
        with self.studio.lease.hold("running the prompt grid"):
            return run_prompt_grid(run, prompts, settings, stop=stop, progress=progress)

    def latest_grid(self, name: str):
        from finetune.evaluation import list_grids, load_grid

        found = list_grids(self._run(name))
        return load_grid(found[-1]) if found else None

    @staticmethod
    def prompts_from_text(text: str) -> list[str]:
        from finetune.evaluation import prompts_from_text

        return prompts_from_text(text or "")

    def prompt_sets(self) -> list[str]:
        from finetune.evaluation import list_prompt_sets

        return list_prompt_sets(self.studio.workspace)

    def save_prompt_set(self, set_name: str, prompts: list[str]) -> Path:
        from finetune.evaluation import save_prompt_set

        return save_prompt_set(set_name, prompts, self.studio.workspace)

    def load_prompt_set(self, set_name: str) -> list[str]:
        from finetune.evaluation import load_prompt_set

        return load_prompt_set(set_name, self.studio.workspace)

    # report ------------------------------------------------------------------------------
    def report(self, name: str, fmt: str) -> Path:
        from finetune.evaluation import build_report

        return build_report(self._run(name), fmt)

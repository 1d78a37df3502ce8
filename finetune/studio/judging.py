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
from finetune.evaluation import (
    build_report,
    export_votes,
    latest_evaluation,
    list_grids,
    list_prompt_sets,
    load_evaluation,
    load_grid,
    load_prompt_set,
    new_blind_pair,
    prompts_from_text,
    record_vote,
    run_prompt_grid,
    run_tally,
    save_prompt_set,
    summary_figure,
    tally_figure,
    word_diff_html,
)
from finetune.evaluation.benchmark import latest_benchmark, run_benchmark
from finetune.evaluation.benchmark_charts import benchmark_figure, curve_figure
from finetune.evaluation.benchmark_speed import curated_rows
from finetune.evaluation.chat import ChatHistory, chat_turn, run_system_prompt
from finetune.evaluation.checkpoints import KINDS, batch_curve, benchmark_curve, latest_curve
from finetune.evaluation.compare import get_comparer
from finetune.evaluation.examples import examples_from_rows, load_eval_rows
from finetune.evaluation.forgetting import forgetting_check, latest_check
from finetune.evaluation.generation import GenerationSettings
from finetune.evaluation.preference import evaluate_with_preferences
from finetune.evaluation.sides import opposite_choices, resolve_side, side_choices, side_label
from finetune.evaluation.votes import votes_to_preference
from finetune.names import checkpoint_ref, safe_name
from finetune.paths import check_allowed_path

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

        run = self._run(name)
        with self.studio.lease.hold("comparing answers"):
            yield from get_comparer(run).stream(prompt, use_adapter, settings, against=against)

    def sides(self, name: str | None) -> list[tuple[str, str]]:
        """(label, side) of what can stand opposite the fine-tuned model: the base, then the run's GGUF
        exports ("gguf:<file>"), to see what a quantized file costs against the 16-bit fine-tune."""

        return opposite_choices(self._run(name) if name else None)

    @staticmethod
    def side_label(side: str | None) -> str:
        return side_label(side)

    def compare(self, name: str, prompt: str, settings: GenerationSettings, against: str | None = None):
        """Both answers at once (a CompareResult); `against` as in `stream`."""

        run = self._run(name)
        with self.studio.lease.hold("comparing answers"):
            return get_comparer(run).compare(prompt, settings, against=against)

    @staticmethod
    def diff_html(base: str, tuned: str) -> str:
        return word_diff_html(base, tuned)

    # blind A/B ---------------------------------------------------------------------------
    def blind_pair(self, name: str, prompt: str, settings: GenerationSettings):
        run = self._run(name)
        with self.studio.lease.hold("generating a blind pair"):
            return new_blind_pair(run, prompt, settings)

    def vote(self, name: str, pair: Any, choice: str):
        return record_vote(self._run(name), pair, choice)

    def tally(self, name: str):
        return run_tally(self._run(name))

    @staticmethod
    def tally_figure(tally: Any):
        return tally_figure(tally)

    def export_votes(self, name: str, fmt: str) -> Path:
        run = self._run(name)
        if not self.tally(name).n:
            raise FinetuneError("This run has no votes yet: cast a blind vote first.")
        return export_votes(run, fmt)

    def held_out_prompt(self, name: str) -> str:
        """A random prompt from the run's held-out (validation) rows."""

        rows, _, _ = load_eval_rows(self._run(name))
        examples, _ = examples_from_rows(rows)
        if not examples:
            raise FinetuneError("This run has no held-out rows with a prompt.")
        return random.SystemRandom().choice(examples).prompt_text

    # batch evaluation --------------------------------------------------------------------
    def evaluate(self, name: str, data: str | None, *, limit: int, settings, stop=None, progress=None, against=None):
        """Score base (or the GGUF side `against`) and fine-tuned answers on held-out rows (the run's own, or
        the file `data`); on preference pairs also each model's preference_accuracy and mean_margin."""

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
        return latest_evaluation(self._run(name))

    def load_evaluation(self, folder: str | Path):
        """A saved evaluation, only from a run folder of this workspace."""

        path = Path(folder).resolve()
        if not path.is_relative_to(self.studio.workspace.resolve()):
            raise FinetuneError("That evaluation is not in this workspace.")
        return load_evaluation(path)

    @staticmethod
    def summary_figure(summary: dict):
        return summary_figure(summary)

    # prompt grid ---------------------------------------------------------------------------
    def prompt_grid(self, name: str, prompts: list[str], settings, *, stop=None, progress=None, checkpoints=None):
        """`checkpoints`: the checkpoint columns by name (default: every saved checkpoint)."""

        if not prompts:
            raise FinetuneError("Type at least one prompt (one per line), or load a saved prompt set.")
        run = self._run(name)
        if checkpoints:
            unknown = sorted(set(checkpoints) - set(side_choices(run)))
            if unknown:
                raise FinetuneError(f"{', '.join(unknown)}: not a saved checkpoint of {run.name}")
        with self.studio.lease.hold("running the prompt grid"):
            return run_prompt_grid(run, prompts, settings, stop=stop, progress=progress, checkpoints=checkpoints)

    def latest_grid(self, name: str):
        found = list_grids(self._run(name))
        return load_grid(found[-1]) if found else None

    @staticmethod
    def prompts_from_text(text: str) -> list[str]:
        return prompts_from_text(text or "")

    def prompt_sets(self) -> list[str]:
        return list_prompt_sets(self.studio.workspace)

    def save_prompt_set(self, set_name: str, prompts: list[str]) -> Path:
        return save_prompt_set(set_name, prompts, self.studio.workspace)

    def load_prompt_set(self, set_name: str) -> list[str]:
        return load_prompt_set(set_name, self.studio.workspace)

    # report ------------------------------------------------------------------------------
    def report(self, name: str, fmt: str) -> Path:
        return build_report(self._run(name), fmt)

    # benchmarks, the forgetting check, the checkpoint curve, votes as training data, the chat ------------
    def _task_paths(self, tasks: str) -> str:
        """The app may only name task files in the allowed places (the CLI any)."""
        if self.studio.restrict_paths:
            for item in (tasks or "").split(","):
                item = item.strip()
                if item.endswith((".yaml", ".yml")) or "/" in item or "\\" in item:
                    check_allowed_path(item, self.studio.workspace, "benchmark task")
        return tasks

    def store_task_files(self, files: list) -> str:
        """Uploaded task files (a task YAML with its data files) copied together into
        <workspace>/benchmark_tasks/<hash>/, where relative data_files are read from; the YAML paths,
        comma-separated ("" when none were given)."""
        import hashlib
        import shutil

        paths = [Path(f) for f in files or []]
        if not paths:
            return ""
        digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in paths)).hexdigest()[:12]
        folder = self.studio.workspace / "benchmark_tasks" / digest
        folder.mkdir(parents=True, exist_ok=True)
        yamls = []
        for path in paths:
            target = folder / safe_name(path.name, "task.yaml", 120)
            shutil.copyfile(path, target)
            if target.suffix.lower() in (".yaml", ".yml"):
                yamls.append(str(target))
        if not yamls:
            raise FinetuneError("The uploaded files hold no task YAML (.yaml): add the task file next to its data.")
        return ",".join(yamls)

    def benchmark(self, name: str, tasks: str, *, limit=None, checkpoint=None, chat_template=False,
                  progress=None, stop=None):  # fmt: skip
        """lm-eval `tasks` (names, task YAML files or folders, comma-separated) on base and fine-tuned
        (or the checkpoint folder `checkpoint`): a Benchmark, saved in the run folder."""

        run = self._run(name)
        tasks = self._task_paths(tasks)
        with self.studio.lease.hold("running benchmarks"):
            return run_benchmark(run, tasks, limit=limit, checkpoint=checkpoint, chat_template=chat_template,
                                 progress=progress, stop=stop)  # fmt: skip

    def latest_benchmark(self, name: str):
        return latest_benchmark(self._run(name), kind="benchmark")

    def curated_benchmarks(self, name: str | None = None) -> list[dict]:
        """The short list of well-known tasks with their size and, when measured here, their time."""

        config = None
        if name:
            try:
                config = self._run(name).config()
            except FinetuneError:
                config = None
        return curated_rows(self.studio.workspace, config)

    def forgetting_check(self, name: str, *, limit=None, progress=None, stop=None):
        """The built-in general set on base and fine-tuned: kept / lost, next to the run's task metric."""

        run = self._run(name)
        with self.studio.lease.hold("running the forgetting check"):
            return forgetting_check(run, limit=limit, progress=progress, stop=stop)

    def latest_forgetting(self, name: str):
        return latest_check(self._run(name))

    def checkpoint_curve(self, name: str, *, kind: str = "batch", data=None, limit: int = 20, settings=None,
                         tasks: str = "", metric=None, progress=None, stop=None):  # fmt: skip
        """Every saved checkpoint and the final adapter scored as batch evaluation (`kind="batch"`) or on
        lm-eval tasks (`"benchmark"`): a CheckpointCurve with its best point."""

        if kind not in KINDS:
            raise FinetuneError(f"curve kind {kind!r} is not one of: {', '.join(KINDS)}")
        run = self._run(name)
        with self.studio.lease.hold("scoring every checkpoint"):
            if kind == "benchmark":
                return benchmark_curve(run, self._task_paths(tasks), limit=limit, metric=metric, progress=progress,
                                       stop=stop)  # fmt: skip
            return batch_curve(run, data or None, limit=int(limit), settings=settings, metric=metric,
                               progress=progress, stop=stop)  # fmt: skip

    def latest_curve(self, name: str):
        return latest_curve(self._run(name))

    def checkpoints(self, name: str) -> list[str]:
        """Every saved checkpoint of a run that holds an adapter (checkpoint-N, oldest first)."""
        return [s for s in side_choices(self._run(name)) if s.startswith("checkpoint-")]

    def start_ref(self, name: str, point: str) -> str:
        """What `start_from_run` takes to continue from a point of the checkpoint curve: the run for its final
        adapter, `run@step` for a checkpoint (checked: it holds an adapter)."""

        if point in ("final", "finetuned"):
            return self._run(name).name
        resolve_side(self._run(name), point)
        return checkpoint_ref(name, int(point.removeprefix("checkpoint-")))

    def votes_to_preference(self, names: list[str], out=None):
        """The decided blind votes of these runs as a preference JSONL file (ties and both bad left out):
        a VotePairs with the path and the counts."""

        runs = [self._run(n) for n in names if n]
        return votes_to_preference(runs, out, workspace=self.studio.workspace)

    def dpo_config(self, config, name: str, pairs_path) -> Any:
        """`config` made into a DPO run on `pairs_path` that starts from the run `name`'s adapter: its base
        model and method, the preference data, no run name or output folder of the run it came from."""
        source = self._run(name).config()
        return config.replace(
            model_name_or_path=source.model_name_or_path,
            method=source.method,
            quantization=source.quantization,
            objective="dpo",
            start_from_run=name,
            dataset_path=str(pairs_path),
            dataset_format="preference",
            column_mapping={},
            eval_dataset_path="",
            run_name="",
            output_dir="",
        )

    def run_system_prompt(self, name: str) -> str:
        return run_system_prompt(self._run(name))

    def chat(self, name: str, history, text: str, settings) -> Iterator[Any]:
        """One user turn to every side of `history` (a ChatHistory or its dict), streamed: yields the
        ChatHistory as each side's answer grows. An empty system prompt means the run's."""

        run = self._run(name)
        history = history if isinstance(history, ChatHistory) else ChatHistory.from_dict(history)
        if not history.user and not history.system.strip():
            history.system = settings.system_prompt.strip() or run_system_prompt(run)
        with self.studio.lease.hold("chatting"):
            yield from chat_turn(get_comparer(run), history, text, settings)

    @staticmethod
    def benchmark_figure(bench):
        return benchmark_figure(bench)

    @staticmethod
    def curve_figure(curve, metric: str | None = None):
        return curve_figure(curve, metric)

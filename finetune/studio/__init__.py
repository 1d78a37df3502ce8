"""The gradio-free service the web app (`ui/`) and the CLI call for everything they do.

`Studio(workspace)` (or `Studio.open()` to detect the hardware) owns runs and training, the GPU
lease and memory estimates; `studio.data` reads and measures data, `studio.judge` compares and
evaluates, `studio.export` zips, merges and uploads,
`studio.timing` predicts time and cost and keeps each run's predicted-vs-actual record. The value types a caller needs are re-exported
here, so `ui/` imports nothing else from the engine but `finetune.config` and `finetune.errors`.
"""

from finetune.evaluation import Evaluation, PromptGrid
from finetune.evaluation.generation import GenerationSettings
from finetune.incidents import unexpected as _unexpected
from finetune.plan.prediction import format_seconds
from finetune.runs import ACTIVE_STATES, FINAL_STATES, Run, RunSummary
from finetune.studio.core import Studio
from finetune.studio.data import MAP_TARGETS, DataDesk, parse_mapping, resolve_source, row_chat, source_label
from finetune.studio.exporting import ExportDesk, Merged
from finetune.studio.judging import NO_RUN, JudgeDesk
from finetune.studio.lease import GpuLease
from finetune.studio.rewards import RewardDesk
from finetune.studio.timing import Prediction, PricePreset, TimingDesk


def describe_unexpected(exc: BaseException, action: str = "") -> str:
    """One line for an unexpected error in the app (a bug): its traceback goes to <workspace>/logs/errors.log,
    the line names the error and where the details are, relative to the workspace (finetune.incidents)."""
    return _unexpected(exc, action, hide_paths=True)


__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "MAP_TARGETS",
    "NO_RUN",
    "DataDesk",
    "Evaluation",
    "ExportDesk",
    "GenerationSettings",
    "GpuLease",
    "JudgeDesk",
    "Merged",
    "Prediction",
    "PricePreset",
    "PromptGrid",
    "RewardDesk",
    "Run",
    "RunSummary",
    "Studio",
    "TimingDesk",
    "describe_unexpected",
    "parse_mapping",
    "resolve_source",
    "row_chat",
    "format_seconds",
    "source_label",
]

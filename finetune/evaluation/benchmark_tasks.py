"""Which lm-eval tasks a benchmark runs: the built-in general set, task YAML files or folders, and
lm-eval's registered tasks by name; and whether each needs the Hugging Face Hub.

`resolve_tasks("finetune_general,arc_easy")` or `resolve_tasks("my_tasks/qa.yaml")` gives one
`TaskSpec` per task, checked before any model is loaded: unknown names (with close matches), files
that hold no task, and tasks whose data lives on the Hub while this machine is offline are refused
with one message naming them all. Our own YAML files (no `!function`, no `include`) are read here and
handed to lm-eval as a config dict, with relative `data_files` read from the YAML's folder; others
go to lm-eval as their path (it resolves their functions; relative paths are then its own: the
working directory).

`CURATED` is the short list the Test tab offers, with each task's size (questions and requests)
so the time on this machine can be worked out from a measured speed (see benchmark_speed.py).
"""

from __future__ import annotations

import difflib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.errors import shown
from finetune.evaluation.common import EvaluationError
from finetune.offline import hub_offline, hub_reachable

TASKS_DIR = Path(__file__).parent / "tasks"
BUILTIN_TASK = "finetune_general"
BUILTIN_YAML = TASKS_DIR / "finetune_general.yaml"
LOCAL_BUILDERS = ("json", "csv", "parquet", "text", "arrow")  # datasets' builders that read local files
YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class CuratedTask:
    """A well-known benchmark: `docs` questions, `requests` model calls (log-likelihood requests for
    multiple choice: one per choice; generations: one per question, up to `max_tokens` tokens each)."""

    name: str
    label: str
    what: str
    kind: str  # multiple_choice | generate_until
    docs: int
    requests: int
    dataset: str
    max_tokens: int = 0


# sizes: the tasks' own splits as lm-eval 0.4.13 defines them; requests = docs x 4 choices where every question
# has four (ARC-Easy: most have four), 0 where the number of choices varies (not estimated)
CURATED = (
    CuratedTask(BUILTIN_TASK, "Built-in general set", "60 general questions of our own",
                "multiple_choice", 60, 240, "finetune/evaluation/tasks (local)"),
    CuratedTask("mmlu", "MMLU", "57 subjects, 4 choices", "multiple_choice", 14042, 56168, "cais/mmlu"),
    CuratedTask("arc_easy", "ARC-Easy", "grade-school science, ~4 choices", "multiple_choice", 2376, 9504,
                "allenai/ai2_arc"),
    CuratedTask("hellaswag", "HellaSwag", "commonsense sentence endings, 4 choices", "multiple_choice", 10042,
                40168, "Rowan/hellaswag"),
    CuratedTask("gsm8k", "GSM8K", "grade-school math word problems, 5-shot, generated", "generate_until", 1319,
                1319, "openai/gsm8k", max_tokens=256),
    CuratedTask("ifeval", "IFEval", "verifiable instructions, generated", "generate_until", 541, 541,
                "google/IFEval", max_tokens=1280),
    CuratedTask("truthfulqa_mc2", "TruthfulQA (MC2)", "truthfulness, a varying number of choices",
                "multiple_choice", 817, 0, "truthfulqa/truthful_qa"),
)  # fmt: skip


@dataclass
class TaskSpec:
    """One task to run: `spec` is what lm-eval gets (a registered name, a YAML path or a config dict)."""

    name: str
    spec: Any
    source: str  # built-in | file | lm-eval
    dataset: str = ""  # the Hub dataset it reads, "" when local
    include_path: str | None = None  # a folder lm-eval must index to find `spec`
    notes: list[str] = field(default_factory=list)


# --- YAML files ---------------------------------------------------------------------------
class _PlainLoader:
    """A yaml SafeLoader that notes `!function` tags instead of failing on them."""

    @staticmethod
    def load(text: str) -> tuple[Any, bool]:
        import yaml

        class Loader(yaml.SafeLoader):
            pass

        found = []

        def function(loader, node):
            found.append(loader.construct_scalar(node))
            return None

        Loader.add_constructor("!function", function)
        return yaml.load(text, Loader=Loader), bool(found)  # noqa: S506 - a SafeLoader subclass


def _read_yaml(path: Path) -> tuple[dict, bool]:
    try:
        data, has_functions = _PlainLoader.load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EvaluationError(f"cannot read the task file {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # a YAML syntax error
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EvaluationError(f"the task file {path} is not valid YAML: {first}") from None
    if not isinstance(data, dict):
        raise EvaluationError(f"the task file {path} holds no task: expected a mapping with a `task:` name")
    return data, has_functions


def _absolute_data_files(data_files: Any, folder: Path) -> Any:
    """Relative local paths in `data_files` (a str, list or split -> path(s) mapping) made absolute
    against `folder`; URLs and absolute paths are kept."""
    if isinstance(data_files, dict):
        return {k: _absolute_data_files(v, folder) for k, v in data_files.items()}
    if isinstance(data_files, list):
        return [_absolute_data_files(v, folder) for v in data_files]
    if isinstance(data_files, str) and "://" not in data_files and not Path(data_files).expanduser().is_absolute():
        return str((folder / data_files).resolve())
    return data_files


def _local_files_missing(data_files: Any) -> list[str]:
    values = data_files.values() if isinstance(data_files, dict) else [data_files]
    paths = [p for v in values for p in (v if isinstance(v, list) else [v]) if isinstance(p, str)]
    return [p for p in paths if "://" not in p and not any(c in p for c in "*?[") and not Path(p).exists()]


def task_from_yaml(path: Path, source: str = "file") -> TaskSpec:
    """A TaskSpec from one task YAML file (checked: a `task:` name, its local data files present)."""
    data, has_functions = _read_yaml(path)
    name = data.get("task")
    if not isinstance(name, str) or not name.strip():
        what = "a group file (`group:`), which this app does not run" if "group" in data else "no `task:` name"
        raise EvaluationError(f"the task file {path} holds {what}; give a file with `task: <name>`")
    dataset = str(data.get("dataset_path") or "")
    local = dataset in LOCAL_BUILDERS or Path(dataset).expanduser().is_dir()
    if has_functions or "include" in data:  # lm-eval resolves these itself, from the file's folder
        return TaskSpec(name, str(path), source, "" if local else dataset, include_path=str(path.parent))
    config = dict(data)
    kwargs = dict(config.get("dataset_kwargs") or {})
    if "data_files" in kwargs:
        kwargs["data_files"] = _absolute_data_files(kwargs["data_files"], path.parent)
        missing = _local_files_missing(kwargs["data_files"])
        if missing:
            raise EvaluationError(
                f"the task {name} ({path.name}) reads {', '.join(missing[:3])}, which does not exist "
                "(relative paths are read from the YAML file's folder)"
            )
        config["dataset_kwargs"] = kwargs
    if Path(dataset).expanduser().is_dir() and not Path(dataset).is_absolute():
        config["dataset_path"] = str((path.parent / dataset).resolve())
    return TaskSpec(name, config, source, "" if local else dataset)


def tasks_in_folder(folder: Path) -> list[TaskSpec]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in YAML_SUFFIXES and p.is_file())
    specs = []
    for path in files:
        data, _ = _read_yaml(path)
        if isinstance(data.get("task"), str):
            specs.append(task_from_yaml(path))
    if not specs:
        raise EvaluationError(f"the folder {folder} holds no task YAML (a .yaml file with `task: <name>`)")
    return specs


# --- lm-eval's registry -------------------------------------------------------------------
_registry_lock = threading.Lock()
_registry = None


def registry():
    """lm-eval's TaskManager over its own tasks, built once per process (indexing takes seconds)."""
    global _registry
    with _registry_lock:
        if _registry is None:
            from lm_eval.tasks import TaskManager

            _registry = TaskManager()
        return _registry


def _hub_datasets(manager: Any, name: str, depth: int = 0) -> set[str]:
    """The Hub datasets a registered task (or group, or tag) reads; {"?"} when it cannot be told."""
    entry = manager.task_index.get(name)
    if entry is None or depth > 4:
        return {"?"}
    cfg = entry.cfg or {}
    if cfg.get("dataset_path"):
        path = str(cfg["dataset_path"])
        return set() if path in LOCAL_BUILDERS else {path}
    children = cfg.get("task") if isinstance(cfg.get("task"), list) else []
    if not children:  # a tag: the tasks that carry it
        children = [n for n, e in manager.task_index.items() if name in (getattr(e, "tags", None) or ())][:5]
    found: set[str] = set()
    for child in children[:5]:  # one group's subtasks share their dataset: a few tell it
        key = child.get("task") if isinstance(child, dict) else child
        if isinstance(key, str):
            found |= _hub_datasets(manager, key, depth + 1)
    return found or {"?"}


def registered_task(name: str) -> TaskSpec:
    manager = registry()
    if name not in manager.task_index:
        close = difflib.get_close_matches(name, manager.all_tasks, n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise EvaluationError(
            f"{shown(name)} is not an lm-eval task{hint}; give a task name, a task YAML file or a folder of them"
        )
    datasets = sorted(d for d in _hub_datasets(manager, name) if d)
    return TaskSpec(name, name, "lm-eval", ", ".join(datasets))


# --- the Hub ------------------------------------------------------------------------------
def dataset_cached(dataset: str) -> bool:
    """Is a Hub dataset in the local caches (datasets' or the hub's), so it loads offline?"""
    import os

    from huggingface_hub import constants

    if not dataset or dataset == "?":
        return False
    hub = Path(constants.HF_HUB_CACHE) / f"datasets--{dataset.replace('/', '--')}"
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE") or Path(constants.HF_HOME) / "datasets")
    return hub.is_dir() or (datasets_cache / dataset.replace("/", "___")).is_dir()


def check_hub(specs: list[TaskSpec]) -> None:
    """Refuse tasks that need the Hub when it cannot be reached and their data is not cached."""

    remote = [s for s in specs if s.dataset and not all(dataset_cached(d) for d in s.dataset.split(", "))]
    if not remote:
        return
    offline = hub_offline(datasets=True)
    if not offline and hub_reachable():
        return
    why = "HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set" if offline else "the Hugging Face Hub cannot be reached"
    names = "; ".join(f"{s.name} (dataset {s.dataset if s.dataset != '?' else 'unknown'})" for s in remote)
    raise EvaluationError(
        f"These tasks need the Hugging Face Hub to download their data, and {why}: {names}. Run them on a "
        f"machine with Hub access (the data is cached for later offline runs), or use local tasks: the built-in "
        f"{BUILTIN_TASK} or a task YAML over a local file (dataset_path: json, dataset_kwargs.data_files)."
    )


# --- the one entry point ------------------------------------------------------------------
def builtin_task() -> TaskSpec:
    return task_from_yaml(BUILTIN_YAML, source="built-in")


def resolve_tasks(tasks: str | list[str], *, check_hub_access: bool = True) -> list[TaskSpec]:
    """TaskSpecs for a comma-separated list (or a list) of task names, YAML files and folders."""
    items = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if str(t).strip()]
    if not items:
        raise EvaluationError(f"name at least one task: e.g. {BUILTIN_TASK}, arc_easy, or a task YAML file")
    specs: list[TaskSpec] = []
    problems: list[str] = []
    for item in items:
        path = Path(item).expanduser()
        try:
            if item == BUILTIN_TASK:
                specs.append(builtin_task())
            elif path.is_dir():
                specs += tasks_in_folder(path)
            elif path.suffix.lower() in YAML_SUFFIXES or "/" in item or "\\" in item:
                if not path.is_file():
                    raise EvaluationError(f"no task file at {shown(item)}")
                specs.append(task_from_yaml(path))
            else:
                specs.append(registered_task(item))
        except EvaluationError as exc:
            problems.append(str(exc))
    names = [s.name for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        problems.append(f"the task(s) {', '.join(twice)} are named more than once")
    if len(problems) == 1:
        raise EvaluationError(problems[0])
    if problems:
        raise EvaluationError("These tasks cannot be run:\n" + "\n".join(f"- {p}" for p in problems))
    if check_hub_access:
        check_hub(specs)
    return specs

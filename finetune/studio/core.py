"""`Studio`: the one gradio-free service the web app and the CLI call for everything they do.

A Studio is bound to one workspace and the machine it runs on (detected once). It starts, resumes
and stops training, reports the progress of any run the same way whether it trains in this process
or only exists on disk, lists/renames/deletes runs, estimates memory, and holds the one rule that a
single model is in (GPU) memory at a time: the `gpu` lease, taken by everything that loads a model.
Data inspection lives in `studio.data`, judging in `studio.judge`, export in `studio.export`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from finetune.config import RunConfig
from finetune.data.prepare import split_train_val
from finetune.demo import SAMPLE_PREFERENCE_DATASET
from finetune.errors import BusyError, ConfigError, FinetuneError, RunError
from finetune.evaluation.compare import cached_comparer
from finetune.incidents import use_workspace
from finetune.launch_commands import explicit_data_path, train_command_lines
from finetune.models import resolve_model_path
from finetune.names import public_text, safe_name
from finetune.paths import check_model_path, model_bytes_on_disk, open_workspace_run, tokenizer_bytes_on_disk
from finetune.plan.checkpoints import checkpoint_plan
from finetune.plan.hardware import Machine, detect_hardware, detect_machine
from finetune.plan.planner import estimate
from finetune.presets import apply_preset, list_presets, suggest_preset
from finetune.runs import (
    ACTIVE_STATES,
    FINAL_STATES,
    Run,
    RunSummary,
    delete_run,
    list_runs,
    open_run,
    rename_run,
    workspace_dir,
)
from finetune.studio.data import DataDesk
from finetune.studio.exporting import ExportDesk
from finetune.studio.judging import JudgeDesk
from finetune.studio.lease import GpuLease
from finetune.studio.rewards import RewardDesk
from finetune.studio.timing import TimingDesk
from finetune.train import registry
from finetune.train.preference import start_adapter_settings

RESUMABLE_STATES = tuple(state for state in FINAL_STATES if state != "done")


class Studio:
    """Everything the app and the CLI do, for one workspace."""

    def __init__(
        self, workspace: str | Path | None = None, *, machine: Any = None, hardware: Any = None, restrict_paths=True
    ):
        """`restrict_paths` (the web app): typed model, data and run paths must lie in the allowed places
        (finetune.paths) and runs are named, never given as folders; the CLI passes False."""

        self.workspace = workspace_dir(workspace)
        self.restrict_paths = restrict_paths

        use_workspace(self.workspace)  # unexpected errors are detailed in <workspace>/logs/errors.log
        self.hardware = hardware  # finetune.plan.hardware.HardwareInfo, None when detection failed
        self.machine = machine  # finetune.plan.hardware.Machine the planner decides for
        self.hardware_error = ""
        self.suggested_preset: str | None = None
        self.lease = GpuLease()
        self.data = DataDesk(self.workspace, restrict_paths=restrict_paths)
        self.judge = JudgeDesk(self)
        self.export = ExportDesk(self)

        self.rewards = RewardDesk(self)  # GRPO: reward functions, custom-code permission, sampled completions
        self.timing = TimingDesk(self)  # time and cost before Start, predicted vs actual, trackers, prices
        self._lock = threading.Lock()
        self._runs: dict[str, Run] = {}  # runs not trained here, opened once and re-read while active
        self._estimates: OrderedDict[str, Any] = OrderedDict()

    @classmethod
    def open(cls, workspace: str | Path | None = None, *, restrict_paths: bool = True) -> Studio:
        """A Studio on this machine: hardware detected once, the preset that fits it suggested.
        Detection failing leaves the studio usable (CPU defaults) with `hardware_error` set."""
        studio = cls(workspace, restrict_paths=restrict_paths)
        try:
            studio.hardware = detect_hardware()
            studio.machine = detect_machine(studio.hardware)
        except Exception as exc:
            studio.hardware_error = f"{type(exc).__name__}: {exc}"
        try:
            studio.suggested_preset = suggest_preset(studio.hardware) if studio.hardware is not None else None
        except Exception as exc:
            studio.hardware_error = studio.hardware_error or f"{type(exc).__name__}: {exc}"
        return studio

    # configs and presets ---------------------------------------------------------------
    def base_config(self) -> RunConfig:
        """What a new page's form starts from: RunConfig's defaults under the suggested preset."""
        try:
            return self.apply_preset(RunConfig(), self.suggested_preset) if self.suggested_preset else RunConfig()
        except FinetuneError:
            return RunConfig()

    @staticmethod
    def presets() -> list:
        return list_presets()

    @staticmethod
    def apply_preset(config: RunConfig, name: str) -> RunConfig:
        return apply_preset(config, name)

    def train_command(self, config: RunConfig, preset: str | None = None) -> str:
        """The command lines of `config`; for several GPUs with strategy auto, the strategy the plan picks."""

        strategy = None
        if config.num_gpus > 1 and config.strategy == "auto":
            try:
                strategy = self.estimate(config).plan.strategy
            except Exception:  # no estimate (an unknown model offline): the command says ddp
                strategy = None
        return train_command_lines(config, preset, strategy=strategy)

    def save_config(self, config: RunConfig) -> Path:
        """Write `config` as YAML to <workspace>/configs/<name>-<time>.yaml (the sample data by its path)."""
        import time

        name = safe_name(config.run_name or config.model_name_or_path.split("/")[-1])
        path = self.workspace / "configs" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        config.replace(dataset_path=explicit_data_path(config)).to_yaml(path)
        return path

    # hardware and memory -----------------------------------------------------------------
    @property
    def device(self) -> str:
        return str(getattr(self.machine, "device", "") or getattr(self.hardware, "device", "") or "cpu")

    def capacity_gb(self) -> float | None:
        """The memory a run must fit in: the first GPU's, else system RAM (None when unknown)."""
        if self.device != "cpu":
            return float(getattr(self.hardware, "accelerator_gb", 0.0) or 0.0) or None
        return float(getattr(self.hardware, "ram_gb", 0.0) or 0.0) or None

    def estimate(self, config: RunConfig):
        """The plan a run of `config` would train with on this machine, and its memory estimate
        (a MemoryEstimate with `.plan`), cached per config."""

        if self.restrict_paths:  # a typed local folder: allowed places only
            check_model_path(config.model_name_or_path, self.workspace)
        key = f"{self.device}\n{config.to_yaml()}"
        with self._lock:
            cached = self._estimates.get(key)
        if cached is not None:
            return cached
        machine = self.machine or Machine.virtual(self.device, self.capacity_gb() or 0.0)
        model = resolve_model_path(config.model_name_or_path, self.workspace)  # the demo lives in the workspace
        result = estimate(self.trained_config(config), machine, model=model)[1]
        with self._lock:
            self._estimates[key] = result
            while len(self._estimates) > 64:
                self._estimates.popitem(last=False)
        return result

    def trained_config(self, config: RunConfig) -> RunConfig:
        """`config` as training will see it: with `start_from_run`, the starting adapter's rank, alpha and
        targets (the run trains that adapter on; its own lora_* do not apply). A start that cannot be used is
        left as it is here: Start refuses it with the reason."""
        if not config.start_from_run.strip() or config.method == "full":
            return config

        try:
            return config.replace(**start_adapter_settings(config, self.workspace))
        except FinetuneError:
            return config

    def checkpoint_plan(self, config: RunConfig):
        """How many checkpoints a run of `config` saves and keeps, at which steps and their size on disk
        (finetune.plan.checkpoints); the row count comes from the data when it is a local file."""

        train_rows, has_eval = None, config.val_split > 0 or bool(config.eval_dataset_path)
        source = config.dataset_path or (str(SAMPLE_PREFERENCE_DATASET) if config.is_preference else "")
        if config.max_steps <= 0 and not self.data.is_hub_dataset(source):
            try:
                rows = self.data.report(source, config.dataset_format, dict(config.column_mapping or {})).rows
                split = rows if config.eval_dataset_path else split_train_val(rows, config.val_split, config.seed)[0]
                train_rows = len(split)
            except FinetuneError:
                train_rows = None
        try:
            model = resolve_model_path(config.model_name_or_path, self.workspace)
        except FinetuneError:
            model = None
        model_bytes = model_bytes_on_disk(model) if model else None
        return checkpoint_plan(config, train_rows=train_rows, model_bytes=model_bytes,
                               tokenizer_bytes=tokenizer_bytes_on_disk(model), has_eval=has_eval)  # fmt: skip

    def checkpoints_line(self, config: RunConfig) -> str:
        """`checkpoint_plan(config).line()`, or why it cannot be told (never raises: the Model tab shows it)."""
        try:
            return self.checkpoint_plan(config).line()
        except Exception as exc:  # noqa: BLE001 - e.g. an unreadable model folder: say so, keep the tab working
            return f"Checkpoints: cannot be worked out ({type(exc).__name__}: {str(exc)[:200]})."

    # runs --------------------------------------------------------------------------------
    def runs(self) -> list[RunSummary]:
        """Every run of the workspace, newest first."""
        return list_runs(self.workspace)

    def run_names(self, with_adapter: bool = False) -> list[str]:
        try:
            return [r.name for r in self.runs() if r.has_adapter or not with_adapter]
        except FinetuneError:
            return []

    def run(self, name: Any) -> Run:
        """A run of this workspace by its name (restricted: never a typed path; else a run folder too).
        A run training in this process comes with the trainer's own Run (its metrics buffer); others
        are opened once."""
        if not self.restrict_paths and isinstance(name, (str, Path)) and str(name).strip():
            job = registry.get_job(str(name))  # a run training here, wherever its folder is (an output_dir)
            if job is not None:
                return job.run
            run = open_run(name, self.workspace)
            job = registry.get_job(run.name)
            return job.run if job is not None and job.run.path == run.path else run
        if not isinstance(name, str) or not name.strip():
            raise RunError("Pick a run first.")
        job = registry.get_job(name)
        if job is not None and job.run.path.resolve() == (self.workspace / "runs" / name).resolve():  # not a namesake
            return job.run
        with self._lock:
            run = self._runs.get(name)
        if run is None or not run.exists():
            run = open_workspace_run(name, self.workspace)
            with self._lock:
                self._runs[name] = run
        return run

    def training_now(self) -> str | None:
        """The name of the run training in this process, if any."""
        job = registry.current_job()
        return job.run.name if job is not None else None

    def progress(self, name: str) -> dict[str, Any]:
        """state, message, step, total_steps, fraction, eta, tokens_per_s, elapsed, run: live from the
        job when it trains here, else from its status.json (new metrics of a run another process
        writes are re-read). `resumable` says whether Resume could continue it."""
        run = self.run(name)
        job = registry.get_job(name)
        live = job.progress() if job is not None else None
        if live is not None and (job.is_alive() or live.get("state") in ACTIVE_STATES):
            p = live
        else:
            p = run.progress()
            if live is not None and p["state"] in (*ACTIVE_STATES, "unknown"):
                # the job ended here but its final state never reached the disk (a read-only disk, the
                # folder deleted): what it knows is the truth, not the status it last managed to write
                p = live
            elif p["state"] in ACTIVE_STATES:
                run.reload_metrics()  # another process (or host) is writing this run
        # a finished run has nothing left to train; the others continue from their last checkpoint
        p["resumable"] = p.get("state") in RESUMABLE_STATES and run.latest_checkpoint() is not None
        return p

    def start(self, config: RunConfig) -> Run:
        """Start training `config` in the background (checked first: a refused start leaves nothing)."""
        from finetune.train.start import start_training  # transformers (seconds): the page and the CLI load without it

        self.rewards.check_allowed(config)  # a custom reward file runs code: the app only when its host allowed it
        with self.lease.locked("starting a run"), self._public_errors():
            self.lease.free_memory()
            return start_training(config, workspace=self.workspace, restrict_paths=self.restrict_paths).run

    def resume(self, name: str, overrides: list[str] | None = None) -> Run:
        """Continue a stopped, failed or interrupted run from its last checkpoint."""
        from finetune.train.start import start_training  # transformers, as in start

        run = self.run(name)
        with self._public_errors():
            config = run.config().with_overrides(overrides or [])
        self.rewards.check_allowed(config)
        with self.lease.locked("resuming a run"), self._public_errors():
            self.lease.free_memory()
            return start_training(config, workspace=self.workspace, resume_run=run).run

    @contextmanager
    def _public_errors(self) -> Iterator[None]:
        """In the app (restrict_paths), a refusal never shows the server's folders or an upload's stored
        name (finetune.names.public_text); the CLI sees the paths it was given."""
        try:
            yield
        except FinetuneError as exc:
            if not self.restrict_paths:
                raise
            if isinstance(exc, ConfigError):
                raise ConfigError([public_text(p, self.workspace) for p in exc.problems]) from None
            text = public_text(str(exc), self.workspace)
            if text == str(exc):
                raise
            try:
                public = type(exc)(text)
            except TypeError:  # an error type with another signature: the message as a plain error
                public = FinetuneError(text)
            raise public from None

    def stop(self, reason: str = "the user", wait_s: float | None = None) -> str | None:
        """Ask the run training here to stop after its current step (a checkpoint is saved), waiting up
        to `wait_s` for it to finish; returns its name (None when nothing trains)."""
        job = registry.current_job()
        if job is None:
            return None
        job.stop(reason)
        if wait_s:
            job.wait(wait_s)
        return job.run.name

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` for the run training here to end; True when nothing trains any more."""
        job = registry.current_job()
        if job is not None:
            job.wait(timeout)
        return self.training_now() is None

    def rename(self, name: str, new_name: str) -> Run:
        """Rename a finished run (its folder); refused while it trains or when the name is taken."""
        self._refuse_active(name, "renamed")
        run = rename_run(self.run(name), new_name)
        registry.forget_job(name)  # the name is free again: a later run of it is not this one
        with self._lock:
            self._runs.pop(name, None)
        return run

    def delete(self, name: str) -> None:
        """Delete a run folder and everything in it (adapter, checkpoints, exports); not while it trains."""

        self._refuse_active(name, "deleted")

        cached = cached_comparer()
        if cached is not None and cached.run.name == name:
            self.lease.free_memory()
        delete_run(self.run(name))
        registry.forget_job(name)
        with self._lock:
            self._runs.pop(name, None)

    def _refuse_active(self, name: str, what: str) -> None:
        state = self.progress(name).get("state")
        if state in ACTIVE_STATES:
            raise BusyError(f"The run '{name}' is {state}: it cannot be {what} until it has finished or stopped.")

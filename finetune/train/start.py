"""Starting a training job: every check before anything is made (the config, the machine, the paths, the
data, a resumed run's checkpoint and whether another process still writes it), then the run folder (new, or
the resumed one cut back to its checkpoint) and the job in its background thread. One start at a time
(finetune.train.registry.LOCK)."""

from __future__ import annotations

import json
from pathlib import Path

from finetune.config import RunConfig
from finetune.data.prepare import prepare_data
from finetune.errors import BusyError, ConfigError, RunError
from finetune.files import write_text_atomic
from finetune.models import (
    check_runnable,
    resolve_model_path,
)
from finetune.paths import check_config_paths, check_disk_space
from finetune.plan.hardware import detect_machine
from finetune.runs import Run, check_run_folder, create_run, runs_dir, workspace_dir
from finetune.train import registry
from finetune.train.completions import prune_samples
from finetune.train.distributed import is_main_process, shared_run
from finetune.train.job import TrainingJob
from finetune.train.prechecks import local_tokenizer, lora_target_match_problems, token_budget_problems
from finetune.train.preference import (
    start_adapter_dir,
)
from finetune.train.rewards import check_rewards
from finetune.train.trackers import missing


def start_training(
    config: RunConfig,
    *,
    workspace: str | Path | None = None,
    resume_run: Run | None = None,
    restrict_paths: bool = False,
) -> TrainingJob:
    """Validate, create (or reopen) the run folder and start training in the background.

    `restrict_paths=True` (the web app): the model folder, data files and output_dir must lie in
    the allowed places (finetune.paths). Every caller gets the free disk space checked first."""
    with registry.LOCK:
        running = registry.current_job()
        if running is not None:
            raise BusyError(
                f"Busy: the run '{running.run.name}' is {running.state} in this process. "
                "Stop it or wait for it to finish before starting another."
            )

        problems = config.validate() + check_runnable(config, detect_machine())
        tracker = missing(config.report_to)  # a tracker's package that is not installed
        problems += [tracker] if tracker else []
        if problems:
            raise ConfigError(problems)
        if restrict_paths:
            check_config_paths(config, workspace_dir(workspace))
        check_usable(config, workspace, resume_run)
        resume_from = None
        if resume_run is not None:
            run = resume_run
            live = run.live_elsewhere()
            if live:
                raise RunError(
                    f"The run '{run.name}' is still {live}: resuming it here would train it twice into one "
                    "folder. Stop it there, or wait until its heartbeat stops (then it reads as interrupted)."
                )
            check_resumable(run)
            resume_from, note = resumable_checkpoint(run)
            if is_main_process():
                truncate_metrics(run, int(resume_from.name.split("-")[-1]))
                config.to_yaml(run.config_path)
            else:
                run = Run(run.path, read_only=True)
        else:
            run = shared_run(lambda: create_run(config, workspace))
        job = TrainingJob(config, run, workspace, resume_from)
        if resume_run is not None and note:
            job.notes.append(note)
            run.log(note)
        registry.register(job)
        return job.start()


def resumable_checkpoint(run: Run) -> tuple[Path, str]:
    """The newest intact checkpoint of `run` and, when newer ones are damaged, a note saying which and
    why; RunError naming every damaged file when none is intact."""
    damaged = run.damaged_checkpoints()
    latest = run.latest_checkpoint()
    why = "; ".join(f"{path.name}: {problems[0]}" for path, problems in damaged[:3])
    if latest is None:
        if not damaged:
            raise RunError(f"The run '{run.name}' has no checkpoint to resume from (checkpoints/ is empty).")
        raise RunError(
            f"The run '{run.name}' has no intact checkpoint to resume from ({why}). Its adapter, if saved, is "
            "still usable; start a new run to train further."
        )
    if not damaged:
        return latest, ""
    names = ", ".join(path.name for path, _ in damaged)
    return latest, f"Resumed from {latest.name}, the newest intact checkpoint: {names} cannot be read ({why})."


def check_resumable(run: Run) -> None:
    """A run whose model transformers sharded as it loaded (FSDP on CPU) saved model-only checkpoints:
    there is no optimizer state to resume from."""
    try:
        plan = json.loads(run.plan_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(plan, dict) and plan.get("shard_at_load"):
        raise RunError(
            f"The run '{run.name}' was sharded by transformers as it loaded (FSDP on CPU), whose checkpoints hold "
            "the model only, without the optimizer state: it cannot be resumed. Start a new run instead."
        )


def check_usable(config: RunConfig, workspace: str | Path | None, resume_run: Run | None) -> None:
    """Refuse before any run folder is made: a model name that names no model, data with no usable
    row (read, detected and split exactly as the job will), a folder where a run may not live, a
    disk that cannot take the adapter and checkpoints. A Hub model is only fetched by the job."""

    model_path = resolve_model_path(config.model_name_or_path, workspace)
    problems = lora_target_match_problems(config, model_path)
    data = prepare_data(config)  # no tokenizer: reading and validating only, no token statistics
    if config.objective == "grpo":  # the reward functions load (a custom file too) and find the columns they read
        check_rewards(config, data.report)
    problems += token_budget_problems(config, data.train_rows, local_tokenizer(config, model_path))
    if problems:
        raise ConfigError(problems)
    if config.start_from_run.strip():
        start_adapter_dir(config, workspace)
    if resume_run is not None:
        target = resume_run.path
    elif config.output_dir:
        target = check_run_folder(config.output_dir, workspace, config.run_name)
    else:
        target = runs_dir(workspace)
    check_disk_space(config, target, model_path)


def truncate_metrics(run: Run, last_step: int) -> None:
    """Before a resume: keep only metrics up to the checkpoint, so replayed steps are not doubled."""
    kept = [m for m in run.metrics() if m.get("step", 0) <= last_step]
    write_text_atomic(run.metrics_path, "".join(json.dumps(m) + "\n" for m in kept))
    run.reload_metrics()

    prune_samples(run.path, last_step)  # GRPO's sampled completions of the steps to be redone

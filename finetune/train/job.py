"""The training job: TRL's SFTTrainer with PEFT, run in a background thread.

Flow (torchtune-style, explicit): setup (data, tokenizer, model, trainer) -> train -> save
-> cleanup. The thread and its readers meet at the job's `Run`: a lock-guarded metrics
buffer mirrored to metrics.jsonl, and a stop Event that a TrainerCallback checks every step.
One job runs per process; a second start is answered with BusyError.
"""

from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path
from typing import Any

from finetune.config import RunConfig
from finetune.data.prepare import prepare_data
from finetune.data.stats import token_lengths
from finetune.errors import FinetuneError
from finetune.incidents import record
from finetune.models import (
    load_model,
    load_tokenizer,
    release_memory,
    resolve_model_path,
    save_tokenizer_for_serving,
)
from finetune.plan.calibration import cached, refine
from finetune.plan.hardware import detect_machine
from finetune.plan.planner import make_plan
from finetune.plan.shapes import load_shape
from finetune.runs import HEARTBEAT_EVERY_S, Run, workspace_dir
from finetune.train.callbacks import RunCallback, StopDuringEvaluation, StopRequested
from finetune.train.failures import explain_failure
from finetune.train.grpo import build_grpo_config, build_grpo_trainer
from finetune.train.preference import (
    build_preference_config,
    build_preference_trainer,
    load_start_adapter,
    start_adapter_dir,
)
from finetune.train.sft import build_sft_config, build_trainer, choose_loss_mode
from finetune.train.timing import HardwareMeter, actual_record, comparison, predict, read_record, write_record
from finetune.train.trackers import configure, tracker_environment, where_callback


class TrainingJob:
    """A run being trained in a background thread. Read `state`, `progress()`; call `stop()`."""

    def __init__(self, config: RunConfig, run: Run, workspace: str | Path | None, resume_from: Path | None):
        self.config = config
        self.run = run
        self.workspace = workspace
        self.resume_from = resume_from
        self.stop_event = threading.Event()
        self.stop_reason = "the user"
        self.nan_step: int | None = None
        self.notes: list[str] = []  # said in the final message too (e.g. a damaged checkpoint was skipped)
        self.plan = None  # the finetune.plan.planner.Plan this run trains with, once setup has made it
        self.estimate = None  # the finetune.plan.prediction.TimeEstimate it started with, when there is one
        self.state = "queued"
        self.message = "Waiting to start"
        self._lock = threading.Lock()
        self._progress: dict[str, Any] = {"step": 0, "total_steps": 0, "epoch": 0.0, "tokens_per_s": None}
        self._started = time.time()
        # a resumed run's clock goes on: the time of its earlier sessions (status.json `elapsed_s`)
        self._elapsed_before = run.progress().get("elapsed") or 0.0 if resume_from else 0.0
        self._train_started: float | None = None
        self._train_start_step = 0
        self._thread = threading.Thread(target=self._main, name=f"train-{run.name}", daemon=True)
        self._ended = threading.Event()

    # public -----------------------------------------------------------------
    def start(self) -> TrainingJob:
        self._thread.start()
        return self

    def stop(self, reason: str = "the user") -> None:
        """Graceful stop: at the next step boundary, saving a checkpoint of that step and the adapter.
        `reason` names who asked, for the final message (e.g. "SIGTERM")."""
        if self.is_alive() and not self.stop_event.is_set():
            self.stop_reason = reason
            self.stop_event.set()
            self.report(message="Stop requested: finishing the current step")

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> str:
        self._thread.join(timeout)
        return self.state

    def progress(self) -> dict[str, Any]:
        """state, message, step, total_steps, epoch, elapsed, eta (s), tokens_per_s, fraction."""
        with self._lock:
            p = dict(self._progress, state=self.state, message=self.message, run=self.run.name)
        p["elapsed"] = self.elapsed()
        step, total = p.get("step") or 0, p.get("total_steps") or 0
        p["fraction"] = min(step / total, 1.0) if total else 0.0
        p["eta"] = None
        if self._train_started and total and step > self._train_start_step:
            rate = (time.time() - self._train_started) / (step - self._train_start_step)
            p["eta"] = rate * (total - step)
        return p

    def elapsed(self) -> float:
        """Seconds this run has spent in the job so far, over all its sessions (resumes add up)."""
        return self._elapsed_before + (time.time() - self._started)

    # internals ---------------------------------------------------------------
    def report(
        self, state: str | None = None, message: str | None = None, persist: bool = False, **fields: Any
    ) -> None:
        """Change the in-memory progress; status.json is rewritten on phase changes and at each log."""
        with self._lock:
            if state is not None:
                self.state = state
                if state == "training" and self._train_started is None and "step" in fields:
                    # the ETA's origin is on_train_begin's step: a resumed run starts at its checkpoint
                    self._train_started = time.time()
                    self._train_start_step = fields["step"]
            if message is not None:
                self.message = message
            self._progress.update(fields)
            snapshot = dict(self._progress)
        if persist or state is not None or message is not None:
            try:
                self.run.write_status(
                    self.state,
                    self.message,
                    elapsed_s=round(self.elapsed(), 1),
                    **{k: v for k, v in snapshot.items() if k != "tokens_per_s"},
                )
            except OSError as exc:  # a full disk: the state stays in memory, the failure is reported once
                if state in ("failed", "stopped", "done"):
                    self.message = f"{self.message} (status.json could not be updated: {exc.strerror or exc})"

    def _beat(self) -> None:
        """heartbeat.json every HEARTBEAT_EVERY_S while the job runs: how the app on another host
        (shared storage) tells a live run from an interrupted one."""
        while True:
            self.run.beat()
            if self._ended.wait(HEARTBEAT_EVERY_S):
                return

    def _check_stop(self) -> None:
        if self.stop_event.is_set():
            raise StopRequested

    def _main(self) -> None:
        import torch

        trainer = model = None
        threads = torch.get_num_threads()
        threading.Thread(target=self._beat, name=f"heartbeat-{self.run.name}", daemon=True).start()

        try:
            with tracker_environment(self.config.report_to, self.run.path):  # where the tracker writes
                trainer, model = self.setup()
                if self.plan is not None and self.plan.cpu_threads:
                    torch.set_num_threads(self.plan.cpu_threads)  # the plan's CPU thread count, for training only
                self.train(trainer)
        except StopRequested:
            self.report(state="stopped", message="Stopped before training began; nothing was trained.")
        except BaseException as exc:  # the thread must always leave a final state behind
            # a deleted run folder may have been re-created (without its config) by a late save: details
            # written there would be lost with it, so they go to the workspace's errors.log
            kept = self.run.config_path.is_file() and self.run.log(
                "FAILED\n" + "".join(traceback.format_exception(exc))
            )
            if not kept:
                record(exc, f"training {self.run.name} (its run folder or train.log is gone)")
            self.report(state="failed", message=explain_failure(exc, self.config, self.run.path))
        finally:
            del trainer, model
            torch.set_num_threads(threads)
            release_memory()
            self._ended.set()
            self.run.log(f"final state: {self.state}: {self.message}")

    def setup(self):
        """Phase 1: data, tokenizer, plan, model and trainer; returns (trainer, model)."""
        import datasets
        from transformers import set_seed

        cfg = self.config
        datasets.disable_progress_bars()  # progress is reported through the run, not stderr
        self.report(state="loading", message="Reading the data and the tokenizer")
        self.run.log(
            f"run {self.run.name}: model={cfg.model_name_or_path} method={cfg.method} quantization={cfg.quantization}"
        )
        model_path = resolve_model_path(cfg.model_name_or_path, self.workspace)
        tokenizer = load_tokenizer(cfg, self.workspace, path=model_path)
        data = prepare_data(cfg, tokenizer)
        if not self.run.read_only:
            self.run.data_summary_path.write_text(_json(data.summary), encoding="utf-8")
        for issue in data.report.skipped[:50]:
            self.run.log(f"skipped row {issue.row}: {issue.reason}")
        if cfg.is_preference or cfg.objective == "grpo":  # TRL's trainers score (or sample) the completions
            loss_mode, train_rows, eval_rows = f"{cfg.objective} (completions)", data.train_rows, data.eval_rows
        else:
            loss_mode, train_rows = choose_loss_mode(data.train_rows, tokenizer, cfg.train_on_prompt)
            _, eval_rows = (
                choose_loss_mode(data.eval_rows, tokenizer, cfg.train_on_prompt) if data.eval_rows else (None, [])
            )
        self.run.log(f"data: {len(train_rows)} train / {len(eval_rows)} validation rows, loss on: {loss_mode}")
        self._check_stop()

        # every auto decision, once (finetune/plan/planner.py); recorded before anything loads
        mean_tokens = (data.stats or {}).get("mean") or None
        plan = make_plan(cfg, detect_machine(), model=model_path, mean_tokens=mean_tokens)
        # the time it will take, recorded before anything heavy loads (a CPU calibration seeds and trains the
        # demo: it runs before this run's seed is set, so it never changes what the run learns)
        self.estimate = self._predict(plan, model_path, tokenizer, data, eval_rows)
        self._check_stop()

        # the training arguments exist before the model: they set up the distributed state and, under
        # ZeRO-3, DeepSpeed's config, so the weights are partitioned (or FSDP-sharded) as they load
        def trainer_args(plan):
            if cfg.objective == "grpo":
                return build_grpo_config(cfg, plan, str(self.run.checkpoints_dir), has_eval=bool(eval_rows))
            if cfg.is_preference:
                return build_preference_config(cfg, plan, str(self.run.checkpoints_dir), has_eval=bool(eval_rows))
            return build_sft_config(
                cfg, plan, str(self.run.checkpoints_dir), has_eval=bool(eval_rows), loss_mode=loss_mode
            )

        args = trainer_args(plan)
        self.report(message=f"Loading {cfg.model_name_or_path} ({cfg.quantization})")
        set_seed(cfg.seed)
        model = load_model(cfg, self.workspace, plan=plan, path=model_path)
        if cfg.start_from_run.strip():
            start = start_adapter_dir(cfg, self.workspace)
            self.run.log(f"starting from the adapter {start}")
            model = load_start_adapter(model, start, plan)
        loaded_attn = getattr(model.config, "_attn_implementation", None)
        if loaded_attn and loaded_attn != plan.attn_implementation:  # transformers fell back to another kernel
            plan = make_plan(
                cfg, plan.machine, model=model_path, attn_implementation=loaded_attn, mean_tokens=mean_tokens
            )
            args = trainer_args(plan)
        self.plan = plan
        for line in plan.lines():
            self.run.log(line)
        if not self.run.read_only:
            self.run.plan_path.write_text(plan.to_json() + "\n", encoding="utf-8")
        self._check_stop()

        self.report(message="Tokenizing")

        configure(args, self.run.name)
        callbacks: list = [RunCallback(self, meter=HardwareMeter.from_estimate(self.estimate), on_end=self._measured)]
        if cfg.report_to != "none":
            callbacks.append(where_callback(cfg.report_to, self.run))
        if cfg.early_stopping_patience > 0 and eval_rows:
            from transformers import EarlyStoppingCallback

            callbacks.append(EarlyStoppingCallback(cfg.early_stopping_patience, cfg.early_stopping_threshold))
        common = dict(
            model=model,
            tokenizer=tokenizer,
            train_rows=train_rows,
            eval_rows=eval_rows,
            output_dir=str(self.run.checkpoints_dir),
            callbacks=callbacks,
        )
        if cfg.objective == "grpo":
            trainer = build_grpo_trainer(cfg, plan, **common, args=args, run_path=self.run.path, log=self.run.log)
            return self._quiet(trainer), model
        if cfg.is_preference:
            return self._quiet(build_preference_trainer(cfg, plan, **common, args=args)), model
        # fast path (auto knobs) + tokenized-data cache: finetune/train/sft.py
        trainer = build_trainer(
            cfg,
            plan,
            **common,
            loss_mode=loss_mode,
            workspace=self.workspace,
            log=self.run.log,
            args=args,
        )
        return self._quiet(trainer), model

    def _predict(self, plan, model_path, tokenizer, data, eval_rows):
        """The time this run is predicted to take (prediction.json, train.log), from the data's token lengths;
        a CPU not calibrated yet is measured now (seconds, once per machine). None when it cannot be told."""

        cfg = self.config
        try:
            if plan.device == "cpu" and cached(self.workspace_path, cfg, plan) is None:
                self.report(message="Calibrating this CPU for the time estimate (once per machine, seconds)")
            lengths = list((data.stats or {}).get("lengths") or [])
            if not lengths:
                lengths = token_lengths(data.train_rows, tokenizer)
            held = token_lengths(eval_rows, tokenizer) if eval_rows else []
            kto_pairs = cfg.objective == "kto" and data.shape == "preference"
            estimate, why = predict(
                cfg, plan, load_shape(model_path), lengths, held, self.workspace_path, kto_pairs=kto_pairs
            )
        except Exception as exc:  # noqa: BLE001 - a prediction is a report: the run goes on without one
            estimate, why = None, f"{type(exc).__name__}: {exc}"
        if estimate is None:
            self.run.log(f"predicted: no time estimate ({why})")
            write_record(self.run, predicted=None, predicted_why=why)
            return None
        self.run.log(
            f"predicted: {estimate.steps} steps, {estimate.tokens:,.0f} tokens, {estimate.seconds:.1f} s "
            f"({estimate.tokens_per_s:,.0f} tokens/s; {estimate.throughput.source})"
        )
        write_record(self.run, predicted=estimate.to_dict())
        return estimate

    def _measured(self, measured: dict) -> None:
        """What the training phase measured, next to the prediction (prediction.json, train.log)."""

        tokens = measured.get("tokens")
        if tokens is None and self.estimate is not None and self.estimate.steps:  # the trainer counts none (ORPO, KTO)
            tokens = self.estimate.tokens * measured["steps"] / self.estimate.steps
        actual = actual_record(
            seconds=measured["seconds"],
            cpu_seconds=measured["cpu_seconds"],
            steps=measured["steps"],
            tokens=tokens,
            meter=HardwareMeter.from_estimate(self.estimate),
            price=self.config.price_per_hour,
        )
        if self.resume_from is not None:
            actual["resumed_from"] = self.resume_from.name
        write_record(self.run, actual=actual)
        self._refine_calibration(measured)
        error = comparison(read_record(self.run.path))["error"]
        versus = f" (predicted {self.estimate.seconds:.1f} s: {error:+.0%})" if error is not None else ""
        speed = f", {actual['tokens_per_s']:,.0f} tokens/s" if actual.get("tokens_per_s") else ""
        self.run.log(f"measured: {actual['steps']} steps in {actual['seconds']:.1f} s{speed}{versus}")

    def _refine_calibration(self, measured: dict) -> None:
        """A whole CPU run (not resumed, every predicted step, 10 or more) refines its kind's calibration with
        the CPU time it measured (the calibration's clock on one thread)."""

        est, plan = self.estimate, self.plan
        if est is None or plan is None or plan.device != "cpu" or not est.throughput.measured:
            return
        if self.resume_from is not None or measured["steps"] != est.steps or est.steps < 10:
            return
        spent = measured["cpu_seconds"] if (plan.cpu_threads or 0) == 1 else measured["seconds"]
        try:
            refine(self.workspace_path, self.config, plan, measured_s=spent, predicted_s=est.seconds)
        except OSError:
            pass  # a full disk: the next prediction uses the calibration as it was

    @property
    def workspace_path(self):
        return workspace_dir(self.workspace)

    def _quiet(self, trainer):
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # metrics go to train.log and metrics.jsonl instead of stdout
        self._check_stop()
        return trainer

    def train(self, trainer) -> None:
        """Phase 2: train (resuming when asked), then save the adapter and say how it ended."""
        resume = str(self.resume_from) if self.resume_from else None
        if resume:
            self.run.log(f"resuming from {self.resume_from.name}")
        self.report(state="training", message="Training" + "".join(f" ({note})" for note in self.notes))
        try:
            trainer.train(resume_from_checkpoint=resume)
        except StopDuringEvaluation:  # Stop pressed mid-evaluation: keep the weights of the last step
            self.run.log(f"evaluation at step {trainer.state.global_step} interrupted by Stop")
            _save_stop_checkpoint(trainer, self.run)
        if self.nan_step is not None:
            raise FinetuneError(
                f"The loss became NaN at step {self.nan_step}: lower learning_rate (e.g. by 10x), keep "
                "max_grad_norm at 1.0, or switch fp16 off (bf16 or fp32 are more stable)."
            )
        stopped = self.stop_event.is_set()
        self.report(
            state="saving", message="Saving the adapter" if self.config.method != "full" else "Saving the model"
        )
        _save_adapter(trainer, self.run)
        step = trainer.state.global_step
        notes = "".join(f" {note}" for note in self.notes)
        if stopped:
            self.report(
                state="stopped",
                message=f"Stopped by {self.stop_reason} at step {step}; a checkpoint and the adapter so far are saved."
                + notes,
                step=step,
            )
        else:
            self.report(state="done", message=f"Finished {step} steps; the adapter is saved.{notes}", step=step)


def _save_stop_checkpoint(trainer, run: Run) -> None:
    """The checkpoint of the current step when Stop cut an evaluation short (the Trainer saves after
    evaluating, so its own save never came): Resume then repeats no step."""
    step = trainer.state.global_step
    if step == 0 or (run.checkpoints_dir / f"checkpoint-{step}" / "trainer_state.json").is_file():
        return
    try:
        trainer._save_checkpoint(trainer.model, trial=None)  # transformers' own checkpoint layout
    except Exception as exc:  # noqa: BLE001 - the adapter is still saved; resume uses an older checkpoint
        run.log(f"could not save a checkpoint at step {step}: {exc}")


def _save_adapter(trainer, run: Run) -> None:
    """Save the adapter (or model) and tokenizer into a staging folder, then swap it in for
    adapter/: a crash or error mid-save never leaves a half-written adapter behind."""
    import os
    import shutil

    staging, old = run.path / ".adapter.partial", run.path / ".adapter.old"
    if not run.read_only:
        shutil.rmtree(staging, ignore_errors=True)
    try:
        trainer.save_model(str(staging))  # every rank takes part; only the main process writes
        if run.read_only:
            return
        if "ref" in (getattr(trainer.model, "peft_config", None) or {}):
            shutil.rmtree(staging / "ref", ignore_errors=True)  # TRL's frozen reference copy is not the result
        save_tokenizer_for_serving(trainer.processing_class, staging)
    except BaseException:
        if not run.read_only:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if run.adapter_dir.exists():
        os.replace(run.adapter_dir, old)
    os.replace(staging, run.adapter_dir)
    shutil.rmtree(old, ignore_errors=True)


def _json(data: Any) -> str:
    import json

    return json.dumps(data, indent=1, default=str)

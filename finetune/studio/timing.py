"""The studio's timing desk: the time and cost a run will take before Start (the planner's workload and
FLOPs model over the device's throughput, from the data's token-length audit), the CPU's calibration
(measured once per machine, never while a run trains), each run's predicted-against-actual record,
the trackers a run reports to, and the price presets (Hugging Face Spaces hardware, on a Space).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from finetune.config import RunConfig
from finetune.data.prepare import split_train_val
from finetune.demo import SAMPLE_PREFERENCE_DATASET
from finetune.errors import BusyError, DataError, FinetuneError
from finetune.models import resolve_model_path
from finetune.plan.calibration import cached
from finetune.plan.gpus import SPACE_HARDWARE, guess_space_hardware, on_space
from finetune.plan.planner import estimate
from finetune.plan.shapes import load_shape
from finetune.studio.data import source_label
from finetune.studio.lease import GpuLease
from finetune.train.timing import predict, read_record
from finetune.train.trackers import links, missing


@dataclass
class Prediction:
    """A time estimate for the page and the CLI: the estimate, or why there is none, and a load warning."""

    estimate: Any = None  # finetune.plan.prediction.TimeEstimate
    why_not: str = ""
    busy_cpu: str = ""  # on a shared CPU: how much longer the wall time may be
    data: str = ""  # what the token count was measured on
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = self.estimate.to_dict() if self.estimate is not None else {}
        return {**out, "why_not": self.why_not, "busy_cpu": self.busy_cpu, "data": self.data}


def _data_identity(config: RunConfig) -> tuple:
    """The data files' identity (path, size, modification time): a changed file is measured again."""
    out = []
    for source in (config.dataset_path, config.eval_dataset_path):
        try:
            stat = os.stat(source) if source else None
        except OSError:
            stat = None
        out.append((source, stat.st_size, stat.st_mtime_ns) if stat else (source,))
    return tuple(out)


@dataclass(frozen=True)
class PricePreset:
    label: str
    price_per_hour: float  # per GPU hour (the flavor's price over its GPUs; a CPU flavor: per hour)
    flavor: str = ""


class TimingDesk:
    """Predictions, calibration, run records and trackers for one Studio."""

    def __init__(self, studio):
        self.studio = studio
        self._lock = threading.Lock()
        self._recent: OrderedDict[tuple, Prediction] = OrderedDict()  # the page asks twice per refresh

    # before Start -------------------------------------------------------------------------------
    def predict(self, config: RunConfig, *, machine=None, calibrate: bool = True) -> Prediction:
        """The time (and, with config.price_per_hour, the cost) of a run of `config` on this machine (or
        `machine`); never raises: a Prediction without an estimate says why."""
        key = (config.to_yaml(), repr(machine), _data_identity(config))
        with self._lock:
            if key in self._recent and self._recent[key].estimate is not None:
                return self._recent[key]
        prediction = self._predict_safely(config, machine, calibrate)
        with self._lock:
            self._recent[key] = prediction
            while len(self._recent) > 16:
                self._recent.popitem(last=False)
        return prediction

    def _predict_safely(self, config: RunConfig, machine, calibrate: bool) -> Prediction:
        try:
            return self._predict(config, machine, calibrate)
        except FinetuneError as exc:
            return Prediction(why_not=str(exc))
        except Exception as exc:  # noqa: BLE001 - the page shows why, the rest of the estimate stays
            return Prediction(why_not=f"{type(exc).__name__}: {exc}")

    def _predict(self, config: RunConfig, machine, calibrate: bool) -> Prediction:
        studio = self.studio
        if machine is None:
            plan = studio.estimate(config).plan
        else:
            plan = estimate(config, machine, model=resolve_model_path(config.model_name_or_path, studio.workspace))[0]
        shape = load_shape(resolve_model_path(config.model_name_or_path, studio.workspace))
        lengths, held, label, paired = self.token_lengths(config)

        uncalibrated = plan.device == "cpu" and cached(studio.workspace, config, plan) is None
        if uncalibrated and calibrate and studio.training_now() is None:
            try:  # the calibration loads the demo model: one model in memory at a time, and never wait long
                with GpuLease(wait_s=2.0).hold("calibrating this CPU for the time estimate"):
                    found, why = predict(config, plan, shape, lengths, held, studio.workspace, kto_pairs=paired)
            except BusyError as exc:
                found, why = None, str(exc)
        else:
            found, why = predict(
                config, plan, shape, lengths, held, studio.workspace, kto_pairs=paired, measure_missing=False
            )
        if found is None and uncalibrated and studio.training_now() is not None:
            why += "; it is measured when the run training now has finished"
        return Prediction(found, why, self.busy_cpu() if plan.device == "cpu" else "", label)

    def token_lengths(self, config: RunConfig) -> tuple[list[int], list[int], str, bool]:
        """(train lengths, validation lengths, what was measured, KTO on pairs) from the data's token-length
        audit, split into training and validation rows exactly as the run will split them."""

        desk = self.studio.data
        source = config.dataset_path.strip() or (str(SAMPLE_PREFERENCE_DATASET) if config.is_preference else "")
        mapping = dict(config.column_mapping or {})
        try:
            report = desk.report(source, config.dataset_format, mapping)
        except DataError as exc:  # the message names the problem; say which data it is about
            raise DataError(f"the data {source_label(source)} cannot be read: {exc}") from None
        model = config.model_name_or_path
        stats = desk.length_stats(report, model, config.max_length, config.trust_remote_code)
        by_row = {id(row): n for row, n in zip(report.rows, stats["lengths"])}
        eval_source = (config.eval_dataset_path or "").strip()
        if eval_source:
            held_report = desk.report(eval_source, config.dataset_format, mapping)
            held = desk.length_stats(held_report, model, config.max_length, config.trust_remote_code)["lengths"]
            train = list(stats["lengths"])
        else:
            train_rows, eval_rows = split_train_val(report.rows, config.val_split, config.seed)
            train, held = [by_row[id(r)] for r in train_rows], [by_row[id(r)] for r in eval_rows]

        label = f"{len(train)} training rows of {source_label(source)}"
        return train, held, label, config.objective == "kto" and report.shape == "preference"

    @staticmethod
    def busy_cpu() -> str:
        """On a CPU shared with other work: how much longer than predicted the wall time may run."""
        try:
            load, cores = os.getloadavg()[0], os.cpu_count() or 1
        except (OSError, AttributeError):
            return ""
        if load < cores / 2:
            return ""
        factor = max(1.0, (load + 1) / cores)
        return (
            f"this CPU is busy with other work (load average {load:.1f} on {cores} cores): the prediction is the "
            f"CPU time the run needs; the wall time may be up to about {factor:.1f}x that while the load lasts"
        )

    # after a run ---------------------------------------------------------------------------------
    def record(self, name: str) -> dict[str, Any]:
        """A run's prediction.json: {"predicted": {...}, "actual": {...}} ({} when it has none)."""

        try:
            return read_record(self.studio.run(name).path)
        except FinetuneError:
            return {}

    def records(self) -> dict[str, dict[str, Any]]:
        """Every run's predicted-vs-actual record, by run name (for the run history)."""

        try:
            return {r.name: read_record(r.path) for r in self.studio.runs()}
        except FinetuneError:
            return {}

    # trackers ------------------------------------------------------------------------------------
    @staticmethod
    def tracker_missing(report_to: str) -> str:
        return missing(report_to)

    def tracker_links(self, name: str) -> tuple[str, list[dict[str, str]]]:
        """(report_to, how to open the run's tracked metrics) of a run; ('none', []) without a tracker."""

        try:
            run = self.studio.run(name)
            report_to = run.config().report_to
        except FinetuneError:
            return "none", []
        return report_to, links(report_to, run.path)

    # prices --------------------------------------------------------------------------------------
    def price_presets(self) -> list[PricePreset]:
        """On a Hugging Face Space: its hardware's hourly prices (per GPU), the flavor that matches this
        machine first; elsewhere none (type the price per hour)."""

        if not on_space():
            return []
        presets = [
            PricePreset(f"{hw.label}: ${hw.price_per_hour:.2f}/h", hw.price_per_hour / max(1, hw.gpus), hw.flavor)
            for hw in SPACE_HARDWARE
        ]
        guess = self.space_hardware()
        if guess is not None:
            presets.sort(key=lambda p: p.flavor != guess.flavor)
        return presets

    def space_hardware(self):
        """The Space flavor this machine looks like (finetune.plan.gpus.guess_space_hardware), or None."""

        if not on_space():
            return None
        hardware = self.studio.hardware
        gpus = list(getattr(hardware, "gpus", []) or []) if getattr(hardware, "device", "cpu") == "cuda" else []
        name = gpus[0].name if gpus else ""
        return guess_space_hardware(name, len(gpus), int(getattr(hardware, "cpu_count", 0) or 0))

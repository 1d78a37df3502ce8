"""The CPU calibration run (see finetune/plan/calibration.py for what it fits and where it is kept): the
demo model trained for a few steps through the engine's builders, with the run's method, quantization,
checkpointing and objective, on generated rows of two lengths; then one evaluation and one checkpoint.
About 5-10 seconds on a 2-core machine. Never call it while a run trains (the Studio holds the lease).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from finetune.config import RunConfig
from finetune.data.stats import token_lengths
from finetune.models import load_model, load_tokenizer, release_memory, resolve_model_path
from finetune.plan import calibration
from finetune.plan.planner import make_plan
from finetune.plan.prediction import computed_parts, eval_flops
from finetune.plan.shapes import load_shape
from finetune.plan.throughput import flops_model
from finetune.plan.workload import plan_workload
from finetune.train.preference import build_preference_trainer
from finetune.train.sft import build_trainer, choose_loss_mode

BATCH = 4
STEPS = 12  # per phase; the first of each is left out (warm-up, new shapes)
SHORT_WORDS, LONG_WORDS, LONGEST_WORDS = 6, 120, 240  # words per message: about 25, 250 and 500 tokens a row
WORDS = "one two three four five six seven eight nine ten eleven twelve".split()


class _StepClock(TrainerCallback):
    """The end of every optimizer step, on the wall clock and on the process's CPU clock."""

    def __init__(self, cpu: bool):
        self.cpu = cpu
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.process_time() if self.cpu else time.perf_counter())


def _text(words: int, offset: int = 0) -> str:
    return " ".join(WORDS[(offset + i) % len(WORDS)] for i in range(words))


def _rows(config: RunConfig, words: int, count: int) -> list[dict]:
    """`count` rows of about `words` words per message, a little shorter along each micro-batch: padded to
    the longest, with an attention mask, as real batches are (equal rows would take a faster path)."""

    def size(i: int) -> int:
        return max(1, words - (i % BATCH) * max(1, words // 10))

    if config.objective == "kto":  # unpaired rows, labels alternating, so TRL keeps their order
        return [{"prompt": _text(size(i)), "completion": _text(size(i), 3), "label": i % 2 == 0} for i in range(count)]
    if config.is_preference:
        return [
            {"prompt": _text(size(i)), "chosen": _text(size(i), 3), "rejected": _text(size(i), 7)} for i in range(count)
        ]
    return [
        {"messages": [{"role": "user", "content": _text(size(i))}, {"role": "assistant", "content": _text(size(i), 5)}]}
        for i in range(count)
    ]


def _config(config: RunConfig, batch: int, accumulation: int, steps: int) -> RunConfig:
    return config.replace(
        model_name_or_path="demo",
        dataset_path="",
        eval_dataset_path="",
        start_from_run="",
        output_dir="",
        run_name="",
        max_length=512,
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=BATCH,
        gradient_accumulation_steps=accumulation,
        max_steps=steps,
        warmup_steps=0,
        warmup_ratio=0.0,
        logging_steps=10_000,
        eval_steps=0,
        save_steps=10_000,
        report_to="none",
        learning_rate=min(config.learning_rate, 1e-4),
    )


def _trainer(cfg: RunConfig, plan, model, tokenizer, rows, eval_rows, out: str, clock):
    common = dict(model=model, tokenizer=tokenizer, eval_rows=eval_rows, output_dir=out, callbacks=[clock])
    if cfg.is_preference:
        trainer = build_preference_trainer(cfg, plan, train_rows=rows, **common)
    else:
        loss_mode, rows = choose_loss_mode(rows, tokenizer, cfg.train_on_prompt)
        trainer = build_trainer(cfg, plan, train_rows=rows, loss_mode=loss_mode, use_cache=False, **common)
    trainer.args.train_sampling_strategy = "sequential"  # short and long rows alternate, as laid out
    trainer.args.disable_tqdm = True
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def _median_step(ends: list[float], steps: range) -> float:
    """The interquartile mean duration of the (1-based) `steps`, each from the previous step's end: the
    slowest and the fastest quarter (other work on a shared machine, a lucky step) are left out."""
    times = sorted(ends[step - 1] - ends[step - 2] for step in steps)
    cut = len(times) // 4
    return statistics.fmean(times[cut : len(times) - cut] or times)


def _phase(lengths: list[int], cfg: RunConfig, plan, shape, eval_lengths: list[int] = ()) -> dict[str, float]:
    """FLOPs computed and passes per optimizer step (one step of rows of these token lengths), and the FLOPs
    of one evaluation of `eval_lengths`, priced exactly as the prediction prices a run."""

    work = plan_workload(lengths, list(eval_lengths), cfg.replace(max_steps=1, eval_steps=1), plan)
    fm = flops_model(shape, cfg, plan)
    matmuls, attention = computed_parts(fm, work.train)
    return {
        "flops": matmuls,
        "attention": attention,
        "passes": work.train.micro_batches,
        "eval_flops": eval_flops(fm, work.eval_per_run),
        "eval_passes": work.eval_per_run.micro_batches,
    }


def measure(workspace: str | Path, config: RunConfig, plan) -> dict[str, Any]:
    """Run the calibration for `config`'s kind of run on this CPU; returns the entry to store."""
    import torch
    from transformers import set_seed

    threads = torch.get_num_threads()
    started = time.time()
    load = calibration.load_average()
    one = _config(config, BATCH, 1, 3 * STEPS)
    cal_plan = make_plan(one, plan.machine)
    if plan.cpu_threads:
        torch.set_num_threads(plan.cpu_threads)
    # one thread (the plan's choice on a shared CPU): the CPU clock, which other work on the cores barely
    # moves; several threads (an idle CPU): the wall clock
    cpu_clock = torch.get_num_threads() == 1
    now = time.process_time if cpu_clock else time.perf_counter
    model = trainer = None
    try:
        set_seed(0)
        tokenizer = load_tokenizer(one, workspace)
        shape = load_shape(resolve_model_path("demo", workspace))
        short, long = _rows(one, SHORT_WORDS, BATCH * STEPS), _rows(one, LONG_WORDS, BATCH * STEPS)
        longest = _rows(one, LONGEST_WORDS, BATCH * STEPS)
        eval_rows = _rows(one, SHORT_WORDS, 2 * BATCH)
        model = load_model(one, workspace, plan=cal_plan)
        with tempfile.TemporaryDirectory(prefix="finetune-calibration-") as out:
            clock = _StepClock(cpu_clock)
            # the three lengths take turns, so a burst of other work on the machine slows them alike
            mixed = [
                row
                for i in range(STEPS)
                for rows in (short, long, longest)
                for row in rows[i * BATCH : (i + 1) * BATCH]
            ]
            trainer = _trainer(one, cal_plan, model, tokenizer, mixed, eval_rows, out, clock)
            trainer.train()
            t_short = _median_step(clock.ends, range(4, 3 * STEPS + 1, 3))
            t_long = _median_step(clock.ends, range(5, 3 * STEPS + 1, 3))
            t_longest = _median_step(clock.ends, range(6, 3 * STEPS + 1, 3))
            evals = []
            for _ in range(3):
                begin = now()
                trainer.evaluate()
                evals.append(now() - begin)
            begin = now()
            trainer._save_checkpoint(trainer.model, trial=None)  # transformers' own checkpoint, as a run saves
            t_save = now() - begin
            model = trainer.model  # the adapter goes on training in the second trainer
            accumulation = calibration.run_kind(config, plan)["accumulation"]
            split_cfg = _config(config, BATCH // 2, accumulation, STEPS)
            split_plan = make_plan(split_cfg, plan.machine)
            split_rows = _rows(one, SHORT_WORDS, BATCH // 2 * accumulation * STEPS)
            clock2 = _StepClock(cpu_clock)
            trainer = _trainer(split_cfg, split_plan, model, tokenizer, split_rows, [], out, clock2)
            trainer.train()
            t_split = _median_step(clock2.ends, range(2, STEPS + 1))
        lengths_short = token_lengths(short[:BATCH], tokenizer)  # one micro-batch of each phase
        lengths_long = token_lengths(long[:BATCH], tokenizer)
        lengths_longest = token_lengths(longest[:BATCH], tokenizer)
        a = _phase(lengths_short, one, cal_plan, shape, token_lengths(eval_rows, tokenizer))
        b = _phase(lengths_long, one, cal_plan, shape)
        x = _phase(lengths_longest, one, cal_plan, shape)
        c = _phase(token_lengths(split_rows[: BATCH // 2 * accumulation], tokenizer), split_cfg, split_plan, shape)
        fitted = calibration.fit(
            {
                "short": {"seconds": t_short, **a},
                "long": {"seconds": t_long, **b},
                "longest": {"seconds": t_longest, **x},
                "split": {"seconds": t_split, **c},
            }
        )
        per_eval = statistics.median(evals) - a["eval_flops"] / fitted["flops_per_s"]  # short rows: matmuls rule
        eval_pass_s = max(0.0, per_eval / max(1, a["eval_passes"]))
    finally:
        del model, trainer
        torch.set_num_threads(threads)
        release_memory()
    return {
        **fitted,
        "eval_pass_s": eval_pass_s,
        "save_s": t_save,
        "measured_at": time.time(),
        "took_s": round(time.time() - started, 2),
        "load_average": max(load, calibration.load_average()),
        "cpu": calibration.cpu_model(),
        "cores": plan.machine.cpu_count,
        "threads": plan.cpu_threads or threads,
        "kind": ", ".join(f"{k} {v}" for k, v in calibration.run_kind(config, plan).items()),
        "clock": "process CPU time" if cpu_clock else "wall clock",
        "steps": {
            "short": t_short,
            "long": t_long,
            "longest": t_longest,
            "split": t_split,
            "tokens": [lengths_short, lengths_long, lengths_longest],
        },
    }


def cpu_throughput(workspace: str | Path, config: RunConfig, plan, shape, *, measure_missing: bool = True):
    """The calibrated Throughput of `config` on this CPU: from the workspace's cache, else measured now
    (when `measure_missing`) and stored; None when there is none and none may be measured."""
    entry = calibration.cached(workspace, config, plan)
    if entry is None and measure_missing:
        entry = measure(workspace, config, plan)
        calibration.store(workspace, config, plan, entry)
    return calibration.throughput(entry, shape, config) if entry is not None else None

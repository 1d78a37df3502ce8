"""RunConfig: the single source of truth for every knob of a fine-tuning run.

Every field has a default and help text (the UI builds its form from them), the
names follow TrainingArguments/SFTConfig where one exists, and presets are
partial configs in YAML. `validate()` reports every problem at once (finetune.config.checks);
values from YAML, forms and --set are read by finetune.config.reading.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from finetune.config.checks import config_problems, out_of_range
from finetune.config.choices import (
    ATTN_IMPLEMENTATIONS,
    AUTO_BOOL,
    DATASET_FORMATS,
    DPO_LOSS_TYPES,
    METHODS,
    OBJECTIVES,
    OPTIMIZERS,
    PRECISION_CHOICES,
    PREFERENCE_OBJECTIVES,
    QUANTIZATIONS,
    REPORT_TO,
    SCHEDULERS,
    STRATEGY_CHOICES,
)
from finetune.config.reading import DuplicateKeyError, brief, coerce, load_yaml_strict, problems_after_coercion
from finetune.errors import MAX_PROBLEMS, ConfigError, bounded


def _f(default: Any, help: str, choices: tuple | None = None, group: str = "training", **extra):
    """A dataclass field with help text, an optional choice list and a UI group."""
    metadata = {"help": help, "group": group, **extra}
    if choices is not None:
        metadata["choices"] = choices
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class RunConfig:
    # --- model -----------------------------------------------------------
    model_name_or_path: str = _f(
        "demo",
        "Base model: a Hugging Face Hub id (e.g. Qwen/Qwen2.5-0.5B-Instruct), a local folder, "
        "or `demo` (a tiny built-in model that trains offline on CPU in seconds).",
        group="model",
    )
    trust_remote_code: bool = _f(
        False,
        "Run Python code shipped with the model repository. Only turn on for repositories you trust.",
        group="model",
    )
    attn_implementation: str = _f(
        "auto",
        "Attention kernel. `auto` picks flash_attention_2 when installed and the GPU supports it, "
        "else sdpa, else eager.",
        ATTN_IMPLEMENTATIONS,
        group="model",
    )
    # --- data ------------------------------------------------------------
    dataset_path: str = _f(
        "",
        "Training data: a .jsonl, .json, .csv or .parquet file, or a Hub dataset id. "
        "Empty means the bundled sample dataset.",
        group="data",
    )
    eval_dataset_path: str = _f(
        "",
        "Optional validation file. When empty, `val_split` of the training data is held out.",
        group="data",
    )
    dataset_format: str = _f(
        "auto",
        "Data format: auto-detect, or messages (OpenAI), sharegpt, alpaca, prompt_completion, text; for preference "
        "tuning: preference (chosen/rejected, with a prompt column or a prompt shared by both conversations) or "
        "unpaired_preference (prompt/completion/label, KTO); for GRPO: prompts (a prompt per row, text or messages, with "
        "an optional answer column and any other columns the reward functions read).",
        DATASET_FORMATS,
        group="data",
    )
    column_mapping: dict = _f(
        {},
        "Map the format's expected column names to your file's columns, e.g. {instruction: question, output: answer}.",
        group="data",
    )
    val_split: float = _f(
        0.1,
        "Fraction of the training data held out for validation when no validation file is given (0 disables).",
        group="data",
    )
    train_on_prompt: bool = _f(
        False,
        "Also compute the loss on prompt/user tokens. Off by default: only assistant/completion tokens "
        "are trained (labels = -100 on the prompt).",
        group="data",
    )
    max_length: int = _f(
        1024,
        "Maximum tokens per example (or per packed block). Longer examples are truncated; "
        "the Data tab suggests a value near the 95th percentile of your data.",
        group="data",
    )
    packing: Any = _f(
        "auto",
        "Pack several short examples into `max_length` blocks (TRL's best-fit decreasing, padding-free: examples "
        "never attend to each other). It regroups rows, so an optimizer step sees more of them and an epoch has "
        "fewer steps. auto: off (padding_free gives the speed without changing what a step trains on).",
        AUTO_BOOL,
        group="data",
    )
    padding_free: Any = _f(
        "auto",
        "Flatten each micro-batch's examples into one row with no padding (position ids restart per example, so "
        "they never attend to each other): the same examples per step as padded batches, no compute on padding. "
        "auto: on on a CUDA GPU (measured faster there), off on CPU (measured slower).",
        AUTO_BOOL,
        group="data",
    )
    group_by_length: Any = _f(
        "auto",
        "Batch examples of similar length together so little compute goes to padding (unpacked batches only). "
        "auto: the examples of each optimizer step are the ones random order picks, split into micro-batches of "
        "similar length (needs gradient_accumulation_steps > 1); true: batches of similar length drawn from large "
        "sorted groups (least padding, but the order within a group runs long to short); false: random batches.",
        AUTO_BOOL,
        group="data",
    )
    # --- output ----------------------------------------------------------
    output_dir: str = _f(
        "",
        "Run folder. Empty means <workspace>/runs/<run_name>.",
        group="output",
    )
    run_name: str = _f(
        "",
        "Name of the run (letters, digits, '-', '_', '.'). Empty means one made from the model and the time.",
        group="output",
    )
    # --- method ----------------------------------------------------------
    objective: str = _f(
        "sft",
        "What is learned. sft: imitate the answers (supervised fine-tuning); dpo: prefer the chosen answer over "
        "the rejected one (Direct Preference Optimization, against a frozen reference); orpo: SFT and preference in "
        "one loss, no reference model; kto: learn from answers labelled good or bad (unpaired). dpo/orpo/kto need "
        "preference data, and usually a lower learning_rate than SFT (TRL's DPO default is 1e-6 for full "
        "fine-tuning); grpo: sample a group of completions per prompt and learn from the ones the reward functions "
        "score above their group (Group Relative Policy Optimization; needs prompts data).",
        OBJECTIVES,
        group="method",
    )
    beta: float = _f(
        0.1,
        "Preference strength (dpo, kto: how far the model may move from the reference; higher = closer; orpo: "
        "weight of the odds-ratio term). Typical 0.05-0.5. Ignored for sft.",
        group="method",
    )
    dpo_loss_type: str = _f(
        "sigmoid",
        "DPO loss (TRL's loss_type): sigmoid is the original DPO; sigmoid+sft adds the chosen answers' SFT loss "
        "(RPO: keeps the model fluent when DPO alone lowers both answers); ipo, hinge, robust, bco_pair, sppo_hard, "
        "nca_pair, exo_pair, aot, aot_unpaired, apo_zero, apo_down, discopop, sigmoid_norm are its variants. "
        "Only for objective dpo.",
        DPO_LOSS_TYPES,
        group="method",
    )
    start_from_run: str = _f(
        "",
        "Continue from the adapter of a finished run (its name or folder) or of one of its checkpoints (run@step, "
        "or the checkpoint folder), e.g. DPO on top of an SFT run. The "
        "adapter's own rank and target modules are kept, and the DPO/KTO reference is that run's model (a frozen "
        "copy of the adapter only, never of the base weights). Empty: a fresh adapter.",
        group="method",
    )
    method: str = _f(
        "lora",
        "lora: train small adapter matrices; dora: weight-decomposed LoRA; full: train every weight.",
        METHODS,
        group="method",
    )
    quantization: str = _f(
        "4bit",
        "Precision of the frozen base weights: 4bit (QLoRA, NF4), 8bit, or none (16/32-bit).",
        QUANTIZATIONS,
        group="method",
    )
    lora_r: int = _f(
        16, "LoRA rank: size of the adapter matrices (8-64 typical; higher = more capacity).", group="lora"
    )
    lora_alpha: int = _f(32, "LoRA scaling factor; usually 2x the rank.", group="lora")
    lora_dropout: float = _f(0.05, "Dropout on the adapter input.", group="lora")
    lora_target_modules: str = _f(
        "all-linear",
        "Layers that get adapters: a comma-separated list of module names (e.g. q_proj,v_proj; a YAML list works "
        "too), `attention` (q,k,v,o projections) or `all-linear` (every linear layer but the output head).",
        group="lora",
        list_ok=True,
    )
    # --- optimisation ----------------------------------------------------
    learning_rate: float = _f(
        2e-4,
        "Peak learning rate (LoRA tolerates 1e-4 to 3e-4; full fine-tuning ~1e-5). The CPU preset's 5e-3 is "
        "deliberately high: it lets the tiny demo model learn the sample in a minute, and would wreck a real model.",
    )
    num_train_epochs: float = _f(3.0, "Passes over the training data (ignored when max_steps > 0).")
    max_steps: int = _f(-1, "Total optimizer steps; -1 means use num_train_epochs.")
    per_device_train_batch_size: int = _f(4, "Examples per device per forward pass.")
    per_device_eval_batch_size: int = _f(8, "Examples per device per evaluation forward pass.")
    gradient_accumulation_steps: int = _f(
        4, "Forward passes accumulated per optimizer step (effective batch = batch x this)."
    )
    warmup_steps: int = _f(0, "Linear warm-up steps (takes precedence over warmup_ratio when > 0).")
    warmup_ratio: float = _f(0.03, "Fraction of total steps used for linear warm-up.")
    lr_scheduler_type: str = _f("cosine", "Learning-rate schedule.", SCHEDULERS)
    weight_decay: float = _f(0.01, "AdamW decoupled weight decay.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0 disables).")
    optim: str = _f(
        "adamw_torch",
        "Optimizer. paged_adamw_8bit saves memory on CUDA; adamw_torch_fused is fastest on recent GPUs.",
        OPTIMIZERS,
    )
    bf16: Any = _f(
        "auto", "bfloat16 mixed precision: auto (on when the GPU supports it), true or false.", PRECISION_CHOICES
    )
    fp16: Any = _f(
        "auto", "float16 mixed precision: auto (on for CUDA GPUs without bf16), true or false.", PRECISION_CHOICES
    )
    resize_micro_batch: Any = _f(
        "auto",
        "Let the planner choose the per-device micro-batch (a divisor of batch x accumulation, gradient accumulation "
        "adjusted so the effective batch is unchanged) to fill the GPU with about 8k tokens per forward pass when the "
        "memory estimate allows. auto: on with padding-free batches on a CUDA GPU.",
        AUTO_BOOL,
    )
    use_liger_kernel: Any = _f(
        "auto",
        "Liger's Triton kernels (RMSNorm, RoPE, SwiGLU) on a CUDA GPU. auto: off (measured 1.8x slower at the 0.5B "
        "shape on an H200; no measurement has shown them faster).",
        AUTO_BOOL,
    )
    gradient_checkpointing: Any = _f(
        "auto",
        "Recompute activations in the backward pass: much less memory, ~20-30% slower. auto: off on CPU, and on a "
        "GPU off when the memory estimate without it fits in 85% of the GPU's memory, else on.",
        AUTO_BOOL,
    )
    seed: int = _f(42, "Random seed for data split, adapter init and data order.")
    # --- logging, evaluation, checkpoints ---------------------------------
    logging_steps: float = _f(
        5, "Log metrics every N optimizer steps (a value below 1 is a fraction of total steps).", group="logging"
    )
    eval_steps: float = _f(
        0.1,
        "Evaluate every N steps (a value below 1 is a fraction of total steps, e.g. 0.1 = ten evaluations). "
        "0 disables evaluation.",
        group="logging",
    )
    save_steps: float = _f(
        0.25,
        "Save a checkpoint every N steps (a value below 1 is a fraction of total steps).",
        group="logging",
    )
    save_total_limit: int = _f(
        5,
        "Keep at most this many checkpoints (oldest deleted first; 0 keeps all). 5 keeps every checkpoint the "
        "default schedule saves (save_steps 0.25: four, at 25/50/75/100%), so the Test tab's checkpoint curve has "
        "its points; the Model tab says how many a run keeps and their size on disk.",
        group="logging",
    )
    early_stopping_patience: int = _f(
        0, "Stop after this many evaluations without improvement of eval_loss (0 disables).", group="logging"
    )
    early_stopping_threshold: float = _f(
        0.0, "Minimum eval_loss improvement that counts as improvement for early stopping.", group="logging"
    )
    load_best_model_at_end: bool = _f(
        False, "At the end, keep the checkpoint with the lowest eval_loss instead of the last.", group="logging"
    )
    report_to: str = _f(
        "none",
        "Extra experiment tracker: none, tensorboard, wandb, trackio or mlflow (the `trackers` extra installs "
        "them). W&B without a login logs offline; MLflow without MLFLOW_TRACKING_URI logs into the run folder.",
        REPORT_TO,
        group="logging",
    )
    price_per_hour: float = _f(
        0.0,
        "Price of one GPU (or, on a CPU, the machine) per hour, e.g. 1.00 for a Space's A10G small: turns the "
        "predicted and the measured time into money. 0: no cost shown.",
        group="logging",
    )
    # --- several GPUs ----------------------------------------------------------
    num_gpus: int = _f(
        1,
        "GPUs the run is planned for, on all machines together: the memory estimate is per GPU for this many, and "
        "the `accelerate launch` command starts this many processes. A launched run trains on the processes the "
        "launcher started.",
        group="distributed",
    )
    num_machines: int = _f(
        1,
        "Machines (nodes) the GPUs are spread over, the same number of GPUs on each: the `accelerate launch` "
        "command is then run once per machine.",
        group="distributed",
    )
    strategy: str = _f(
        "auto",
        "How several GPUs share the work: ddp (each holds the whole model), fsdp (weights, gradients and optimizer "
        "states sharded; with 4bit this is FSDP+QLoRA), zero2 (DeepSpeed: gradients and optimizer states sharded), "
        "zero3 (DeepSpeed: also the weights). auto: ddp when a whole copy fits one GPU, else fsdp. A launched run "
        "uses its accelerate config, which must agree when this is set.",
        STRATEGY_CHOICES,
        group="distributed",
    )

    # --- GRPO (objective grpo): generation and rewards ----------------------------------------
    reward_functions: str = _f(
        "contains_answer",
        "GRPO: the reward functions, comma-separated, each with an optional weight (name:weight; default 1), e.g. "
        "`contains_answer, format_regex:0.5`. exact_answer, contains_answer, number_match (compare with the answer "
        "column), format_regex, length, json_valid, custom (your Python file). The reward is their weighted sum.",
        group="grpo",
        list_ok=True,
    )
    num_generations: int = _f(
        8,
        "GRPO: completions sampled per prompt (the group each one is compared with; at least 2). "
        "per_device_train_batch_size x gradient_accumulation_steps (x num_gpus) counts completions per optimizer "
        "step and must be a multiple of it. 8 is TRL's default.",
        group="grpo",
    )
    max_completion_length: int = _f(
        64,
        "GRPO: most new tokens per sampled completion (cut there, counted as clipped). Generation dominates a GRPO "
        "step's time: keep it near what a good answer needs (the demo sample: 24).",
        group="grpo",
    )
    temperature: float = _f(
        1.0,
        "GRPO: sampling temperature of the completions (TRL's default 1.0; lower = less varied groups, less to learn "
        "from).",
        group="grpo",
    )
    kl_coef: float = _f(
        0.0,
        "GRPO: weight of the KL penalty that keeps the model near the reference (TRL's beta). 0 (TRL's default) "
        "skips the reference pass; with it the reference is the base (adapter disabled) or the start run's adapter.",
        group="grpo",
    )
    reward_format_regex: str = _f(
        "",
        "GRPO format_regex: the pattern a completion must match, e.g. `^<think>.*</think>\\s*\\S` (searched, `.` "
        "matches newlines; anchor with ^ and $ for the whole completion).",
        group="grpo",
    )
    reward_length_target: int = _f(
        32, "GRPO length: the completion length in tokens that scores 1 (0 at none and at twice this).", group="grpo"
    )
    reward_json_keys: str = _f(
        "",
        "GRPO json_valid: keys the parsed JSON object must have, comma-separated (empty: any valid JSON scores 1).",
        group="grpo",
        list_ok=True,
    )
    reward_number_tolerance: float = _f(
        1e-6, "GRPO number_match: how far the completion's number may be from the answer's.", group="grpo"
    )
    reward_custom_file: str = _f(
        "",
        "GRPO custom: a Python file with `def reward(completions, **columns) -> list[float]` (columns: prompts, answer "
        "and every other data column). It runs code: the web app allows it only when started with "
        "--allow-custom-rewards.",
        group="grpo",
    )
    sample_completions_steps: int = _f(
        10,
        "GRPO: every N steps save a sample of the completions with each reward in the run folder "
        "(completions/), shown in the Train tab. 0: never.",
        group="grpo",
    )

    # ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, *, base: RunConfig | None = None) -> RunConfig:
        """Build a config from a (possibly partial) dict over `base`; every problem is reported at once."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError([f"expected a mapping of settings, got {type(data).__name__}"])
        known = {f.name: f for f in fields(cls)}
        problems: list[str] = []
        values = (base or cls()).to_dict()
        unknown = 0
        for key, raw in data.items():
            if key not in known:
                unknown += 1
                if unknown > MAX_PROBLEMS:  # a file of 76,000 unknown keys: count them, no hints
                    problems.append(f"unknown setting {brief(key)}")
                    continue
                hint = difflib.get_close_matches(str(key)[:100], list(known), n=1)
                problems.append(f"unknown setting {brief(key)}" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
                continue
            try:
                values[key] = coerce(key, raw, known[key])
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError(problems + problems_after_coercion(cls, values, problems))
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path, *, base: RunConfig | None = None) -> RunConfig:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError([f"config file not found: {path}"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"cannot read config file {path}: {exc}"]) from None
        try:
            data = load_yaml_strict(text)
        except DuplicateKeyError as exc:
            raise ConfigError([f"{path}: {exc}"]) from None
        except yaml.YAMLError as exc:
            if "maximum nesting depth" in str(exc):  # libyaml's words for what the Python reader hits as recursion
                raise ConfigError([f"{path}: the YAML is nested too deeply to read"]) from None
            raise ConfigError([f"{path} is not valid YAML: {exc}"]) from None
        except RecursionError:
            raise ConfigError([f"{path}: the YAML is nested too deeply to read"]) from None
        except ValueError as exc:  # e.g. an integer of more than 4,300 digits
            raise ConfigError([f"{path} holds a value that cannot be read: {bounded(str(exc), 200)}"]) from None
        try:
            return cls.from_dict(data, base=base)
        except ConfigError as exc:
            raise ConfigError([f"{path}: {p}" for p in exc.problems]) from None

    def replace(self, **changes: Any) -> RunConfig:
        return RunConfig.from_dict(changes, base=self)

    def with_overrides(self, assignments: list[str]) -> RunConfig:
        """Apply CLI-style `key=value` strings (values parsed as YAML scalars)."""
        data: dict[str, Any] = {}
        problems = []
        for item in assignments:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                problems.append(f"--set expects key=value, got '{item}'")
                continue
            try:
                data[key.strip()] = yaml.safe_load(value) if value.strip() else ""
            except (yaml.YAMLError, ValueError, RecursionError):
                data[key.strip()] = value
        if problems:
            raise ConfigError(problems)
        return self.replace(**data)

    def validate(self) -> list[str]:
        """Return every problem with this config (empty list when it is usable)."""
        numbers = out_of_range(self)
        unusable = {problem.split(":", 1)[0] for problem in numbers}
        # the other checks compare (and quote) numbers: they judge a copy with each unusable number at its
        # default, and an unusable number is reported once, by its range problem
        defaults = {f.name: f.default for f in fields(self) if f.name in unusable}
        judged = dataclasses.replace(self, **defaults) if defaults else self
        return numbers + [q for q in config_problems(judged) if q.split(":", 1)[0] not in unusable]

    @property
    def is_preference(self) -> bool:
        """True for the preference objectives (dpo, orpo, kto)."""
        return self.objective in PREFERENCE_OBJECTIVES

    def check(self) -> RunConfig:
        """Raise ConfigError listing every problem, else return self."""
        problems = self.validate()
        if problems:
            raise ConfigError(problems)
        return self


def field_help() -> dict[str, dict[str, Any]]:
    """Field name -> {help, group, choices, default}: what a UI or docs generator needs."""
    out = {}
    for f in fields(RunConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out[f.name] = {**f.metadata, "default": default}
    return out

"""RunConfig: the single source of truth for every knob of a fine-tuning run.

Every field has a default and help text (the UI builds its form from them), the
names follow TrainingArguments/SFTConfig where one exists, and presets are
partial configs in YAML. `validate()` reports every problem at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from finetune.errors import MAX_PROBLEMS, ConfigError, bounded, shown
from finetune.names import MAX_NAME_CHARS, name_problem
from finetune.reward_spec import reward_problems

# Upper bounds of the numeric fields: far above any real run, far below what breaks a 64-bit
# integer (JSON readers, torch, the page's status stream) or makes a run that never ends.
MAX_STEPS = 100_000_000
MAX_SEED = 2**32 - 1
NUMBER_LIMITS = {
    "max_steps": MAX_STEPS,
    "warmup_steps": MAX_STEPS,
    "logging_steps": MAX_STEPS,
    "eval_steps": MAX_STEPS,
    "save_steps": MAX_STEPS,
    "num_train_epochs": 1_000_000,
    "seed": MAX_SEED,
    "max_length": 2**24,
    "per_device_train_batch_size": 65_536,
    "per_device_eval_batch_size": 65_536,
    "gradient_accumulation_steps": 65_536,
    "lora_r": 65_536,
    "lora_alpha": 1_000_000,
    "save_total_limit": 1_000_000,
    "early_stopping_patience": 1_000_000,
    "num_gpus": 65_536,
    "num_machines": 65_536,
}
DEFAULT_NUMBER_LIMIT = 1e9

METHODS = ("lora", "dora", "full")
QUANTIZATIONS = ("4bit", "8bit", "none")
DATASET_FORMATS = (
    "auto",
    "messages",
    "sharegpt",
    "alpaca",
    "prompt_completion",
    "text",
    "preference",
    "unpaired_preference",
    "prompts",
)
OBJECTIVES = ("sft", "dpo", "orpo", "kto", "grpo")
PREFERENCE_OBJECTIVES = ("dpo", "orpo", "kto")
# TRL 1.16 DPOConfig.loss_type values that need no extra knob (the others want loss_weights etc.)
DPO_LOSS_TYPES = (
    "sigmoid",
    "sigmoid+sft",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sigmoid_norm",
)
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "warmup_stable_decay",
)
OPTIMIZERS = (
    "adamw_torch",
    "adamw_torch_fused",
    "adamw_8bit",
    "paged_adamw_8bit",
    "paged_adamw_32bit",
    "adafactor",
    "sgd",
)
STRATEGY_CHOICES = ("auto", "ddp", "fsdp", "zero2", "zero3")  # finetune.plan.parallel.STRATEGIES + auto
REPORT_TO = ("none", "tensorboard", "wandb", "trackio", "mlflow")  # the trackers TrainingArguments.report_to takes
ATTN_IMPLEMENTATIONS = ("auto", "flash_attention_2", "sdpa", "eager")
# what `lora_target_modules: attention` means (the Llama-style names every curated model uses)
ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MODULE_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
AUTO_BOOL = ("auto", True, False)
PRECISION_CHOICES = AUTO_BOOL


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

    def _grpo_problems(self) -> list[str]:
        """GRPO's generation and reward settings (only checked for objective grpo)."""
        if self.objective != "grpo":
            return []
        p = reward_problems(self)
        if self.num_generations < 2:
            p.append(
                f"num_generations: GRPO compares each completion with its group: at least 2, got {self.num_generations}"
            )
        else:
            completions = self.per_device_train_batch_size * self.gradient_accumulation_steps * max(self.num_gpus, 1)
            if completions % self.num_generations:
                p.append(
                    f"num_generations: per_device_train_batch_size x gradient_accumulation_steps"
                    f"{' x num_gpus' if self.num_gpus > 1 else ''} = {completions} completions per step, which is not "
                    f"a multiple of num_generations ({self.num_generations}); e.g. set per_device_train_batch_size to "
                    f"{self.num_generations}"
                )
        if self.max_completion_length < 1:
            p.append(f"max_completion_length: must be at least 1 token, got {self.max_completion_length}")
        elif self.max_completion_length >= self.max_length:
            p.append(
                f"max_completion_length: {self.max_completion_length} leaves no room for the prompt within "
                f"max_length {self.max_length}: raise max_length or lower it"
            )
        if not 0 < self.temperature <= 10:
            p.append(f"temperature: GRPO samples its completions: must be above 0 (at most 10), got {self.temperature}")
        if self.kl_coef < 0:
            p.append(f"kl_coef: must not be negative, got {self.kl_coef}")
        elif self.kl_coef > 0 and self.method == "full":
            p.append(
                "kl_coef: with method full the reference would be a second copy of the weights: use lora/dora, or 0"
            )
        if self.sample_completions_steps < 0:
            p.append(f"sample_completions_steps: must not be negative, got {self.sample_completions_steps}")
        return p

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
                    problems.append(f"unknown setting {_brief(key)}")
                    continue
                hint = difflib.get_close_matches(str(key)[:100], list(known), n=1)
                problems.append(f"unknown setting {_brief(key)}" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
                continue
            try:
                values[key] = _coerce(key, raw, known[key])
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError(problems + _other_problems(cls, values, problems))
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
        numbers = _out_of_range(self)
        unusable = {problem.split(":", 1)[0] for problem in numbers}
        # the other checks compare (and quote) numbers: they judge a copy with each unusable number at its
        # default, and an unusable number is reported once, by its range problem
        defaults = {f.name: f.default for f in fields(self) if f.name in unusable}
        judged = dataclasses.replace(self, **defaults) if defaults else self
        return numbers + [q for q in judged._problems() if q.split(":", 1)[0] not in unusable]

    def _problems(self) -> list[str]:
        p: list[str] = []
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                p.append(f"{f.name}: {shown(value)} is not one of {', '.join(map(str, choices))}")
        if not self.model_name_or_path.strip():
            p.append("model_name_or_path: must not be empty")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            p.append(f"learning_rate: must be a positive number, got {self.learning_rate}")
        elif self.learning_rate > 0.1:
            p.append(f"learning_rate: {self.learning_rate} is far too high (typical: 1e-5 to 3e-4)")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                p.append(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.max_length < 16:
            p.append(f"max_length: must be at least 16 tokens, got {self.max_length}")
        if self.max_steps == 0 or self.max_steps < -1:
            p.append(f"max_steps: must be -1 (use epochs) or a positive number, got {self.max_steps}")
        if self.max_steps == -1 and not self.num_train_epochs > 0:
            p.append(f"num_train_epochs: must be positive when max_steps is -1, got {self.num_train_epochs}")
        if self.method in ("lora", "dora"):
            if self.lora_r < 1:
                p.append(f"lora_r: must be at least 1, got {self.lora_r}")
            if self.lora_alpha <= 0:
                p.append(f"lora_alpha: must be positive, got {self.lora_alpha}")
            if not 0 <= self.lora_dropout < 1:
                p.append(f"lora_dropout: must be in [0, 1), got {self.lora_dropout}")
            p += lora_target_problems(self.lora_target_modules)
        if self.method == "full" and self.quantization != "none":
            p.append("quantization: full fine-tuning cannot train quantized weights; set quantization to none")
        if not 0 <= self.val_split < 1:
            p.append(f"val_split: must be in [0, 1), got {self.val_split}")
        if not 0 <= self.warmup_ratio < 1:
            p.append(f"warmup_ratio: must be in [0, 1), got {self.warmup_ratio}")
        for name in ("warmup_steps", "save_total_limit", "early_stopping_patience"):
            if getattr(self, name) < 0:
                p.append(f"{name}: must not be negative, got {getattr(self, name)}")
        for name in ("weight_decay", "max_grad_norm", "early_stopping_threshold"):
            if getattr(self, name) < 0:
                p.append(f"{name}: must not be negative, got {getattr(self, name)}")
        if self.logging_steps <= 0:
            p.append(f"logging_steps: must be positive, got {self.logging_steps}")
        if self.save_steps <= 0:
            p.append(f"save_steps: must be positive, got {self.save_steps}")
        if self.eval_steps < 0:
            p.append(f"eval_steps: must not be negative, got {self.eval_steps}")
        if self.price_per_hour < 0:
            p.append(f"price_per_hour: must not be negative, got {self.price_per_hour}")
        if self.bf16 is True and self.fp16 is True:
            p.append("bf16/fp16: choose one of them, not both")
        if (self.early_stopping_patience or self.load_best_model_at_end) and self.eval_steps == 0:
            p.append("early_stopping_patience/load_best_model_at_end need evaluation: set eval_steps > 0")
        if self.run_name and name_problem(self.run_name, max_chars=MAX_NAME_CHARS):
            p.append(name_problem(self.run_name, "run_name:", MAX_NAME_CHARS))
        for name in ("num_gpus", "num_machines"):
            if getattr(self, name) < 1:
                p.append(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.num_gpus >= 1 and self.num_machines >= 1 and self.num_gpus % self.num_machines:
            p.append(
                f"num_gpus: {self.num_gpus} GPUs cannot be spread evenly over {self.num_machines} machines "
                "(accelerate starts the same number of processes on each)"
            )
        p += self._preference_problems()
        p += self._grpo_problems()
        p += _trainer_problems(self)
        return p

    def _preference_problems(self) -> list[str]:
        p = []
        if not (self.beta > 0):
            p.append(f"beta: must be positive, got {self.beta}")
        if self.start_from_run.strip():
            if self.method == "full":
                p.append("start_from_run: continues an adapter, so method must be lora or dora, not full")
            if len(self.start_from_run) > 4096:
                p.append("start_from_run: the run name or folder is too long")
        return p

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


def lora_targets(spec: str) -> str | tuple[str, ...]:
    """The one reading of `lora_target_modules`, for the estimate, the planner and PEFT alike:
    `all-linear` (any case, `-` or `_`) stays "all-linear" (PEFT's keyword); `attention` becomes the
    q/k/v/o projections; anything else is module names, split at commas or spaces, kept as typed
    (PEFT matches them case-sensitively)."""
    text = (spec or "").strip()
    keyword = text.lower().replace("_", "-")
    if keyword == "all-linear":
        return "all-linear"
    if keyword == "attention":
        return ATTENTION_MODULES
    parts = (part.strip("'\"") for part in re.split(r"[\s,]+", text.strip("[]")))
    return tuple(part for part in parts if part)


def lora_target_problems(spec: str) -> list[str]:
    """What is wrong with a `lora_target_modules` value before any model is read."""
    targets = lora_targets(spec)
    if not targets:
        return ["lora_target_modules: must not be empty (try all-linear)"]
    if targets == "all-linear":
        return []
    bad = [name for name in targets if not MODULE_NAME_RE.fullmatch(name)]
    if bad:
        return [f"lora_target_modules: {shown(bad[0])} is not a module name (e.g. q_proj), `attention` or `all-linear`"]
    return []


# --- checks of what the trainer would refuse after the run folder exists (issue 22), and YAML read strictly ---
STEP_INTERVALS = ("logging_steps", "eval_steps", "save_steps")


def _trainer_problems(config: RunConfig) -> list[str]:
    """What numpy, TrainingArguments and the LR scheduler refuse, in the config's own field names."""
    p = []
    if not 0 <= config.seed <= MAX_SEED:
        p.append(f"seed: must be a whole number from 0 to {MAX_SEED:,} (numpy's range), got {shown(config.seed)}")
    for name in STEP_INTERVALS:
        value = getattr(config, name)
        if isinstance(value, float) and value > 1 and not value.is_integer():
            p.append(
                f"{name}: {shown(value)} is neither a fraction of the run (below 1, e.g. 0.1 = every tenth of it) "
                "nor a whole number of steps"
            )
    evaluates = config.eval_steps > 0 and (config.val_split > 0 or bool(str(config.eval_dataset_path).strip()))
    if config.lr_scheduler_type == "reduce_lr_on_plateau" and not evaluates:
        p.append(
            "lr_scheduler_type: reduce_lr_on_plateau lowers the rate when eval_loss stops improving, so it needs "
            "evaluation: set eval_steps > 0 and val_split > 0 (or eval_dataset_path)"
        )
    return p


def _other_problems(cls: type, values: dict[str, Any], coercion: list[str]) -> list[str]:
    """The range and consistency problems of the fields that did coerce, so every problem comes in one
    round (the fields that did not keep their earlier value meanwhile and are not judged twice)."""
    failed = {problem.split(":", 1)[0].strip() for problem in coercion}
    try:
        problems = cls(**values).validate()
    except Exception:  # noqa: BLE001 - only a courtesy: the coercion problems are what must be said
        return []
    return [problem for problem in problems if problem.split(":", 1)[0].strip() not in failed]


class DuplicateKeyError(yaml.YAMLError):
    """A YAML mapping names a key twice (YAML's loaders would silently keep the last value)."""


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """yaml.safe_load's loader (libyaml's when present) that refuses duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise DuplicateKeyError(
                    f"line {line}: the setting {_brief(key)} is given twice (first on line {seen[key]}); "
                    "keep one of them"
                )
            if isinstance(key, (str, int, float, bool)):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _StrictLoader.construct_yaml_map)


def load_yaml_strict(text: str) -> Any:
    """yaml.safe_load, but a key given twice in one mapping raises DuplicateKeyError naming it and its lines."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def _out_of_range(config: RunConfig) -> list[str]:
    """Numbers that are not finite or beyond their field's bound (NUMBER_LIMITS)."""
    problems = []
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        limit = NUMBER_LIMITS.get(f.name, DEFAULT_NUMBER_LIMIT)
        if isinstance(value, float) and not math.isfinite(value):
            if f.name not in ("learning_rate",):  # learning_rate has its own message
                problems.append(f"{f.name}: must be a finite number, got {value}")
        elif abs(value) > limit:
            problems.append(f"{f.name}: {shown(value)} is out of range: at most {limit:,.0f}")
    return problems


def _brief(value: Any) -> str:
    """repr() cut short: a hostile YAML (deep nesting, billion laughs) must not build a huge message."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, 80, 80
    try:
        return short.repr(value)
    except RecursionError:
        return f"a nested {type(value).__name__}"


def _coerce(key: str, raw: Any, f: dataclasses.Field) -> Any:
    """Coerce a YAML/UI value to the field's type, or raise ValueError naming the field."""
    if f.metadata.get("choices") == PRECISION_CHOICES:
        if isinstance(raw, str) and raw.lower() in ("true", "false", "auto"):
            return {"true": True, "false": False, "auto": "auto"}[raw.lower()]
        if raw in PRECISION_CHOICES:
            return raw
        raise ValueError(f"{key}: expected auto, true or false, got {_brief(raw)}")
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false", "yes", "no", "1", "0"):
            return raw.lower() in ("true", "yes", "1")
        raise ValueError(f"{key}: expected true or false, got {_brief(raw)}")
    if kind == "int":
        if isinstance(raw, bool):
            raise ValueError(f"{key}: expected a whole number, got {_brief(raw)}")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        if isinstance(raw, str):
            try:
                return int(raw.strip())
            except ValueError:
                pass
        raise ValueError(f"{key}: expected a whole number, got {_brief(raw)}")
    if kind == "float":
        if isinstance(raw, str):
            try:
                raw = float(raw.strip())
            except ValueError:
                pass
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            # step intervals keep whole numbers whole: TrainingArguments wants ints above 1
            if isinstance(raw, float) and raw.is_integer() and f.name.endswith("_steps"):
                return int(raw)
            try:
                return raw if f.name.endswith("_steps") else float(raw)
            except OverflowError:  # an integer beyond any float (a 5,000-digit number typed in a form)
                raise ValueError(f"{key}: {shown(raw)} is out of range for a number") from None
        raise ValueError(f"{key}: expected a number, got {_brief(raw)}")
    if kind == "dict":
        if raw in (None, ""):
            return {}
        if isinstance(raw, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
            return dict(raw)
        raise ValueError(f"{key}: expected a mapping of column names to column names, got {_brief(raw)}")
    if kind == "str":
        if raw is None:
            return ""
        if f.metadata.get("list_ok") and isinstance(raw, (list, tuple)) and all(isinstance(v, str) for v in raw):
            return ",".join(raw)
        if isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
            return str(raw)
        raise ValueError(f"{key}: expected text, got {_brief(raw)}")
    return raw


def field_help() -> dict[str, dict[str, Any]]:
    """Field name -> {help, group, choices, default}: what a UI or docs generator needs."""
    out = {}
    for f in fields(RunConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out[f.name] = {**f.metadata, "default": default}
    return out

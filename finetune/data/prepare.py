"""What training consumes: normalized train/validation rows, their reports and token statistics."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from finetune.data.report import DatasetReport, load_records
from finetune.data.stats import token_length_stats
from finetune.demo import default_dataset
from finetune.errors import DataError
from finetune.names import display_name

SUMMARY_MAX_SKIPPED = 200


def split_train_val(rows: list[dict], val_split: float = 0.1, seed: int = 42) -> tuple[list[dict], list[dict]]:
    """Hold out a seeded random `val_split` of the rows (at least 1 when there are 2 or more)."""
    if not 0 <= val_split < 1:
        raise DataError(f"val_split must be in [0, 1), got {val_split}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_val = 0
    if val_split > 0 and len(rows) >= 2:
        n_val = min(max(1, round(len(rows) * val_split)), len(rows) - 1)
    held_out = set(order[:n_val])
    # both parts keep the file's order: the trainer shuffles every epoch anyway
    train = [row for i, row in enumerate(rows) if i not in held_out]
    val = [row for i, row in enumerate(rows) if i in held_out]
    return train, val


def to_prompt_completion(rows: list[dict]) -> list[dict]:
    """Conversations -> TRL's conversational prompt-completion ({"prompt": messages[:-1],
    "completion": [last assistant message]}), so only the final reply is trained when the chat
    template has no {% generation %} markers. Other rows are returned unchanged."""
    out = []
    for row in rows:
        if "messages" in row:
            messages = row["messages"]
            out.append({"prompt": list(messages[:-1]), "completion": [messages[-1]]})
        else:
            out.append(row)
    return out


def _conversational(report: DatasetReport) -> bool | None:
    """For preference data: conversations (True) or plain text (False); None otherwise."""
    if report.shape not in ("preference", "unpaired_preference"):
        return None
    return isinstance(report.rows[0]["prompt"], list)


def check_objective(report: DatasetReport, objective: str) -> None:
    """The data must fit what is learned: SFT needs answers to imitate, DPO/ORPO chosen/rejected pairs,
    KTO pairs (TRL unpairs them) or prompt/completion/label rows."""
    shape, name = report.shape, display_name(report.source)
    if objective == "grpo" and shape != "prompts":
        raise DataError(
            f"objective grpo samples completions for prompts and needs prompts data (a prompt column, an answer "
            f"column for the answer rewards), but {name} is {shape.replace('_', ' ')} data ({report.format}); "
            "a prompt/completion file can be read as prompts with dataset_format prompts and column_mapping "
            '{"answer": "completion"}'
        )
    if shape == "prompts" and objective != "grpo":
        raise DataError(
            f"{name} is prompts data (prompts, no completions to imitate or compare): train it with objective "
            f"grpo and reward functions, not {objective}"
        )
    if objective == "sft" and shape in ("preference", "unpaired_preference"):
        raise DataError(
            f"{name} is {shape.replace('_', ' ')} data (chosen/rejected or labelled completions), which "
            "supervised fine-tuning cannot use: set objective to dpo, orpo or kto (kto also reads unpaired rows)"
        )
    if objective in ("dpo", "orpo") and shape != "preference":
        hint = (
            "; unpaired prompt/completion/label rows train with objective kto" if shape == "unpaired_preference" else ""
        )
        raise DataError(
            f"objective {objective} needs preference pairs (columns chosen and rejected, with a prompt column or "
            f"a prompt both conversations repeat), but {name} is {shape.replace('_', ' ')} data ({report.format}){hint}"
        )
    if objective == "kto" and shape not in ("preference", "unpaired_preference"):
        raise DataError(
            f"objective kto needs prompt/completion/label rows or chosen/rejected pairs, but {name} is "
            f"{shape.replace('_', ' ')} data ({report.format})"
        )


@dataclass
class PreparedData:
    train_rows: list[dict] = field(repr=False)
    eval_rows: list[dict] = field(repr=False)
    report: DatasetReport
    eval_report: DatasetReport | None
    stats: dict[str, Any] | None
    summary: dict[str, Any]

    @property
    def shape(self) -> str:
        return self.report.shape


def prepare_data(config: Any, tokenizer: Any = None) -> PreparedData:
    """Load `config.dataset_path` (empty: the bundled sample), validation from `config.eval_dataset_path`
    or a seeded `config.val_split`, and token statistics at `config.max_length` (skipped without a tokenizer)."""

    objective = getattr(config, "objective", "sft")
    default = default_dataset(objective)
    source = str(config.dataset_path).strip() or str(default)
    mapping = dict(config.column_mapping or {})
    report = load_records(source, config.dataset_format, mapping)
    check_objective(report, objective)
    eval_report = None
    eval_source = str(config.eval_dataset_path or "").strip()
    if eval_source:
        eval_report = load_records(eval_source, config.dataset_format, mapping)
        if eval_report.shape != report.shape or _conversational(eval_report) != _conversational(report):
            raise DataError(
                f"the training data ({display_name(report.source)}) is {report.shape} ({report.format}) but the "
                f"validation data ({display_name(eval_report.source)}) is {eval_report.shape} ({eval_report.format}); "
                "both must have the same shape"
            )
        train_rows, eval_rows = list(report.rows), list(eval_report.rows)
    else:
        train_rows, eval_rows = split_train_val(report.rows, config.val_split, config.seed)
    stats = token_length_stats(train_rows, tokenizer, config.max_length) if tokenizer is not None else None
    summary = _summary(report, eval_report, train_rows, eval_rows, stats)
    return PreparedData(train_rows, eval_rows, report, eval_report, stats, summary)


def _summary(
    report: DatasetReport,
    eval_report: DatasetReport | None,
    train_rows: list[dict],
    eval_rows: list[dict],
    stats: dict[str, Any] | None,
) -> dict[str, Any]:
    warnings = list(report.warnings)
    if stats and stats["truncated"]:
        warnings.append(
            f"{stats['truncated']} of {stats['count']} training examples are longer than max_length="
            f"{stats['max_length']} tokens and will be truncated (suggested max_length: "
            f"{stats['suggested_max_length']})"
        )
    return {
        "source": report.source,
        "eval_source": eval_report.source if eval_report else None,
        "format": report.format,
        "shape": report.shape,
        "columns": list(report.columns),
        "total_rows": report.total_rows,
        "rows": report.kept_rows,
        "train_rows": len(train_rows),
        "val_rows": len(eval_rows),
        "skipped_rows": len(report.skipped),
        "skipped": report.to_dict(SUMMARY_MAX_SKIPPED)["skipped"],
        "eval": eval_report.to_dict(SUMMARY_MAX_SKIPPED) if eval_report else None,
        "warnings": warnings,
        "stats": {k: v for k, v in stats.items() if k != "lengths"} if stats else None,
    }

"""The studio's data desk: read, check, measure and preview a data source, with the caches a page
needs (it re-reads the same file for every preview click and every max_length change).

Nothing here draws: it returns the engine's reports, statistics and renderings.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from finetune.config import RunConfig
from finetune.data import (
    FORMAT_COLUMNS,
    SUPPORTED_EXTENSIONS,
    DatasetReport,
    length_stats,
    load_records,
    peek_columns,
    render_example,
    token_length_stats,
)
from finetune.data.readers import looks_like_hub_id
from finetune.demo import SAMPLE_DATASET, SAMPLE_PREFERENCE_DATASET, SAMPLE_PROMPTS_DATASET
from finetune.errors import DataError, FinetuneError
from finetune.models import load_tokenizer
from finetune.names import UPLOAD_PREFIX_CHARS, safe_name, upload_name
from finetune.paths import check_dataset_path, check_model_path

# every column role some format reads, for a column-mapping form
MAP_TARGETS = list(dict.fromkeys(c for spec in FORMAT_COLUMNS.values() for c in spec["required"] + spec["optional"]))


def _remember(cache: OrderedDict, key: tuple, value: Any, size: int) -> Any:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)
    return value


def resolve_source(dataset_path: str) -> str:
    """What an empty dataset_path means: the bundled sample."""
    return (dataset_path or "").strip() or str(SAMPLE_DATASET)


def source_label(dataset_path: str) -> str:
    """A source as a person names it: the sample, an upload by its original file name, else as typed."""
    if not (dataset_path or "").strip():
        return f"the bundled sample dataset ({SAMPLE_DATASET.name})"
    if dataset_path == str(SAMPLE_PREFERENCE_DATASET):
        return f"the bundled preference sample ({SAMPLE_PREFERENCE_DATASET.name})"
    if dataset_path == str(SAMPLE_PROMPTS_DATASET):
        return f"the bundled prompts sample ({SAMPLE_PROMPTS_DATASET.name})"
    name = Path(dataset_path).name
    original = upload_name(name)
    return original if original != name else dataset_path


def parse_mapping(text: str) -> dict[str, str]:
    """A column mapping typed as JSON/YAML ({"instruction": "question"}); empty means none."""
    if not (text or "").strip():
        return {}
    try:
        import yaml

        value = yaml.safe_load(text)
    except Exception:
        raise DataError('column_mapping is not readable; write it as {"instruction": "question"}') from None
    if not isinstance(value, dict):
        raise DataError('column_mapping must be a mapping like {"instruction": "question"}')
    return {str(k): str(v) for k, v in value.items() if v not in (None, "")}


def row_chat(row: dict) -> list[dict]:
    """A chat view of a normalized row without a tokenizer."""
    if "messages" in row:
        return list(row["messages"])
    if "chosen" in row or "label" in row:  # a preference pair, or KTO's labelled completion
        names = ("chosen", "rejected") if "chosen" in row else ("completion",)
        prompt = row["prompt"] if isinstance(row["prompt"], list) else [{"role": "user", "content": row["prompt"]}]
        turns = list(prompt)
        for name in names:
            answer = row[name]
            text = answer if isinstance(answer, str) else " ".join(str(m.get("content", "")) for m in answer)
            title = name if name != "completion" else ("good" if row.get("label") else "bad")
            turns.append({"role": "assistant", "content": text, "title": title})
        return turns
    if "prompt" in row and "completion" not in row:  # GRPO's prompt rows: the prompt alone
        prompt = row["prompt"]
        return list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    if "prompt" in row:
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, list):
            return list(prompt) + list(completion)
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    return [{"role": "text", "content": row.get("text", "")}]


class DataDesk:
    """Data sources of one workspace. Typed paths must lie in the allowed places (finetune.paths)."""

    map_targets = MAP_TARGETS
    extensions = SUPPORTED_EXTENSIONS
    preference_sample = str(SAMPLE_PREFERENCE_DATASET)  # the bundled pairs for DPO/ORPO/KTO
    prompts_sample = str(SAMPLE_PROMPTS_DATASET)  # the bundled prompts with answers for GRPO

    def __init__(self, workspace: Path, *, restrict_paths: bool = True):
        self.workspace = workspace
        self.restrict_paths = restrict_paths
        self._lock = threading.Lock()
        self._reports: OrderedDict[tuple, DatasetReport] = OrderedDict()
        self._tokenizers: OrderedDict[tuple, Any] = OrderedDict()
        self._lengths: OrderedDict[tuple, dict] = OrderedDict()

    def _check(self, dataset_path: str) -> None:
        if self.restrict_paths:
            check_dataset_path(dataset_path or "", self.workspace)

    # reading -------------------------------------------------------------------------
    def report(self, dataset_path: str, fmt: str = "auto", mapping: dict | None = None) -> DatasetReport:
        """The DatasetReport of a source (cached by file identity, format and mapping)."""
        self._check(dataset_path)
        source = resolve_source(dataset_path)
        key = (_source_key(source), fmt, json.dumps(mapping or {}, sort_keys=True))
        with self._lock:
            if key in self._reports:
                self._reports.move_to_end(key)
                return self._reports[key]
        report = load_records(source, dataset_format=fmt, column_mapping=mapping or None)
        with self._lock:
            return _remember(self._reports, key, report, size=4)

    @staticmethod
    def is_hub_dataset(text: str) -> bool:
        """Does `text` name a Hub dataset (`owner/name`, not a local path or a data file's name)?"""

        return bool(text) and looks_like_hub_id(text)

    def columns(self, dataset_path: str) -> list[str]:
        """Columns of a source whose format could not be detected (for the mapping form); [] when unreadable."""
        try:
            self._check(dataset_path)
            return peek_columns(resolve_source(dataset_path))
        except FinetuneError:
            return []

    def store_upload(self, path: str | None) -> str:
        """Copy an uploaded file into <workspace>/uploads: a stable path a run can read later."""
        if not path:
            return ""
        src = Path(path)
        if src.suffix.lower() not in SUPPORTED_EXTENSIONS:
            raise DataError(f"{src.name}: unsupported file type; upload one of {', '.join(SUPPORTED_EXTENSIONS)}")
        hasher = hashlib.sha256()
        with open(src, "rb") as fh:  # in chunks: a 500 MB upload is never held in memory
            for chunk in iter(lambda: fh.read(2**20), b""):
                hasher.update(chunk)
        digest = hasher.hexdigest()[:UPLOAD_PREFIX_CHARS]
        dest = self.workspace / "uploads" / f"{digest}-{safe_name(src.name, f'data{src.suffix}', 120)}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            shutil.copyfile(src, dest)
        return str(dest)

    def stored_upload(self, path: str | None) -> str | None:
        """`path` when it is a file this desk stored (in <workspace>/uploads), else None."""
        if not path:
            return None
        file = Path(path)
        uploads = (self.workspace / "uploads").resolve()
        try:
            return str(file) if file.is_file() and file.resolve().parent == uploads else None
        except OSError:
            return None

    def problems_csv(self, report: DatasetReport | None) -> str | None:
        """The skipped rows of a report as a CSV file (row, where, reason), or None when there are none."""
        if report is None or not report.skipped:
            return None
        out = self.workspace / "reports" / f"problems-{hashlib.sha256(report.source.encode()).hexdigest()[:8]}.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["row", "where", "reason"])
            for issue in report.skipped:
                writer.writerow([issue.row, issue.where, issue.reason])
        return str(out)

    # tokens ----------------------------------------------------------------------------
    def tokenizer(self, model: str, trust_remote_code: bool = False):
        """The tokenizer of a model (cached); a typed local folder must lie in the allowed places."""

        if self.restrict_paths:
            check_model_path(model or "", self.workspace)
        key = ((model or "").strip(), bool(trust_remote_code))
        with self._lock:
            if key in self._tokenizers:
                return self._tokenizers[key]
        config = RunConfig(model_name_or_path=key[0] or "demo", trust_remote_code=key[1])
        tok = load_tokenizer(config, self.workspace)
        with self._lock:
            return _remember(self._tokenizers, key, tok, size=3)

    def length_stats(self, report: DatasetReport, model: str, max_length: int, trust_remote_code: bool = False) -> dict:
        """Token-length statistics of a report's rows under a model's tokenizer, truncation at `max_length`.
        The token counts are cached per (report, tokenizer); only the truncation is recomputed."""
        key = (id(report), (model or "").strip(), bool(trust_remote_code))
        with self._lock:
            cached = self._lengths.get(key)
        if cached is None:
            tokenizer = self.tokenizer(model, trust_remote_code)
            cached = _remember(self._lengths, key, token_length_stats(report.rows, tokenizer, int(max_length)), size=8)
        # a large file is measured on a seeded sample: say so with the numbers
        return {
            **length_stats(cached["lengths"], int(max_length)),
            "sampled": cached["sampled"],
            "rows": cached["rows"],
        }

    @staticmethod
    def lengths_at(lengths: list[int], max_length: int) -> dict:
        """Statistics of already measured lengths at another max_length."""
        return length_stats(lengths, int(max_length))

    def render(self, report: DatasetReport, index: int, model: str, train_on_prompt: bool, trust_remote_code=False):
        """Example `index` (1-based, clamped) as the trainer sees it: see finetune.data.render_example."""
        i = max(0, min(int(index or 1) - 1, len(report.rows) - 1))
        return render_example(report.rows[i], self.tokenizer(model, trust_remote_code), train_on_prompt=train_on_prompt)


def _source_key(source: str) -> tuple:
    path = Path(source)
    try:
        stat = path.stat()
        return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    except OSError:
        return (source,)

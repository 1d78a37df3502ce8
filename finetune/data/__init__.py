"""Datasets: read files or Hub ids, detect and validate their format, normalize rows to TRL's
shapes, split, measure token lengths and preview what the model trains on. No UI code here."""

from finetune.data.formats import FORMAT_COLUMNS, describe_formats
from finetune.data.prepare import PreparedData, prepare_data, split_train_val, to_prompt_completion
from finetune.data.preview import render_example
from finetune.data.raw import SUPPORTED_EXTENSIONS, RowIssue
from finetune.data.readers import read_source
from finetune.data.report import DatasetReport, load_records, row_shape
from finetune.data.stats import length_stats, token_length_stats
from finetune.data.stream import scan, streamable
from finetune.data.templates import has_generation_markers


def peek_columns(source: str) -> list[str]:
    """The column names a file (or Hub dataset) has, for a column-mapping form when detection fails."""
    streamed = streamable(source)
    return scan(streamed).columns if streamed is not None else list(read_source(source).columns)


__all__ = [
    "peek_columns",
    "FORMAT_COLUMNS",
    "SUPPORTED_EXTENSIONS",
    "DatasetReport",
    "PreparedData",
    "RowIssue",
    "describe_formats",
    "has_generation_markers",
    "length_stats",
    "load_records",
    "prepare_data",
    "render_example",
    "row_shape",
    "split_train_val",
    "to_prompt_completion",
    "token_length_stats",
]

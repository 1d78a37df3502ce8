"""Which page actions share a worker pool. Gradio gives each listener one worker by default
(ui.build_app): the Data tab's readers of a whole data set (an upload, the sample, a Hub id, a new format
or mapping, a validation file, the re-measure after a model change) would then queue every other
user's read behind one heavy upload for minutes. They share a pool of DATA_WORKERS instead; the
engine's data desk is thread-safe and reads a large JSON Lines file in bounded memory
(finetune.data.stream), so a few at once fit. The quick actions (preview another example, a new
max_length) keep their own workers and never wait behind a read.
"""

from __future__ import annotations

import gradio as gr

DATA_POOL = "data"
DATA_WORKERS = 4
HEAVY_DATA_ACTIONS = (
    "load_data_file",
    "load_sample_data",
    "load_preference_sample",
    "load_hub_dataset",
    "set_data_format",
    "apply_column_mapping",
    "load_validation_file",
)
HEAVY_DATA_HANDLERS = ("reanalyze", "use_sample", "use_val")  # the same reads, wired without an API name


def pool_data_reads(blocks: gr.Blocks) -> int:
    """Put the Data tab's whole-data-set reads into one pool of DATA_WORKERS; returns how many."""
    count = 0
    for block_fn in blocks.fns.values():
        name = getattr(block_fn.fn, "__name__", "")
        if block_fn.api_name in HEAVY_DATA_ACTIONS or name in HEAVY_DATA_HANDLERS:
            block_fn.concurrency_id, block_fn.concurrency_limit = DATA_POOL, DATA_WORKERS
            count += 1
    return count

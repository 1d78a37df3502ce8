"""finetune studio's engine (no gradio): see docs/ARCHITECTURE.md."""

import logging


def _quiet_optional_kernel_notice(record: logging.LogRecord) -> bool:
    # bitsandbytes looks for an optional CPU kernel on the Hub at import and falls back to its own
    # code; the notice is not the user's problem and printed on every launch. Other warnings pass.
    return "gemm_4bit_forward from kernels-community" not in record.getMessage()


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_quiet_optional_kernel_notice)

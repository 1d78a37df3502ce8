"""finetune studio's engine (no gradio): see docs/ARCHITECTURE.md."""

import logging


def _quiet_optional_kernel_notice(record: logging.LogRecord) -> bool:
    # bitsandbytes looks for an optional CPU kernel on the Hub at import and falls back to its own
    # code; the notice is not the user's problem and printed on every launch. Other warnings pass.
    # With `kernels` installed (transformers >= 5.25 requires it), the lookup offline adds a second
    # notice from kernels itself about the same kernels-community repository.
    message = record.getMessage()
    return "gemm_4bit_forward from kernels-community" not in message and (
        "Skipping publisher trust check for 'kernels-community/" not in message
    )


for _name in ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub"):
    logging.getLogger(_name).addFilter(_quiet_optional_kernel_notice)

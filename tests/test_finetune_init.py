"""The package's import-time setup: bitsandbytes' optional-kernel notice is silenced, its real warnings are not."""

from __future__ import annotations

import subprocess
import sys


def test_optional_kernel_notice_is_silenced_and_other_warnings_pass():
    code = (
        "import logging, finetune, bitsandbytes\n"
        "logging.getLogger('bitsandbytes.backends.cpu.ops').warning('a real warning')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "kernels-community" not in result.stderr
    assert "a real warning" in result.stderr

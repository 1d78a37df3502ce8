#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run the whole suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m "not slow"` for the fast tests, `-n 0` for one
# process). Three pytest-xdist workers, each test file in one worker (its module fixtures start once): the
# trainings, subprocesses and browser flows wait often enough that three workers beat two on 2 cores
# (the whole suite: 14 min 40 s with three on 2026-12-04, 17 min 23 s and 18 min 32 s with two in earlier
# fresh-clone CI runs; not a paired comparison).
set -euo pipefail
cd "$(dirname "$0")/.."
# torch==2.13.0 is the local CPU wheel here; naming it keeps pip from pulling a CUDA build
python3 -m pip install -q --disable-pip-version-check torch==2.13.0 -e ".[dev]"
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q chromium; }
  else
    echo "chromium is not installed and this is not root: the browser test will be skipped" >&2
  fi
fi
exec python3 -m pytest -n "${TEST_WORKERS:-3}" --dist loadfile "$@"

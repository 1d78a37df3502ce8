"""llama.cpp's Hugging Face -> GGUF converter, taken from the pinned llama-cpp-python source distribution.

No llama.cpp code lives in this repository. llama.cpp publishes its converter only as Python files
in its own tree; the llama-cpp-python release on PyPI ships that tree (`vendor/llama.cpp/`) in its
source distribution, so pip can fetch the converter by version like any other dependency, with no
git clone and no compiler: `pip download --no-binary :all: --no-deps llama-cpp-python==VERSION`.

On first use the sdist (about 76 MB) is downloaded with this interpreter's pip (its index settings,
its proxy) and only the converter's files are unpacked (about 2.5 MB) into

    $FINETUNE_GGUF_CONVERTER            when set: a folder made by `finetune gguf-converter`, or
                                        a downloaded sdist (.tar.gz) to unpack into the cache
    ~/.cache/finetune-studio/llama.cpp-converter-<VERSION>/   otherwise ($XDG_CACHE_HOME if set)

An offline host: `pip download --no-binary :all: --no-deps llama-cpp-python==0.3.36` on a machine
with the registry, copy the .tar.gz over, then `finetune gguf-converter --sdist FILE` (or point
FINETUNE_GGUF_CONVERTER at it). The Docker image runs `finetune gguf-converter` at build time.

The converter is pinned with the quantizer (the optional `.[gguf]` extra installs the same version
of llama-cpp-python), so the files it writes are the ones that llama.cpp build reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from finetune.errors import ModelError

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
ENV_VAR = "FINETUNE_GGUF_CONVERTER"
MARKER = "CONVERTER.json"
# what the converter needs from vendor/llama.cpp/ (models/templates: chat templates some families load)
WANTED = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/", "models/templates/", "LICENSE")
FETCH_TIMEOUT_S = 900


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "finetune-studio" / f"llama.cpp-converter-{LLAMA_CPP_PYTHON_VERSION}"


def converter_dir(fetch: bool = True) -> Path:
    """The folder holding convert_hf_to_gguf.py, fetched (or unpacked from $FINETUNE_GGUF_CONVERTER's
    sdist) on first use; raises ModelError with what to do when it cannot be had."""
    override = os.environ.get(ENV_VAR, "").strip()
    if override:
        path = Path(override).expanduser()
        if path.is_dir():
            if not (path / "convert_hf_to_gguf.py").is_file():
                raise ModelError(f"{ENV_VAR}={path} holds no convert_hf_to_gguf.py; run `finetune gguf-converter`")
            return path
        if path.is_file():
            target = default_cache_dir()
            return target if is_ready(target) else unpack_sdist(path, target)
        raise ModelError(f"{ENV_VAR}={path} is neither a folder nor a downloaded {SDIST_NAME}")
    target = default_cache_dir()
    if is_ready(target):
        return target
    if not fetch:
        raise ModelError(f"llama.cpp's GGUF converter is not fetched yet (it goes to {target})")
    return fetch_converter(target)


def is_ready(folder: Path) -> bool:
    return (folder / MARKER).is_file() and (folder / "convert_hf_to_gguf.py").is_file()


def fetch_converter(target: Path | None = None) -> Path:
    """Download the pinned sdist with pip and unpack the converter into `target` (the cache by default)."""
    target = target or default_cache_dir()
    with tempfile.TemporaryDirectory(prefix="finetune-sdist-") as tmp:
        command = [
            sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
            "--disable-pip-version-check", "-q", "-d", tmp, f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}",
        ]  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ModelError(f"could not download llama-cpp-python {LLAMA_CPP_PYTHON_VERSION}: {exc}") from None
        sdist = Path(tmp) / SDIST_NAME
        if done.returncode != 0 or not sdist.is_file():
            reason = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            raise ModelError(
                f"could not download llama.cpp's GGUF converter (llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} "
                f"source distribution) with pip: {(reason[-1] if reason else 'no file')[:300]}. On a host without "
                f"the package registry: download {SDIST_NAME} elsewhere (pip download --no-binary :all: --no-deps "
                f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}), then run `finetune gguf-converter --sdist FILE`"
            )
        return unpack_sdist(sdist, target)


def unpack_sdist(sdist: str | Path, target: Path | None = None) -> Path:
    """Unpack only the converter's files of a llama-cpp-python sdist into `target` (staged, then renamed)."""
    sdist, target = Path(sdist), target or default_cache_dir()
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
    staging = target.with_name(f".{target.name}.unpacking-{os.getpid()}")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        with tarfile.open(sdist, "r:gz") as tar:
            members = []
            for member in tar.getmembers():
                rest = member.name[len(prefix) :] if member.name.startswith(prefix) else ""
                if rest and (member.isfile() or member.isdir()) and any(_wanted(rest, w) for w in WANTED):
                    member.name = rest
                    members.append(member)
            if not any(m.name == "convert_hf_to_gguf.py" for m in members):
                raise ModelError(f"{sdist} is not the llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} source distribution")
            tar.extractall(staging, members=members, filter="data")
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        marker = {"llama_cpp_python": LLAMA_CPP_PYTHON_VERSION, "sdist_sha256": digest, "from": sdist.name}
        (staging / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except (OSError, tarfile.TarError) as exc:
        raise ModelError(f"could not unpack {sdist} into {target}: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _wanted(rest: str, wanted: str) -> bool:
    return rest.startswith(wanted) if wanted.endswith("/") else rest == wanted

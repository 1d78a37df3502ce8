"""presets/ and accelerate_configs/ live at the top of the repository, and a non-editable install
(`pip install .`) must still find them: the wheel carries them in finetune/shipped/."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from finetune.files import shipped_dir

ROOT = Path(__file__).resolve().parent.parent


def test_a_checkout_reads_the_repositorys_folders():
    assert shipped_dir("presets") == ROOT / "presets"
    assert shipped_dir("accelerate_configs") == ROOT / "accelerate_configs"
    with pytest.raises(ValueError):
        shipped_dir("../etc")


@pytest.mark.slow
def test_a_non_editable_install_finds_presets_and_accelerate_configs(tmp_path):
    # the wheel `pip install .` builds (no build isolation: setuptools is installed, nothing is fetched)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("finetune_studio-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("presets", "accelerate_configs"):
        for path in (ROOT / folder).glob("*.yaml"):
            assert f"finetune/shipped/{folder}/{path.name}" in names

    # installed into a fresh folder, imported from elsewhere: the lookups find the shipped copies
    target = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    probe = (
        "import finetune, finetune.presets as p, finetune.launch_commands as l;"
        "print(finetune.__file__); print(len(p.list_presets())); print(l.accelerate_config_path('fsdp').is_file())"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    module, count, fsdp = out.stdout.split()
    assert Path(module).is_relative_to(target)  # the installed copy, not this checkout
    assert int(count) == len(list((ROOT / "presets").glob("*.yaml"))) and fsdp == "True"

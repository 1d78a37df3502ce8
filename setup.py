"""Build hook: the top-level presets/ and accelerate_configs/ ship inside the package
(finetune/shipped/), so a non-editable install (`pip install .`) finds them too;
finetune/files.py (shipped_dir) looks there first, then in the repository checkout."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("presets", "accelerate_configs")


class BuildWithShippedFiles(build_py):
    def run(self):
        super().run()
        for name in SHIPPED:
            target = Path(self.build_lib) / "finetune" / "shipped" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(ROOT / name, target, ignore=shutil.ignore_patterns("__pycache__"))


setup(cmdclass={"build_py": BuildWithShippedFiles})

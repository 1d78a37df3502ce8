"""Every library the engine and the app import is one pyproject.toml names, and CI runs the suite
in an environment of its own: a package installed by hand on the machine can hide neither."""

from __future__ import annotations

import ast
import os
import sys
import sysconfig
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
# imported only after a probe says they are there, by code that says what to install when they are not
PROBED = {
    "unsloth": "the bench's optional Unsloth arm (GPU only)",
    "llama_cpp": "llama-cpp-python, the optional .[gguf] extra (K-quants, running a GGUF in llama.cpp)",
    # llama.cpp's converter, imported from the folder fetched from llama-cpp-python's sdist (gguf_converter)
    "conversion": "llama.cpp's converter package, fetched on first GGUF export",
    "convert_hf_to_gguf": "llama.cpp's converter script, fetched on first GGUF export",
}


def _imported_top_level() -> dict[str, str]:
    """Top-level module -> a file importing it, for the engine, the UI and the launcher."""
    found: dict[str, str] = {}
    for path in [*ROOT.glob("finetune/**/*.py"), *ROOT.glob("ui/**/*.py"), ROOT / "app.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    names = set()
    for spec in specs:
        name = spec.split(";")[0].split("[")[0]
        for sep in "<>=!~ ":
            name = name.split(sep)[0]
        names.add(name.strip().lower().replace("_", "-"))
    return names


def test_every_imported_library_is_declared():
    declared = _declared()
    distributions = packages_distributions()
    missing = []
    for module, where in sorted(_imported_top_level().items()):
        if module in sys.stdlib_module_names or module in ("finetune", "ui") or module in PROBED:
            continue
        dists = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not dists & declared:
            missing.append(f"{module} (imported in {where}; distribution {', '.join(sorted(dists))})")
    assert not missing, "imported but not in pyproject.toml: " + "; ".join(missing)


@pytest.mark.skipif(not os.environ.get("FINETUNE_CI_VENV"), reason="only under .ci/run, which makes the environment")
def test_ci_runs_in_a_throwaway_environment():
    venv = Path(os.environ["FINETUNE_CI_VENV"]).resolve()
    assert Path(sys.prefix).resolve() == venv and sys.prefix != sys.base_prefix
    base_site = Path(sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["purelib"])
    assert str(base_site) not in sys.path, "the machine's own site-packages is visible to the tests"

"""The core's import arrows (read with ast, nothing is imported): errors at the bottom, no backend
importing the launcher, no core module importing a dataset or domain package."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

LIBRARY = pathlib.Path(__file__).resolve().parents[1] / "tfos_lib"
CORE = ["__init__", "errors", "launcher", "process", "context", "feed", "monitor", "rendezvous", "callbacks",
        "tfenv", "parallel", "backends/__init__", "backends/barrier", "backends/local", "backends/tfos"]
NOT_FOR_THE_CORE = ("tfos_lib.datasets", "tfos_lib.gp", "tfos_lib.recsys", "tfos_lib.rl", "tfos_lib.job",
                    "tfos_lib.report", "tfos_lib.ml", "tfos_lib.export")


def tfos_lib_imports(module: str) -> set[str]:
    """Every tfos_lib module ``module`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse((LIBRARY / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tfos_lib":
            found.update(f"{node.module}.{a.name}" if node.module == "tfos_lib" else node.module for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "tfos_lib")
    return found


def test_errors_imports_nothing_from_tfos_lib():
    assert tfos_lib_imports("errors") == set()


@pytest.mark.parametrize("backend", ["barrier", "local", "tfos"])
def test_no_backend_imports_the_launcher(backend):
    assert "tfos_lib.launcher" not in tfos_lib_imports(f"backends/{backend}")


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_no_dataset_service_or_domain_module(module):
    wrong = sorted(name for name in tfos_lib_imports(module) if name.startswith(NOT_FOR_THE_CORE))
    assert wrong == [], f"tfos_lib/{module}.py imports {wrong}; the core must not depend on them"


def test_importing_tfos_lib_leaves_the_process_runner_unimported():
    # Child processes run `python -m tfos_lib.process`; importing it earlier would run it twice.
    code = "import sys, tfos_lib; print('tfos_lib.process' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"

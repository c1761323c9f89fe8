"""The package: one version (pyproject.toml), and a wheel with the library, its type marker and licence, and no more."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import tfos_lib

REPO = Path(__file__).resolve().parents[1]


def _pyproject_version() -> str:
    return re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE)[1]


def test_the_version_comes_from_pyproject():
    assert tfos_lib.__version__ == _pyproject_version()
    assert "__version__ = \"" not in (REPO / "tfos_lib" / "version.py").read_text()  # no second copy


def test_changelog_and_licence_are_there():
    assert "Apache License" in (REPO / "LICENSE").read_text()[:200]
    assert f"## [{_pyproject_version()}]" in (REPO / "CHANGELOG.md").read_text()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out, source = tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("source")
    # A clean copy of what the build reads: setuptools' build/ cache in the clone could hold deleted modules.
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "tfos_lib", source / "tfos_lib", ignore=shutil.ignore_patterns("__pycache__"))
    # --no-isolation: the build backend (setuptools) is installed already; nothing is downloaded.
    run = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(source)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (found,) = out.glob("*.whl")
    return found


def test_wheel_contents(wheel):
    assert wheel.name == f"tfos_lib-{_pyproject_version()}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    library = {n for n in names if n.startswith("tfos_lib/")}
    expected = {str(p.relative_to(REPO)) for p in (REPO / "tfos_lib").rglob("*.py")} | {"tfos_lib/py.typed"}
    assert library == expected
    assert not [n for n in names if n.startswith(("jobs/", "tests/", "notebooks/", "benchmarks/"))]
    info = f"tfos_lib-{_pyproject_version()}.dist-info"
    assert f"{info}/LICENSE" in names or f"{info}/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata, re.MULTILINE)
    core = [r for r in requires if "extra ==" not in r]
    numpy = [r for r in requires if r.startswith("numpy")]
    # numpy < 2 only where gpflow needs it (the gp extra); the core runs on numpy 2.
    assert [r for r in numpy if "extra ==" not in r] == ["numpy>=1.26"]
    assert [r for r in numpy if "<2" in r] == ['numpy<2; extra == "gp"']
    assert any(r.startswith("tensorflow") for r in core) and any(r.startswith("pyspark") for r in core)
    assert {"gp", "bnn", "rl", "tflite", "trees", "mlflow", "notebooks", "test"} <= set(
        re.findall(r"^Provides-Extra: (.+)$", metadata, re.MULTILINE))
    assert not [r for r in core if r.startswith("mlflow")]  # an extra, never core

"""The package version: pyproject.toml's, read from the installed package's metadata.

A source checkout that is not installed (``PYTHONPATH=.``, Spark's ``--py-files`` zip of it)
reads pyproject.toml beside the package instead.
"""

from __future__ import annotations


def _version() -> str:
    from importlib import metadata
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if pyproject.is_file():  # a checkout: its pyproject.toml wins over an install of another checkout
        import re

        found = re.search(r'^version = "([^"]+)"', pyproject.read_text(), re.MULTILINE)
        if found:
            return found[1]
    try:
        return metadata.version("tfos_lib")
    except metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = _version()

"""A shim for tools that still run ``setup.py``: pyproject.toml holds all of tfos_lib's metadata."""

from setuptools import setup

setup()

"""The package version, in one place: setup.py reads it from here without importing tfos_lib."""

__version__ = "0.1.0"

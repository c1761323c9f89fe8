"""Finding a dataset's file under ``--data-dir``, with a message that says how to fix a wrong path."""

from __future__ import annotations

import os
from pathlib import Path


def find_data_file(data_dir: str | os.PathLike, name: str, expected: str, how_to_fix: str) -> str:
    """``data_dir/name``, or ``data_dir`` itself if it is a file.

    Raises:
        FileNotFoundError: naming the expected file (``expected`` describes its format),
            what the directory holds, and ``how_to_fix``.
    """
    data_dir = Path(data_dir)
    if data_dir.is_file():
        return str(data_dir)
    path = data_dir / name
    if path.is_file():
        return str(path)
    found = sorted(p.name for p in data_dir.iterdir())[:10] if data_dir.is_dir() else None
    where = f"it holds {found}" if found is not None else "that directory does not exist"
    raise FileNotFoundError(f"expected {path} ({expected}); {where}. {how_to_fix}")

"""What the notebooks under ``notebooks/`` share: the Spark session, the job's arguments, the results.

The notebooks call the jobs' own functions (``jobs/<job>.py``); this module only
connects them to a notebook: an existing ``spark`` session (Databricks gives one) or
a ``local[2]`` one, widget values turned into the job's command line, and the
results shown inline (the book's figures beside ours, the plots).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

__all__ = ["argv", "book_vs_ours", "show_plots", "spark_session", "use_repository_root"]


def use_repository_root() -> str:
    """Makes the repository root the working directory and puts it on ``sys.path`` (so ``import jobs`` works).

    Jupyter starts a notebook's kernel in ``notebooks/``, a Databricks Git folder in the
    notebook's folder too; the jobs' relative paths (``output/...``, ``build/...``) are
    relative to the repository root, as for ``./spark-submit.sh``.
    """
    here = os.getcwd()
    for candidate in (here, os.path.dirname(here)):
        if os.path.isdir(os.path.join(candidate, "jobs")) and os.path.isdir(os.path.join(candidate, "tfos_lib")):
            os.chdir(candidate)
            if candidate not in sys.path:
                sys.path.insert(0, candidate)
            return candidate
    raise FileNotFoundError(
        f"the notebook runs in {here}, which is neither the repository root nor its notebooks/ folder: "
        "start Jupyter from the clone (or open the notebook from the Git folder on Databricks)."
    )


def spark_session(master: str = "local[2]", profile: str = os.path.join("conf", "local.conf")):
    """The active Spark session (Databricks, ``pyspark`` shell), else a new one on ``master``.

    A new session takes its settings from ``profile``, the ``./spark-submit.sh`` profile of local runs
    (relative to the working directory, the repository root after :func:`use_repository_root`), so a
    notebook preprocesses as the job does: Spark's default of 200 shuffle partitions made the
    recommend notebook's tiny data take 118 s against 47 s with the profile's 8.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName("tfos_lib notebook")
    for key, value in read_profile(profile).items():
        builder = builder.config(key, value)
    return builder.master(master).config("spark.executorEnv.TF_USE_LEGACY_KERAS", "1").getOrCreate()


def read_profile(path: str) -> dict[str, str]:
    """A Spark properties file's ``key value`` (or ``key=value``) lines; ``#`` comments and blank lines skipped.

    {} if the file is absent (a notebook outside a clone of this repository).
    """
    if not os.path.exists(path):
        return {}
    settings = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                key, value = re.split(r"\s*[=\s]\s*", line, maxsplit=1)
                settings[key] = value
    return settings


def argv(**options: Any) -> list[str]:
    """``--name value`` for each option (``_`` -> ``-``); ``None`` and ``""`` are left out, booleans are flags."""
    args: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value == "":
            continue
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    return args


def book_vs_ours(metrics: dict, ours: dict[str, str]):
    """A table: each of ``ours`` (label -> dotted key in metrics.json's ``results``) beside the book's figures."""
    import pandas as pd

    def lookup(values: Any, key: str):
        for part in key.split("."):
            values = values.get(part) if isinstance(values, dict) else None
        return values

    rows = [{"what": label, "value": lookup(metrics["results"], key)} for label, key in ours.items()]
    book = metrics.get("book_reference")
    book_rows = book.items() if isinstance(book, dict) else [("book", book)]
    rows += [{"what": f"book: {key}", "value": value} for key, value in book_rows]
    rows += [{"what": "wall seconds", "value": round(metrics["wall_seconds"], 1)}]
    return pd.DataFrame(rows).set_index("what")


def show_plots(output_dir: str, names: list[str] | None = None) -> list[str]:
    """Displays the PNG plots of a run inline (every ``*.png`` at the top of ``output_dir`` by default)."""
    from IPython.display import Image, display

    from tfos_lib import storage

    found = [rel for rel in storage.list_files(output_dir) if "/" not in rel and rel.endswith(".png")]
    shown = [name for name in (names or found) if name in found]
    for name in shown:
        display(Image(data=storage.read_bytes(storage.join(output_dir, name))))
    return shown

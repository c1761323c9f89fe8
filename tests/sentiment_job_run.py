"""One run of the sentiment job on a generated file, shared by its job and browser tests.

Training (two barrier workers, both splits) is the slow part of those tests, so it
runs once per pytest process, the first time a test asks for it.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from jobs import sentiment

ROWS = 600
ARGS = ["--num-workers", "2", "--epochs", "6", "--synthetic-rows", str(ROWS)]


@functools.lru_cache(maxsize=None)
def job_output() -> tuple[Path, dict]:
    """``(output_dir, metrics)`` of ``sentiment.main(ARGS)``; needs an active local[2] SparkSession."""
    out = Path(tempfile.mkdtemp(prefix="sentiment-job-"))
    atexit.register(shutil.rmtree, out, True)
    return out, sentiment.main([*ARGS, "--output-dir", str(out)])

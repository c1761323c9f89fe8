"""The ``local`` backend: one worker in the driver process, for debugging (breakpoints work).

DataFrames are collected to local Arrow files; exceptions of ``train_fn`` propagate
unchanged, so a debugger stops where the worker failed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from tfos_lib import feed
from tfos_lib.context import WorkerSpec, run_worker


def run(spark, payload: bytes, num_workers: int, inputs: dict, output_dir: str, timeouts, monitor, attempt: int,
        warm_workers: bool = False) -> Any:
    """Runs the one worker here and returns its value (driver side; ``num_workers`` is always 1).

    ``warm_workers`` changes nothing: the worker is the driver's own process.
    """
    import pyarrow as pa

    workdir = tempfile.mkdtemp(prefix="tfos-local-")
    try:
        shards = {}
        for name, spec in inputs.items():
            df = spec.df if isinstance(spec, feed.Input) else spec
            table = df.toArrow()
            plan = feed.plan_input(name, df.columns, table.num_rows, 1, sharded=True)
            path = os.path.join(workdir, f"{name}.arrow")
            with pa.ipc.new_file(path, table.schema) as writer:
                writer.write_table(table)
            shards[name] = (plan, path)
        spec = WorkerSpec(
            rank=0,
            num_workers=1,
            output_dir=output_dir,
            backend="local",
            num_cpus=os.cpu_count() or 1,
            tf_config=None,
            inputs=shards,
            payload=payload,
            monitor_address=monitor.address,
            attempt=attempt,
        )
        return run_worker(spec)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

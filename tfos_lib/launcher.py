"""The launcher: run one ``train_fn`` on N Spark executors as a data-parallel TensorFlow cluster.

:func:`run` checks its arguments and the cluster's task slots, owns the restart
loop and the driver's :class:`~tfos_lib.monitor.Monitor`, and hands each attempt
to one backend module of :mod:`tfos_lib.backends` (``barrier``, ``tfos``,
``local``). Every backend module has the same ``run(spark, payload, num_workers,
inputs, output_dir, timeouts, monitor, attempt)``; none imports this module.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import tempfile
import time
from typing import Any, Callable

from tfos_lib import runstate, storage
from tfos_lib.errors import LauncherTimeout, NotEnoughSlots, WorkerError
from tfos_lib.monitor import Monitor, Timeouts

log = logging.getLogger("tfos_lib")

BACKENDS = ("barrier", "tfos", "local")


def run(
    train_fn: Callable[..., Any],
    *args: Any,
    num_workers: int = 1,
    backend: str = "barrier",
    inputs: dict | None = None,
    output_dir: str | None = None,
    spark=None,
    max_restarts: int = 0,
    timeouts: Timeouts | None = None,
    warm_workers: bool | None = None,
) -> Any:
    """Runs ``train_fn(ctx, *args)`` on ``num_workers`` workers and returns the chief's return value.

    Runs on the driver. Each worker gets a :class:`~tfos_lib.context.WorkerContext`
    (rank, world size, chief flag, output directory, its share of ``inputs``);
    ``ctx.strategy()`` is the ``MultiWorkerMirroredStrategy`` joining them, and
    ``ctx.callbacks(...)`` the Keras callbacks for checkpoints, live progress and
    TensorBoard.

    Args:
        train_fn: ``train_fn(ctx, *args)``; must be picklable (module-level or a
            closure cloudpickle can ship) and import TensorFlow inside itself.
        *args: passed through to ``train_fn`` (a job's config, usually).
        num_workers: how many TensorFlow workers; each takes one Spark task slot.
        backend: ``"barrier"`` (Spark barrier mode, the default), ``"tfos"``
            (TensorFlowOnSpark's ``TFCluster`` with InputMode.SPARK feeding) or
            ``"local"`` (one worker in this process, for debugging).
        inputs: name -> DataFrame (split into equal shards, one per worker) or
            :class:`~tfos_lib.feed.Input` (``shard=False``: every worker gets all rows).
        output_dir: where workers write results: a local path (on a multi-host
            cluster only with ``spark.tfos.sharedOutputDir=true``, a mount every host
            shares) or a URI (``s3a://``, ``gs://``, ``hdfs://``, ``abfss://``,
            ``dbfs:/``; see :mod:`tfos_lib.storage`). One run at a time
            (:class:`~tfos_lib.runstate.RunLock`). Defaults to a new temporary directory.
        spark: the SparkSession; default: the active one.
        max_restarts: after a worker fails or a timeout fires, relaunch all workers up
            to this many times; training resumes from the last checkpoint
            (``ctx.callbacks``). 0 (default) fails at once.
        timeouts: the launcher's bounded waits (:class:`~tfos_lib.monitor.Timeouts`).
        warm_workers: (barrier backend) when a run ends, every worker's Spark Python
            worker keeps a spare process with TensorFlow imported, and the next run takes
            it if the Python environment is unchanged: re-training in a long-lived
            application (a notebook) starts in seconds. The staged inputs are kept too
            (persisted in the executors), and a next run over the same DataFrame objects
            skips shuffling them. Both hold memory (a few hundred MB per
            worker, and the staged rows) until the next run or the application ends; a run
            with ``warm_workers=False`` gives it back. Default: on in a notebook (IPython kernel,
            Databricks), off elsewhere.

    Returns:
        What ``train_fn`` returned on rank 0.

    Raises:
        ValueError: bad arguments (unknown backend, workers < 1, ...).
        RuntimeError: the cluster has fewer task slots than ``num_workers``.
        WorkerError: a worker raised or died; carries its rank and Python traceback.
        LauncherTimeout: a bounded wait ran out; names the worker and what it was doing.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}; got {backend!r}.")
    if not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be a positive integer; got {num_workers!r}.")
    if backend == "local" and num_workers != 1:
        raise ValueError(
            f"the local backend runs exactly one in-process worker; got num_workers={num_workers}. "
            "Use backend='barrier' for more."
        )
    if max_restarts < 0:
        raise ValueError(f"max_restarts must be >= 0; got {max_restarts}.")
    timeouts = timeouts or Timeouts()
    inputs = dict(inputs or {})
    if spark is None and (inputs or backend != "local"):
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()
    conf = dict(spark.sparkContext.getConf().getAll()) if spark is not None else {}
    output_dir = storage.check_output_location(output_dir or tempfile.mkdtemp(prefix="tfos-output-"), conf)
    check_spark_conf(conf, backend)
    if backend == "tfos" and storage.is_remote(output_dir):
        raise ValueError(
            f"the tfos backend writes its results through local files; it cannot use {output_dir!r}. "
            "Use backend='barrier' (the default) for an object-store or HDFS output directory."
        )
    # The process runner and the backends (the barrier backend imports the runner) are
    # imported here, not at the top: `import tfos_lib` must not import the module that
    # child processes run with `python -m tfos_lib.process`.
    from tfos_lib.process import pickle_with_code

    payload = pickle_with_code((train_fn, args), train_fn)
    backend_module = importlib.import_module(f"tfos_lib.backends.{backend}")
    with runstate.RunLock(output_dir):
        if runstate.has_checkpoint(output_dir):
            # The options are known here, in seconds; the model's structure is checked by the workers.
            current = runstate.make_fingerprint(None, runstate.resumable_options(args))
            runstate.check_resume(runstate.recorded_fingerprint(output_dir), current, output_dir, compare_model=False)
        if backend != "local":
            check_slots(spark.sparkContext, num_workers, timeouts.start)
        warm = in_notebook() if warm_workers is None else warm_workers
        return _attempts(backend_module, spark, payload, num_workers, inputs, output_dir, timeouts, max_restarts,
                         backend, warm)


def in_notebook() -> bool:
    """True in a Jupyter kernel or on Databricks (where a long-lived application runs again and again).

    Asks IPython for its shell (a kernel's is ``ZMQInteractiveShell``): a module that happens
    to import ``ipykernel`` does not make a script a notebook.
    """
    if "DATABRICKS_RUNTIME_VERSION" in os.environ:
        return True
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _attempts(backend_module, spark, payload, num_workers, inputs, output_dir, timeouts, max_restarts, backend, warm):
    """The restart loop around the backend, under the driver's monitor."""
    with Monitor(num_workers, timeouts) as monitor:
        for attempt in range(max_restarts + 1):
            monitor.stage_started(attempt)
            try:
                return backend_module.run(spark, payload, num_workers, inputs, output_dir, timeouts, monitor, attempt,
                                          warm_workers=warm)
            except (WorkerError, LauncherTimeout) as error:
                if attempt == max_restarts or backend == "local":
                    raise
                log.warning(
                    "attempt %d of %d failed; relaunching all %d workers, resuming from the last checkpoint:\n%s",
                    attempt + 1, max_restarts + 1, num_workers, error,
                )


# ---------------------------------------------------------------------------------------------
# The live Spark configuration.

#: Memory (MiB) beyond the JVM heap that one TensorFlow worker process needs on YARN/Kubernetes: the
#: MNIST CNN worker's child process peaked at 2.6 GB resident (measured), rounded up.
TF_WORKER_OVERHEAD_MB = 3072


def _size_mb(value: str) -> float:
    """``"6g"`` -> 6144, ``"512m"`` -> 512, ``"1024"`` -> 1024 (Spark's MiB default). Pure."""
    value = str(value).strip().lower().rstrip("b")
    units = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
    if value and value[-1] in units:
        return float(value[:-1]) * units[value[-1]]
    return float(value)


def check_spark_conf(conf: dict[str, str], backend: str) -> None:
    """Refuses, in seconds, Spark settings that make barrier training fail late or misleadingly. Pure.

    Raises:
        ValueError: naming the setting, its value, why, and the ``--conf`` that fixes it.
    """
    if backend == "local":
        return
    master = conf.get("spark.master", "local")
    problems = []
    if backend == "tfos" and conf.get("spark.authenticate", "false").lower() == "true":
        problems.append(
            "backend='tfos' is refused under the security profile (spark.authenticate=true): TensorFlowOnSpark's "
            "reservation server on the driver unpickles whatever reaches its port, which lets anyone who can connect "
            "run code on the driver. Use backend='barrier' (the default)."
        )
    if conf.get("spark.dynamicAllocation.enabled", "false").lower() == "true":
        problems.append(
            "spark.dynamicAllocation.enabled=true: Spark refuses to run the barrier stage tfos_lib trains in under "
            "dynamic allocation. Fix: --conf spark.dynamicAllocation.enabled=false (the conf/ profiles set it)."
        )
    if not (master == "local" or master.startswith("local[")) and int(conf.get("spark.task.maxFailures", "4")) > 1:
        problems.append(
            f"spark.task.maxFailures={conf.get('spark.task.maxFailures', '4 (the default)')}: Spark would retry the "
            "whole training stage by itself, hiding the failure and starting over. Fix: --conf "
            "spark.task.maxFailures=1 (tfos_lib restarts from the checkpoint itself: --max-restarts)."
        )
    if master == "yarn" or master.startswith("k8s://"):
        memory = _size_mb(conf.get("spark.executor.memory", "1g"))
        default = max(384.0, memory * float(conf.get("spark.executor.memoryOverheadFactor", "0.1")))
        overhead = _size_mb(conf["spark.executor.memoryOverhead"]) if "spark.executor.memoryOverhead" in conf else default
        if overhead < TF_WORKER_OVERHEAD_MB:
            problems.append(
                f"spark.executor.memoryOverhead is {overhead:.0f} MiB: each TensorFlow worker runs in a process "
                f"outside the executor's JVM heap and needs about {TF_WORKER_OVERHEAD_MB} MiB there (2.6 GB measured "
                f"for the MNIST CNN); {master.split(':')[0]} kills the container when it is exceeded. Fix: --conf "
                f"spark.executor.memoryOverhead={TF_WORKER_OVERHEAD_MB // 1024}g or more (the yarn/k8s profiles set 6g)."
            )
    if problems:
        raise ValueError("this Spark configuration cannot run tfos_lib's training:\n- " + "\n- ".join(problems))


# ---------------------------------------------------------------------------------------------
# Task slots.


def expected_slots(conf: dict[str, str]) -> int | None:
    """Task slots the Spark configuration promises, or None if it does not say. Pure.

    ``local[N]``, ``local[*]`` (this machine's cores), ``local-cluster[N,C,M]``, and
    ``spark.executor.instances`` x ``spark.executor.cores`` on cluster managers,
    each divided by ``spark.task.cpus``.
    """
    master = conf.get("spark.master", "")
    task_cpus = int(conf.get("spark.task.cpus", "1"))
    match = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\d+)?\])?", master)
    if match:
        cores = match.group(1) or "1"
        total = (os.cpu_count() or 1) if cores == "*" else int(cores)
        return total // task_cpus
    match = re.fullmatch(r"local-cluster\[\s*(\d+)\s*,\s*(\d+)\s*,\s*\d+\s*\]", master)
    if match:
        return int(match.group(1)) * (int(match.group(2)) // task_cpus)
    if conf.get("spark.dynamicAllocation.enabled", "false").lower() == "true":
        return None
    if "spark.executor.instances" in conf and "spark.executor.cores" in conf:
        return int(conf["spark.executor.instances"]) * (int(conf["spark.executor.cores"]) // task_cpus)
    return None


def available_slots(sc) -> int:
    """Task slots of the executors registered right now (what barrier mode checks against)."""
    jsc = sc._jsc.sc()
    return int(jsc.maxNumConcurrentTasks(jsc.resourceProfileManager().defaultResourceProfile()))


def check_slots(sc, num_workers: int, start_timeout: float) -> None:
    """Refuses at once a request for more workers than the cluster can ever run at the same time.

    Barrier mode itself would re-check every 15 s for up to 40 times (about ten
    minutes of silence) before failing. Executors that are still starting get up
    to ``start_timeout`` seconds to register.

    Raises:
        NotEnoughSlots: (a ValueError and a RuntimeError) naming both numbers and how to fix it.
    """
    conf = dict(sc.getConf().getAll())
    promised = expected_slots(conf)
    if promised is not None and promised < num_workers:
        raise NotEnoughSlots(_slots_message(num_workers, promised, conf, "the Spark configuration provides"))
    deadline = time.monotonic() + start_timeout
    while True:
        slots = available_slots(sc)
        if slots >= num_workers:
            return
        if time.monotonic() >= deadline:
            raise NotEnoughSlots(
                _slots_message(num_workers, slots, conf, f"after waiting {start_timeout:.0f} s, the registered executors provide")
            )
        time.sleep(0.5)


def _slots_message(num_workers: int, slots: int, conf: dict, how: str) -> str:
    return (
        f"num_workers={num_workers} TensorFlow workers need {num_workers} concurrent Spark task slots, but "
        f"{how} only {slots} (master={conf.get('spark.master')}, spark.task.cpus={conf.get('spark.task.cpus', '1')}). "
        f"Ask for at most {slots} workers, or give the cluster more executors/cores "
        "(e.g. --master local[N] or local-cluster[N,1,2048])."
    )

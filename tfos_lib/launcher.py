"""The launcher: run one ``train_fn`` on N Spark executors as a data-parallel TensorFlow cluster."""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from typing import Any, Callable

from tfos_lib import feed
from tfos_lib.feed import InputPlan
from tfos_lib.monitor import LauncherTimeout, Monitor, Timeouts
from tfos_lib.worker import WorkerFailed, WorkerProcess, WorkerSpec, run_in_process

log = logging.getLogger("tfos_lib")

BACKENDS = ("barrier", "tfos", "local")
_RESULT_SCHEMA = "rank long, value binary"
_ERROR_START, _ERROR_END = "<<tfos_lib worker failure>>", "<</tfos_lib worker failure>>"


class WorkerError(RuntimeError):
    """A worker's ``train_fn`` raised (or its process died). Raised on the driver.

    Attributes:
        rank: the failed worker's rank.
        worker_traceback: the worker's own Python traceback (or last output lines).
    """

    def __init__(self, rank: int | None, worker_traceback: str):
        who = f"worker rank {rank}" if rank is not None else "a worker"
        super().__init__(f"{who} failed. Its traceback:\n{worker_traceback}")
        self.rank = rank
        self.worker_traceback = worker_traceback


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
        output_dir: where workers write results; must be reachable by every
            executor and the driver on a real cluster (a shared or distributed
            filesystem path). Defaults to a new temporary directory.
        spark: the SparkSession; default: the active one.
        max_restarts: after a worker fails or a timeout fires, relaunch all workers up
            to this many times; training resumes from the last checkpoint
            (``ctx.callbacks``). 0 (default) fails at once.
        timeouts: the launcher's bounded waits (:class:`~tfos_lib.monitor.Timeouts`).

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
    output_dir = os.path.abspath(output_dir or tempfile.mkdtemp(prefix="tfos-output-"))
    os.makedirs(output_dir, exist_ok=True)
    if spark is None and (inputs or backend != "local"):
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()
    payload = _pickle_train_fn(train_fn, args)
    if backend != "local":
        check_slots(spark.sparkContext, num_workers, timeouts.start)

    with Monitor(num_workers, timeouts) as monitor:
        for attempt in range(max_restarts + 1):
            monitor.stage_started()
            try:
                if backend == "local":
                    return _run_local(spark, payload, inputs, output_dir, monitor.address)
                if backend == "tfos":
                    from tfos_lib.backends import tfos

                    return tfos.run(spark, payload, num_workers, inputs, output_dir, timeouts, monitor)
                return _run_barrier(spark, payload, num_workers, inputs, output_dir, monitor, attempt)
            except (WorkerError, LauncherTimeout) as error:
                if attempt == max_restarts or backend == "local":
                    raise
                log.warning(
                    "attempt %d of %d failed; relaunching all %d workers, resuming from the last checkpoint:\n%s",
                    attempt + 1, max_restarts + 1, num_workers, error,
                )


def _pickle_train_fn(train_fn: Callable, args: tuple) -> bytes:
    """Cloudpickles ``(train_fn, args)``; the job module goes by value, so executors need not import it."""
    import cloudpickle

    target = train_fn
    while isinstance(target, functools.partial):  # the module that matters is the wrapped function's
        target = target.func
    module = sys.modules.get(getattr(target, "__module__", None) or "")
    if module is not None and module.__name__ != "__main__" and not module.__name__.startswith("tfos_lib"):
        cloudpickle.register_pickle_by_value(module)
    return cloudpickle.dumps((train_fn, args))


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
        RuntimeError: naming both numbers and how to fix it.
    """
    conf = dict(sc.getConf().getAll())
    promised = expected_slots(conf)
    if promised is not None and promised < num_workers:
        raise RuntimeError(_slots_message(num_workers, promised, conf, "the Spark configuration provides"))
    deadline = time.monotonic() + start_timeout
    while True:
        slots = available_slots(sc)
        if slots >= num_workers:
            return
        if time.monotonic() >= deadline:
            raise RuntimeError(
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


# ---------------------------------------------------------------------------------------------
# Backends.


def _run_local(spark, payload: bytes, inputs: dict, output_dir: str, monitor_address: str) -> Any:
    """One worker in this process; DataFrames are collected to local Arrow files."""
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
        spec = WorkerSpec(0, 1, output_dir, "local", os.cpu_count() or 1, None, shards, payload, "", monitor_address)
        # Exceptions propagate unchanged: this backend is for debugging.
        return run_in_process(spec)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_barrier(spark, payload: bytes, num_workers: int, inputs: dict, output_dir: str, monitor, attempt: int) -> Any:
    staged, plans, persisted = feed.stage(spark, inputs, num_workers)
    for plan in plans.values():
        if plan.dropped_rows:
            log.info(
                "input %r: %d rows -> %d workers x %d rows; %d left-over rows not used this run",
                plan.name, plan.total_rows, num_workers, plan.rows_per_worker, plan.dropped_rows,
            )
    task = functools.partial(
        _barrier_task,
        payload=payload,
        plans=plans,
        num_workers=num_workers,
        output_dir=output_dir,
        monitor_address=monitor.address,
        attempt=attempt,
    )
    try:
        rows = collect_watched(spark, staged.mapInArrow(task, _RESULT_SCHEMA, barrier=True), monitor)
    finally:
        for df in persisted:
            df.unpersist()
    import cloudpickle

    chief = [row for row in rows if row.rank == 0]
    return cloudpickle.loads(chief[0].value)


def collect_watched(spark, df, monitor, poll_seconds: float = 0.5) -> list:
    """``df.collect()`` in a Spark job group, cancelled when the monitor's deadlines pass.

    Raises:
        WorkerError: a task failed (with the worker's traceback when it has one).
        LauncherTimeout: from ``monitor.check()``, after cancelling the job.
    """
    sc = spark.sparkContext
    group = f"tfos_lib-{uuid.uuid4().hex[:12]}"
    outcome: dict = {}

    def collect():
        sc.setJobGroup(group, "tfos_lib training", interruptOnCancel=True)
        try:
            outcome["rows"] = df.collect()
        except Exception as error:  # Py4JJavaError or pyspark's captured exceptions
            outcome["error"] = error
        finally:
            sc.setLocalProperty("spark.jobGroup.id", None)

    thread = threading.Thread(target=collect, name="tfos-collect", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(poll_seconds)
        if not thread.is_alive():
            break
        try:
            monitor.check()
        except LauncherTimeout:
            sc.cancelJobGroup(group)
            thread.join(30)
            raise
    if "error" in outcome:
        raise _worker_error(outcome["error"]) from None
    return outcome["rows"]


def _barrier_task(
    batches,
    *,
    payload: bytes,
    plans: dict[str, InputPlan],
    num_workers: int,
    output_dir: str,
    monitor_address: str,
    attempt: int,
):
    """The Spark task of worker ``rank``: spill the shard, meet the others, train in a child process."""
    import pyarrow as pa
    from pyspark import BarrierTaskContext

    from tfos_lib.rendezvous import find_free_port, tf_config_json
    from tfos_lib.tfenv import task_gpus

    context = BarrierTaskContext.get()
    rank = context.partitionId()
    workdir = tempfile.mkdtemp(prefix=f"tfos-worker-{rank}-")
    gpus = task_gpus(context)  # tfos: each worker sees only its own GPUs
    # Start TensorFlow's slow import now, in parallel with receiving the shard.
    process = WorkerProcess(workdir, rank, gpus)
    try:
        counts = feed.spill(batches, plans, workdir)
        for name, plan in plans.items():
            if counts[name] != plan.rows_per_worker:
                raise RuntimeError(
                    f"input {name!r}: worker {rank} received {counts[name]} rows, expected {plan.rows_per_worker}. "
                    "The staging lost its partitioning (please report this)."
                )
        host = context.getTaskInfos()[rank].address.rsplit(":", 1)[0]
        addresses = context.allGather(f"{host}:{find_free_port()}")
        spec = WorkerSpec(
            rank=rank,
            num_workers=num_workers,
            output_dir=output_dir,
            backend="barrier",
            num_cpus=context.cpus(),
            tf_config=tf_config_json(list(addresses), rank),
            inputs={
                name: (plan, os.path.join(workdir, f"{name}.arrow") if counts[name] else None)
                for name, plan in plans.items()
            },
            payload=payload,
            result_path=os.path.join(workdir, "result.pkl"),
            monitor_address=monitor_address,
            attempt=attempt,
            gpus=gpus,
        )
        try:
            value = process.run(spec)
        except WorkerFailed as failure:
            raise RuntimeError(f"{_ERROR_START}{failure.rank}\n{failure.detail}{_ERROR_END}") from None
        import cloudpickle

        # Only the chief's value travels back to the driver.
        chief_value = cloudpickle.dumps(value) if rank == 0 else None
        yield pa.RecordBatch.from_pydict(
            {"rank": pa.array([rank], pa.int64()), "value": pa.array([chief_value], pa.binary())}
        )
    finally:
        process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def _worker_error(error: Exception) -> WorkerError:
    """Digs a worker's own traceback out of Spark's exception text.

    A task that failed without one (its Python process died, the executor was lost)
    becomes a WorkerError with the head of Spark's message.
    """
    text = str(error)
    match = re.search(re.escape(_ERROR_START) + r"(\d+)\n(.*?)" + re.escape(_ERROR_END), text, re.S)
    if match:
        return WorkerError(int(match.group(1)), match.group(2))
    head = "\n".join([line for line in text.splitlines() if not line.lstrip().startswith("at ")][:40])
    return WorkerError(None, f"a Spark task of the training stage failed without a Python traceback:\n{head}")

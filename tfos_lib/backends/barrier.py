"""The ``barrier`` backend (the default): Spark barrier execution mode, each worker in a child process.

The N tasks of one barrier stage start together (gang-scheduled); each spills its
shard of the inputs to a local Arrow file, gathers every worker's ``host:port``
and shard sizes through the driver's monitor (:meth:`~tfos_lib.monitor.Reporter.meet`),
from which all derive the same epoch (:func:`tfos_lib.feed.balance`), builds its
``TF_CONFIG``, and runs ``train_fn`` in a fresh TensorFlow process
(:mod:`tfos_lib.process`). Any task failure fails the stage at once, which kills
the other tasks and their TensorFlow processes; the driver turns it into
:class:`~tfos_lib.errors.WorkerError` with the worker's own traceback.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from typing import Any

from tfos_lib import feed, process
from tfos_lib.context import WorkerSpec, run_worker
from tfos_lib.errors import LauncherTimeout, ProcessFailed, WorkerError
from tfos_lib.feed import InputPlan

_RESULT_SCHEMA = "rank long, value binary"
# A worker's traceback travels inside Spark's exception text between these markers.
_ERROR_START, _ERROR_END = "<<tfos_lib worker failure>>", "<</tfos_lib worker failure>>"


def run(spark, payload: bytes, num_workers: int, inputs: dict, output_dir: str, timeouts, monitor, attempt: int,
        warm_workers: bool = False) -> Any:
    """Runs one barrier stage of ``num_workers`` tasks and returns the chief's value (driver side).

    ``warm_workers``: each task leaves a spare TensorFlow process in its Spark Python
    worker when it ends, and takes the spare its Python worker holds when it starts
    (if the environment is unchanged, :func:`tfos_lib.process.environment_key`), so a
    second run in the same application does not wait for TensorFlow to import.
    Without it, a task ends any spare its Python worker holds. With it, the staged
    inputs are also kept (:func:`tfos_lib.feed.stage`), so a second run over the same
    DataFrames skips shuffling them.

    Raises:
        WorkerError: a worker failed (with its traceback when it has one).
        LauncherTimeout: a deadline of ``monitor`` passed; the Spark job was cancelled.
    """
    # Warm workers mean re-runs in one application: their staged inputs are kept for the next run too.
    staged, plans, persisted = feed.stage(spark, inputs, num_workers, keep=warm_workers)
    # The call goes as a broadcast, not inside the task: a job's arguments (noise recordings, vocabularies)
    # can weigh tens of MB, and a task that large is fragile (Spark warns above 1 MiB; one such task was
    # lost between driver and executor in a speech-commands run).
    shipped = spark.sparkContext.broadcast(payload)
    task = functools.partial(
        _barrier_task,
        payload=shipped,
        plans=plans,
        num_workers=num_workers,
        output_dir=output_dir,
        monitor_address=monitor.address,
        attempt=attempt,
        warm_workers=warm_workers,
        local_cpus=local_mode_cpus(spark.sparkContext, num_workers),
    )
    try:
        rows = collect_watched(spark, staged.mapInArrow(task, _RESULT_SCHEMA, barrier=True), monitor)
    except BaseException:
        feed.release_kept_staging()  # a retry stages afresh rather than mixing cached and recomputed shards
        raise
    finally:
        shipped.destroy()  # the stage is over: its tasks have read it
        for df in persisted:
            df.unpersist()
    import cloudpickle

    chief = [row for row in rows if row.rank == 0]
    return cloudpickle.loads(chief[0].value)


def local_mode_cpus(sc, num_workers: int) -> int | None:
    """In local mode, each worker's share of the driver's cores (at least ``spark.task.cpus``); else None.

    ``local[N]`` is one process whose N cores the barrier stage's tasks have to
    themselves while they train, so a lone worker on a laptop uses all of them, not
    the one core Spark reserves per task. Executors elsewhere keep the task's CPUs.
    """
    local = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", sc.master.strip())
    if local is None:  # local-cluster, standalone, YARN, Kubernetes: executors have their own cores
        return None
    cores = 1 if local.group(1) is None else (os.cpu_count() or 1) if local.group(1) == "*" else int(local.group(1))
    task_cpus = int(sc.getConf().get("spark.task.cpus", "1"))
    return max(task_cpus, cores // num_workers)


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
    payload,
    plans: dict[str, InputPlan],
    num_workers: int,
    output_dir: str,
    monitor_address: str,
    attempt: int,
    warm_workers: bool,
    local_cpus: int | None,
):
    """The Spark task of worker ``rank``: spill the shard, meet the others, train in a child process.

    ``plans`` come from staging without counting; the row counts every worker spilled complete them.

    ``payload`` is the broadcast of the pickled ``(train_fn, args)``.
    """
    import pyarrow as pa
    from pyspark import BarrierTaskContext

    from tfos_lib.monitor import MonitorUnreachable, Reporter
    from tfos_lib.rendezvous import find_free_port, tf_config_json
    from tfos_lib.tfenv import task_env, task_gpus

    timeline = {"task_started": time.time()}
    context = BarrierTaskContext.get()
    rank = context.partitionId()
    gpus = task_gpus(context)  # tfos: each worker sees only its own GPUs
    cpus = local_cpus or context.cpus()
    env = task_env(cpus, gpus, spark_task_cpus=context.cpus())
    spare = None
    if warm_workers:
        spare = process.take_spare(env)
    elif process.drop_spare():
        timeline["spare_dropped"] = time.time()
    if spare:
        child, workdir = spare
        timeline["spare_taken"] = time.time()
    else:
        workdir = tempfile.mkdtemp(prefix=f"tfos-worker-{rank}-")
        # Start the child now: it imports TensorFlow (slow) while this task receives its shard.
        child = process.ChildProcess(workdir, env=env, import_tensorflow=True)
    try:
        counts = feed.spill(batches, plans, workdir)
        timeline["shard_spilled"] = time.time()
        host = context.getTaskInfos()[rank].address.rsplit(":", 1)[0]
        try:
            meeting = Reporter(monitor_address, rank, attempt)
            try:
                records = meeting.meet({"address": f"{host}:{find_free_port()}", "rows": counts})
                if rank == 0 and counts:  # the driver logs the chief's messages
                    meeting.send("message", text="rows of each worker's shard: " + "; ".join(
                        f"{name} {[r['rows'][name] for r in records]}" for name in counts))
            finally:
                meeting.close()
        except MonitorUnreachable as error:  # the driver shows it as this worker's failure, with the fix
            raise RuntimeError(f"{_ERROR_START}{rank}\n{error}{_ERROR_END}") from None
        timeline["workers_met"] = time.time()
        try:
            plans = {name: feed.balance(plan, [r["rows"][name] for r in records]) for name, plan in plans.items()}
        except ValueError as error:  # too few rows: every worker raises it, the driver shows the first
            raise RuntimeError(f"{_ERROR_START}{rank}\n{error}{_ERROR_END}") from None
        spec = WorkerSpec(
            rank=rank,
            num_workers=num_workers,
            output_dir=output_dir,
            backend="barrier",
            num_cpus=cpus,
            tf_config=tf_config_json([r["address"] for r in records], rank),
            inputs={
                name: (plan, os.path.join(workdir, f"{name}.arrow") if counts[name] else None)
                for name, plan in plans.items()
            },
            payload=payload.value,
            monitor_address=monitor_address,
            attempt=attempt,
            gpus=gpus,
            timeline=timeline,
        )
        try:
            value = child.run(run_worker, (spec,))
        except ProcessFailed as failure:
            raise RuntimeError(f"{_ERROR_START}{rank}\n{failure.detail}{_ERROR_END}") from None
        if warm_workers:
            process.start_spare(env)  # for the next run in this application
        import cloudpickle

        # Only the chief's value travels back to the driver.
        chief_value = cloudpickle.dumps(value) if rank == 0 else None
        yield pa.RecordBatch.from_pydict(
            {"rank": pa.array([rank], pa.int64()), "value": pa.array([chief_value], pa.binary())}
        )
    finally:
        child.close()
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

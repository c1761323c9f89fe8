"""The ``tfos`` backend: the real TensorFlowOnSpark package (``TFCluster``, InputMode.SPARK).

Kept for comparison with the barrier backend and for users porting TFoS
programs; the job code is the same. TFoS reserves the executors, sets
``TF_CONFIG`` (one ``chief`` and ``worker``s) and pushes RDD rows through a
multiprocessing queue on each executor. Here the rows are laid out by the same
staging the barrier backend uses (:func:`tfos_lib.feed.stage`), counted first so
that the shards are exactly equal and each worker knows its quota: it reads that
many rows from the TFoS feed, then trains from them, so every worker runs the same
number of steps without TFoS's "stop at 90% of the data" workaround.

Limits of TFoS that remain: rows travel as pickled Python objects (slow), a
worker that receives two shards (two partitions scheduled on one executor) is
stalls until TFoS's feed timeout, and TFoS's own waits (reservation, feeding) are long.
Requires ``pip install tensorflowonspark==2.2.5``, executors in separate JVMs
(``local-cluster[N,...]`` or a real cluster) and ``TF_USE_LEGACY_KERAS=1`` in the
executors' environment (TFoS imports TensorFlow before our code runs).
"""

from __future__ import annotations

import functools
import glob
import logging
import os
import pickle
import queue as queue_module
import shutil
import tempfile
import time
import traceback

from tfos_lib import feed
from tfos_lib.context import WorkerSpec, run_worker
from tfos_lib.errors import WorkerError
from tfos_lib.feed import INPUT_COLUMN, InputPlan

log = logging.getLogger("tfos_lib")


def run(spark, payload: bytes, num_workers: int, inputs: dict, output_dir: str, timeouts, monitor, attempt: int,
        warm_workers: bool = False):
    """Runs the job through ``TFCluster.run`` and returns the chief's value (driver side).

    ``warm_workers`` is not supported (TensorFlowOnSpark manages its own processes) and ignored.
    """
    try:
        from tensorflowonspark import TFCluster
    except ImportError as error:
        raise RuntimeError(
            "backend='tfos' needs TensorFlowOnSpark: pip install 'tensorflowonspark==2.2.5' "
            "(or install tfos_lib with the [tfos] extra)."
        ) from error
    sc = spark.sparkContext
    if sc.master.startswith("local") and not sc.master.startswith("local-cluster"):
        raise RuntimeError(
            f"backend='tfos' needs executors in separate processes, but master is {sc.master}: "
            "TensorFlowOnSpark refuses two TensorFlow nodes in one executor. "
            "Use --master 'local-cluster[N,1,2048]' or a real cluster, or backend='barrier'."
        )
    results_dir = os.path.join(output_dir, "_tfos_results")
    shutil.rmtree(results_dir, ignore_errors=True)
    os.makedirs(results_dir)
    staged, plans, persisted = feed.stage(spark, inputs, num_workers, counted=True)  # _read_feed needs the quotas
    for plan in plans.values():
        if plan.dropped_rows:
            log.info("input %r: %d rows -> %d workers x %d rows; %d left-over rows not used this run",
                     plan.name, plan.total_rows, num_workers, plan.rows_per_worker, plan.dropped_rows)
    rdd = staged.rdd.map(functools.partial(_row_to_item, names=tuple(plans)))
    tf_args = {
        "payload": payload,
        "plans": plans,
        "num_workers": num_workers,
        "output_dir": output_dir,
        "results_dir": results_dir,
        "feed_timeout": timeouts.rendezvous,
        "monitor_address": monitor.address,
        "attempt": attempt,
    }
    cluster = TFCluster.run(
        sc,
        _tfos_main,
        tf_args,
        num_workers,
        num_ps=0,
        input_mode=TFCluster.InputMode.SPARK,
        master_node="chief",
        reservation_timeout=int(timeouts.start),
    )
    try:
        cluster.train(rdd, num_epochs=1, feed_timeout=int(timeouts.rendezvous))
        # Feeding ends before training does; the workers report when they are done.
        outcomes = _wait_for_results(results_dir, num_workers, monitor)
    finally:
        try:
            cluster.shutdown(timeout=int(timeouts.shutdown))  # TFoS's own watchdog ends a hung shutdown
        except SystemExit:  # TFoS exits the driver when a worker put an error in its queue
            pass
        for df in persisted:
            df.unpersist()
    failed = [o for o in outcomes.values() if not o["ok"]]
    if failed:
        raise WorkerError(failed[0]["rank"], failed[0]["traceback"])
    return outcomes[0]["value"]


def _row_to_item(row, names: tuple[str, ...]):
    """One staged row as TFoS feeds it: ``(input name, column values)``, or ``(None, None)`` for a marker."""
    name = row[INPUT_COLUMN]
    return (name, tuple(row[name])) if name in names else (None, None)


def _wait_for_results(results_dir: str, num_workers: int, monitor, poll_seconds: float = 0.5) -> dict:
    """Waits for every worker's result file, or the first failure, within the monitor's deadlines."""
    outcomes: dict[int, dict] = {}
    while len(outcomes) < num_workers:
        for path in glob.glob(os.path.join(results_dir, "rank-*.pkl")):
            rank = int(os.path.basename(path)[5:-4])
            if rank not in outcomes:
                with open(path, "rb") as f:
                    outcomes[rank] = pickle.load(f)
                if not outcomes[rank]["ok"]:
                    return outcomes
        monitor.check()
        time.sleep(poll_seconds)
    return outcomes


def _tfos_main(tf_args: dict, ctx) -> None:
    """TFoS's map_fun: runs in a background process on each executor."""
    rank = 0 if ctx.job_name == "chief" else ctx.task_index + 1
    outcome = {"rank": rank, "ok": True, "value": None}
    workdir = tempfile.mkdtemp(prefix=f"tfos-tfos-{rank}-")
    try:
        plans: dict[str, InputPlan] = tf_args["plans"]
        paths = _read_feed(ctx.mgr, plans, workdir, rank, tf_args["feed_timeout"])
        spec = WorkerSpec(
            rank=rank,
            num_workers=tf_args["num_workers"],
            output_dir=tf_args["output_dir"],
            backend="tfos",
            num_cpus=int(os.environ.get("SPARK_TASK_CPUS", "1")),
            tf_config=os.environ.get("TF_CONFIG"),
            inputs={name: (plan, paths.get(name)) for name, plan in plans.items()},
            payload=tf_args["payload"],
            monitor_address=tf_args["monitor_address"],
            attempt=tf_args["attempt"],
        )
        value = run_worker(spec)
        outcome["value"] = value if rank == 0 else None
    except BaseException:
        outcome = {"rank": rank, "ok": False, "traceback": traceback.format_exc()}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    path = os.path.join(tf_args["results_dir"], f"rank-{rank}.pkl")
    with open(path + ".tmp", "wb") as f:
        pickle.dump(outcome, f)
    os.replace(path + ".tmp", path)


def _read_feed(mgr, plans: dict[str, InputPlan], workdir: str, rank: int, timeout: float) -> dict[str, str]:
    """Reads exactly this worker's shard from the TFoS input queue into local Arrow files."""
    import pyarrow as pa
    from tensorflowonspark import marker

    expected = {name: plan.rows_per_worker for name, plan in plans.items()}
    rows: dict[str, list] = {name: [] for name in plans}
    source = mgr.get_queue("input")
    markers = 0
    # TFoS sends no end-of-partition marker in training mode: stop at the quota.
    while markers < 1 or any(len(rows[n]) < expected[n] for n in plans):
        try:
            item = source.get(block=True, timeout=timeout)
        except queue_module.Empty:
            raise TimeoutError(
                f"TFoS worker {rank} waited {timeout:.0f} s for data and got "
                f"{ {n: len(r) for n, r in rows.items()} } of {expected} rows and {markers} of 1 shard markers."
            ) from None
        source.task_done()
        if item is None:
            break
        if isinstance(item, marker.EndPartition):
            continue
        name, values = item
        if name is None:
            markers += 1
        else:
            rows[name].append(values)
    if markers != 1 or any(len(rows[n]) != expected[n] for n in plans):
        raise RuntimeError(
            f"TFoS fed worker {rank} {markers} shard(s) with { {n: len(r) for n, r in rows.items()} } rows; "
            f"expected 1 shard with {expected}. TFoS schedules partitions freely; give each executor one core "
            "(spark.executor.cores=1) so each takes exactly one shard, or use backend='barrier'."
        )
    paths = {}
    for name, plan in plans.items():
        if not rows[name]:
            continue
        table = pa.table({column: [r[i] for r in rows[name]] for i, column in enumerate(plan.columns)})
        paths[name] = os.path.join(workdir, f"{name}.arrow")
        with pa.ipc.new_file(paths[name], table.schema) as writer:
            writer.write_table(table)
    return paths

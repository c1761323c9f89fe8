"""Many independent TensorFlow tasks, one per key, fanned out over Spark executors.

Where :func:`tfos_lib.run` trains *one* model with N workers that all-reduce,
:func:`run_tasks` runs *many* small, independent jobs: one model per stock, a
hyperparameter sweep, one fit per cross-validation fold. It is what
TensorFlowOnSpark's ``TFParallel.run`` was meant for, done right:

* **one Spark partition per task**, so ``N`` tasks are ``N`` Spark tasks that the
  scheduler spreads over every free executor slot, whatever
  ``spark.default.parallelism`` or ``spark.sql.shuffle.partitions`` say (TFParallel
  ran one copy of the function per *executor* and left the splitting to you);
* **each task in a fresh Python process** (:mod:`tfos_lib.process`): clean
  TensorFlow state, thread pools sized to the task's CPUs (``spark.task.cpus``), and
  a crash or a hang (``timeout``) contained to its key;
* **failures are results**: a task that raises becomes a row with
  ``status = "failed"`` and its traceback; the other keys finish. The caller
  decides: :func:`raise_for_failures` raises one :class:`~tfos_lib.errors.TaskFailures` naming every
  failed key (or pass ``raise_on_failure=True``);
* **results are a DataFrame**: one row per key (the key columns, ``status``,
  the result columns, ``error``, ``executor``, ``seconds``), built on the driver
  from the collected results, so using it never re-runs a task.

Example, a learning-rate sweep::

    def train(task, lr, epochs):                      # runs in its own process on an executor
        tf = tfos_lib.import_tensorflow()
        model = ...; history = model.fit(..., epochs=epochs)
        return {"loss": history.history["loss"][-1]}

    results = parallel.run_tasks(train, {lr: lr for lr in (1e-3, 1e-2, 1e-1)}, 5,
                                 key="learning_rate", result_schema="loss double")
    parallel.raise_for_failures(results)
    results.orderBy("loss").show()

Tasks from a DataFrame: ``run_tasks(fit, df, key=["ticker"])`` runs one task per
distinct ticker, and ``fit(task, rows, ...)`` receives that ticker's rows as a
pandas DataFrame (in no particular order).

Each task pays for a new process and its imports (TensorFlow: a few seconds), so
tasks should be worth at least that; batch tiny configurations into one task.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tfos_lib import storage
from tfos_lib.errors import ProcessFailed, TaskFailures
from tfos_lib.process import call_in_process, pickle_with_code

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

log = logging.getLogger("tfos_lib.parallel")

#: Status values of the ``status`` column.
OK, FAILED = "ok", "failed"
#: run_tasks' default limit per task (seconds): no task waits forever unless asked to (timeout=None).
DEFAULT_TIMEOUT = 3600.0
#: Columns every result DataFrame has besides the key and result columns.
STATUS_COLUMNS = ("status", "error", "executor", "seconds")
_TASK_COLUMN = "_tfos_task"
_PARTITION_COLUMN = "_tfos_partition"
_INTERNAL_SCHEMA = "task long, status string, value binary, error string, executor string, seconds double"
_KEY_TYPES = (str, bool, int, float)


@dataclass(frozen=True)
class Task:
    """What a task function learns about its task (its first argument).

    Attributes:
        key: the task's key: the dict key, or for DataFrame tasks the key column's
            value (a tuple of values when there are several key columns).
        index: position of the task, 0..num_tasks-1 (dict order, or sorted keys).
        num_tasks: how many tasks this call runs.
        output_dir: the directory given to :func:`run_tasks`: a local or shared path, or a
            URI such as ``s3a://bucket/dir`` (write there through :mod:`tfos_lib.storage`).
        num_cpus: CPUs Spark gave this task (``spark.task.cpus``); the process's
            TensorFlow and BLAS thread pools are already limited to it.
    """

    key: Any
    index: int
    num_tasks: int
    output_dir: str
    num_cpus: int


def run_tasks(
    fn: Callable[..., Any],
    tasks: Mapping[Any, Any] | DataFrame,
    *args: Any,
    key: str | Sequence[str] | None = None,
    result_schema: str | StructType | None = None,
    spark: SparkSession | None = None,
    output_dir: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    raise_on_failure: bool = False,
) -> DataFrame:
    """Runs ``fn(task, payload, *args)`` once per key, each in its own process on an executor.

    Runs on the driver and blocks until every task has ended; the returned
    DataFrame holds the results (nothing re-runs when it is used).

    Args:
        fn: ``fn(task: Task, payload, *args)``; must be picklable by cloudpickle
            (a module-level function or a closure) and import TensorFlow inside itself.
        tasks: either a dict ``{key: payload}`` (keys: str, int, float or bool, or
            tuples of those; payloads: anything cloudpickle can ship, kept small),
            or a DataFrame: one task per distinct value of the ``key`` column(s),
            whose payload is that key's rows as a pandas DataFrame.
        *args: passed to every call (shipped once, as a Spark broadcast).
        key: name(s) of the key column(s). For a dict: the result column name(s),
            default ``"key"`` (tuple keys need one name per element). For a
            DataFrame: required, the column(s) to group by.
        result_schema: a DDL string (``"loss double, weights array<double>"``) or
            ``StructType``: ``fn`` returns a dict with exactly these fields, which
            become typed result columns. ``None``: any picklable value, kept in a
            binary ``result`` column; read it back with :func:`task_results`.
        spark: the SparkSession; default: the active one.
        output_dir: passed to tasks as ``task.output_dir`` (normalised: an absolute path,
            or a URI, :func:`tfos_lib.storage.normalize`); default: a new temporary
            directory. On a cluster it must be a path or URI every executor can write.
        timeout: seconds after which a task's process is killed and the task
            reported failed; default :data:`DEFAULT_TIMEOUT` (one hour); ``None``: no limit.
        raise_on_failure: raise :class:`TaskFailures` instead of returning when any task failed.

    Returns:
        One row per task, in task order: the key column(s), ``status`` (``"ok"`` or
        ``"failed"``), the result column(s) (null for failed tasks), ``error`` (the
        traceback, null when ok), ``executor`` (where it ran, e.g. ``"executor 1 on
        host-a"``) and ``seconds`` (wall time of the task, process start included).

    Raises:
        ValueError: no tasks, bad keys, missing key columns, or a bad ``result_schema``.
        TypeError: ``tasks`` is neither a dict nor a DataFrame.
        TaskFailures: with ``raise_on_failure=True``, naming every failed key.
    """
    from pyspark.sql import DataFrame, SparkSession

    if spark is None:
        spark = SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()
    output_dir = storage.normalize(output_dir or tempfile.mkdtemp(prefix="tfos-tasks-"))
    storage.makedirs(output_dir)
    schema = _parse_schema(spark, result_schema)
    call = spark.sparkContext.broadcast(pickle_with_code((fn, args), fn))
    common = {"call": call, "output_dir": output_dir, "result_schema": schema, "timeout": timeout}
    try:
        if isinstance(tasks, DataFrame):
            key_names, keys, key_fields = _dataframe_keys(tasks, key)
            rows = _run_dataframe_tasks(spark, tasks, key_names, keys, common)
        elif isinstance(tasks, Mapping):
            key_names, keys, key_fields = _dict_keys(tasks, key)
            rows = _run_dict_tasks(spark, [pickle_with_code(tasks[k], fn) for k in keys], keys, common)
        else:
            raise TypeError(f"tasks must be a dict {{key: payload}} or a Spark DataFrame; got {type(tasks).__name__}.")
    finally:
        call.destroy()
    results, failed = _results_frame(spark, key_names, key_fields, keys, rows, schema)
    for k, error in failed.items():
        log.warning("task %r failed: %s", k, _last_line(error))
    log.info("%d task(s): %d ok, %d failed", len(keys), len(keys) - len(failed), len(failed))
    if raise_on_failure and failed:
        raise TaskFailures(failed, len(keys), results)
    return results


def failures(results: DataFrame) -> dict:
    """Key -> traceback of every failed task in a :func:`run_tasks` result (driver)."""
    key_names = _key_columns(results)
    failed = {}
    for row in results.where(results.status != OK).select(*key_names, "error").collect():
        values = tuple(row[name] for name in key_names)
        failed[values[0] if len(values) == 1 else values] = row["error"]
    return failed


def raise_for_failures(results: DataFrame) -> None:
    """Raises :class:`TaskFailures` listing every failed key with its traceback; returns if none failed (driver)."""
    failed = failures(results)
    if failed:
        raise TaskFailures(failed, results.count(), results)


def task_results(results: DataFrame) -> dict:
    """Key -> value returned by ``fn``, for the successful tasks of a run without ``result_schema`` (driver).

    Raises:
        ValueError: the run had a ``result_schema`` (read the columns instead).
    """
    import cloudpickle

    if "result" not in results.columns:
        raise ValueError("these results have typed columns (result_schema was given); select them directly.")
    key_names = _key_columns(results)
    values = {}
    for row in results.where(results.status == OK).select(*key_names, "result").collect():
        k = tuple(row[name] for name in key_names)
        values[k[0] if len(k) == 1 else k] = cloudpickle.loads(row["result"])
    return values


# ---------------------------------------------------------------------------------------------
# Driver side.


def _parse_schema(spark, result_schema) -> StructType | None:
    from pyspark.sql.types import StructType

    if result_schema is None or isinstance(result_schema, StructType):
        schema = result_schema
    elif isinstance(result_schema, str):
        from pyspark.sql.types import _parse_datatype_string

        try:
            schema = _parse_datatype_string(result_schema)
        except Exception as error:
            raise ValueError(f"result_schema {result_schema!r} is not a valid DDL schema: {error}") from None
        if not isinstance(schema, StructType):
            raise ValueError(f"result_schema must name fields, like 'loss double'; got {result_schema!r}.")
    else:
        raise ValueError(f"result_schema must be a DDL string or a StructType; got {type(result_schema).__name__}.")
    if schema is not None:
        clash = {f.name for f in schema.fields} & {*STATUS_COLUMNS, "result"}
        if clash:
            raise ValueError(f"result_schema uses reserved column name(s) {sorted(clash)}; rename them.")
    return schema


def _dict_keys(tasks: Mapping, key) -> tuple[list[str], list, list]:
    """Validates dict keys; returns (column names, keys in order, Spark fields of the key columns)."""
    from pyspark.sql.types import (
        BooleanType,
        DoubleType,
        LongType,
        StringType,
        StructField,
    )

    keys = list(tasks)
    if not keys:
        raise ValueError("no tasks: the dict is empty.")
    width = len(keys[0]) if isinstance(keys[0], tuple) else None
    if key is None:
        if width is not None:
            raise ValueError(
                f"the task keys are tuples of {width} values, like {keys[0]!r}; name their result columns "
                f"with key=(...{width} names...)."
            )
        names = ["key"]
    else:
        names = [key] if isinstance(key, str) else list(key)
    parts = [k if isinstance(k, tuple) else (k,) for k in keys]
    for k, values in zip(keys, parts):
        if len(values) != len(names) or (width is None) != (not isinstance(k, tuple)):
            raise ValueError(f"task key {k!r} does not match the key column(s) {names}: every key needs {len(names)} value(s).")
    spark_types = {str: StringType(), bool: BooleanType(), int: LongType(), float: DoubleType()}
    fields = []
    for position, name in enumerate(names):
        kinds = {next((t for t in _KEY_TYPES if isinstance(v[position], t)), None) for v in parts}
        if None in kinds or len(kinds) != 1:
            found = sorted({type(v[position]).__name__ for v in parts})
            raise ValueError(
                f"key column {name!r} needs values of one type among str, int, float, bool; found {found}."
            )
        fields.append(StructField(name, spark_types[kinds.pop()], nullable=False))
    return names, keys, fields


def _dataframe_keys(df: DataFrame, key) -> tuple[list[str], list, list]:
    """Distinct key values of ``df``, sorted; returns (column names, keys, Spark fields of the key columns)."""
    if key is None:
        raise ValueError("tasks from a DataFrame need key=<column> or key=[columns]: one task runs per distinct key.")
    names = [key] if isinstance(key, str) else list(key)
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise ValueError(f"key column(s) {missing} are not in the DataFrame; its columns are {df.columns}.")
    clash = {_TASK_COLUMN, _PARTITION_COLUMN} & set(df.columns)
    if clash:
        raise ValueError(f"the DataFrame uses reserved column name(s) {sorted(clash)}; rename them.")
    rows = df.select(*names).distinct().orderBy(*names).collect()
    if not rows:
        raise ValueError("no tasks: the DataFrame is empty.")
    keys = [row[0] if len(names) == 1 else tuple(row) for row in rows]
    fields = [df.schema[n] for n in names]
    return names, keys, fields


def _run_dict_tasks(spark, payloads: list[bytes], keys: list, common: dict) -> list[tuple]:
    n = len(keys)
    items = [(i, keys[i], payload) for i, payload in enumerate(payloads)]
    # parallelize() with n slices of n items puts exactly one task in each partition.
    rdd = spark.sparkContext.parallelize(items, n)

    def run_partition(iterator):
        for index, task_key, payload in iterator:
            yield _run_one(index, task_key, n, ("pickle", payload), **common)

    return rdd.mapPartitions(run_partition).collect()


def _run_dataframe_tasks(spark, df: DataFrame, names: list[str], keys: list, common: dict) -> list[tuple]:
    import functools

    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, StructField, StructType

    from tfos_lib.feed import partition_keys

    n = len(keys)
    spread = partition_keys(n)
    key_schema = StructType(
        [StructField(f"_tfos_k{i}", df.schema[name].dataType) for i, name in enumerate(names)]
        + [StructField(_TASK_COLUMN, LongType()), StructField(_PARTITION_COLUMN, LongType())]
    )
    key_rows = [(*(k if isinstance(k, tuple) else (k,)), i, spread[i]) for i, k in enumerate(keys)]
    table = spark.createDataFrame(key_rows, key_schema)
    condition = functools.reduce(
        lambda a, b: a & b, [df[name].eqNullSafe(table[f"_tfos_k{i}"]) for i, name in enumerate(names)]
    )
    staged = (
        df.join(F.broadcast(table), condition)
        .select(df["*"], table[_TASK_COLUMN], table[_PARTITION_COLUMN])
        # partition_keys() chose values whose hash sends task i to partition i exactly.
        .repartition(n, _PARTITION_COLUMN)
    )
    task_keys = dict(enumerate(keys))

    def run_partition(batches):
        import pyarrow as pa

        workdir = tempfile.mkdtemp(prefix="tfos-task-rows-")
        try:
            path, index = _spill(batches, workdir)
            if index is None:
                return  # An empty partition: the driver reports the missing task.
            row = _run_one(index, task_keys[index], n, ("arrow", path), **common)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        yield pa.RecordBatch.from_pylist(
            [dict(zip(("task", "status", "value", "error", "executor", "seconds"), row))],
            schema=pa.schema(
                [("task", pa.int64()), ("status", pa.string()), ("value", pa.binary()), ("error", pa.string()),
                 ("executor", pa.string()), ("seconds", pa.float64())]
            ),
        )

    rows = staged.mapInArrow(run_partition, _INTERNAL_SCHEMA).collect()
    return [tuple(r) for r in rows]


def _results_frame(spark, names, key_fields, keys, rows, schema) -> tuple[DataFrame, dict]:
    """Builds the result DataFrame on the driver (via Arrow, so every type converts as Spark would).

    Returns the DataFrame and key -> error of the failed tasks.
    """
    import cloudpickle
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import (
        BinaryType,
        DoubleType,
        StringType,
        StructField,
        StructType,
    )

    by_index = {r[0]: r for r in rows}
    value_fields = list(schema.fields) if schema is not None else [StructField("result", BinaryType())]
    spark_schema = StructType(
        [StructField(f.name, f.dataType, True) for f in key_fields]
        + [StructField("status", StringType(), False)]
        + value_fields
        + [StructField("error", StringType()), StructField("executor", StringType()), StructField("seconds", DoubleType())]
    )
    records, failed = [], {}
    for index, k in enumerate(keys):
        values = k if isinstance(k, tuple) else (k,)
        record = dict(zip(names, values))
        _, status, value, error, executor, seconds = by_index.get(
            index, (index, FAILED, None, "Spark returned no result for this task (please report this).", None, None)
        )
        record.update(status=status, error=error, executor=executor, seconds=seconds)
        if status != OK:
            failed[k] = error
        if schema is None:
            record["result"] = value if status == OK else None
        else:
            record.update(cloudpickle.loads(value) if status == OK else {})
        records.append(record)
    table = pa.Table.from_pylist(records, schema=to_arrow_schema(spark_schema))
    return spark.createDataFrame(table, spark_schema), failed


def _key_columns(results: DataFrame) -> list[str]:
    index = results.columns.index("status")
    return results.columns[:index]


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ---------------------------------------------------------------------------------------------
# Executor side.


def _spill(batches, workdir: str) -> tuple[str | None, int | None]:
    """Writes one partition's rows (minus the staging columns) to an Arrow file; returns (path, task index)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    path, writer, index = os.path.join(workdir, "rows.arrow"), None, None
    try:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            tasks = pc.unique(batch.column(_TASK_COLUMN)).to_pylist()
            if index is None:
                index = tasks[0]
            if set(tasks) != {index}:
                raise RuntimeError(f"a partition holds rows of tasks {sorted({index, *tasks})}; expected one (please report this).")
            rows = batch.drop_columns([_TASK_COLUMN, _PARTITION_COLUMN])
            if writer is None:
                writer = pa.ipc.new_file(path, rows.schema)
            writer.write_batch(rows)
    finally:
        if writer is not None:
            writer.close()
    return (path if index is not None else None), index


def _run_one(index: int, key, num_tasks: int, payload: tuple[str, Any], *, call, output_dir, result_schema, timeout) -> tuple:
    """Runs one task in a child process; returns ``(task, status, value bytes, error, executor, seconds)``."""
    import cloudpickle
    from pyspark import TaskContext

    from tfos_lib.tfenv import task_env

    context = TaskContext.get()
    num_cpus = context.cpus() if context is not None else 1
    task = Task(key=key, index=index, num_tasks=num_tasks, output_dir=output_dir, num_cpus=num_cpus)
    workdir = tempfile.mkdtemp(prefix=f"tfos-task-{index}-")
    started = time.perf_counter()
    try:
        value = call_in_process(
            _call_task, (call.value, task, payload), workdir=workdir, env=task_env(num_cpus),
            timeout=timeout, label=f"task {key!r}",
        )
        value = _check_result(value, result_schema)
        status, data, error = OK, cloudpickle.dumps(value), None
    except ProcessFailed as failure:
        status, data, error = FAILED, None, failure.detail
    except _ResultMismatch as mismatch:
        status, data, error = FAILED, None, str(mismatch)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return index, status, data, error, _executor_label(), time.perf_counter() - started


def _call_task(call: bytes, task: Task, payload: tuple[str, Any]):
    """Runs in the child: unpacks the function and the payload, and calls it."""
    import cloudpickle

    fn, args = cloudpickle.loads(call)
    kind, data = payload
    if kind == "arrow":
        import pyarrow as pa

        with pa.memory_map(data) as source:
            value = pa.ipc.open_file(source).read_pandas()
    else:
        value = cloudpickle.loads(data)
    return fn(task, value, *args)


class _ResultMismatch(Exception):
    pass


def _check_result(value, schema):
    """Checks a task's return value against ``result_schema`` in the executor, so one bad value fails only its key."""
    if schema is None:
        return value
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    names = [f.name for f in schema.fields]
    if not isinstance(value, Mapping):
        raise _ResultMismatch(
            f"the task returned {type(value).__name__}, but result_schema needs a dict with the fields {names}."
        )
    missing, extra = [n for n in names if n not in value], [n for n in value if n not in names]
    if missing or extra:
        raise _ResultMismatch(
            f"the task's result does not match result_schema {names}: missing {missing}, unexpected {extra}."
        )
    try:
        pa.Table.from_pylist([dict(value)], schema=to_arrow_schema(schema))
    except (pa.ArrowException, TypeError, ValueError) as error:
        raise _ResultMismatch(f"the task's result does not fit result_schema ({schema.simpleString()}): {error}") from None
    return dict(value)


def _executor_label() -> str:
    """Which executor ran this task, as well as a Python worker can tell.

    Kubernetes sets ``SPARK_EXECUTOR_ID`` and standalone clusters put the id in the
    log URLs; otherwise (local mode, YARN) the executor's Python daemon, the parent
    of every Python worker of one executor, identifies it.
    """
    host = socket.gethostname()
    executor = os.environ.get("SPARK_EXECUTOR_ID")
    if not executor:
        url = os.environ.get("SPARK_LOG_URL_STDERR", "")
        marker = "executorId="
        if marker in url:
            executor = url.split(marker, 1)[1].split("&", 1)[0]
    return f"executor {executor} on {host}" if executor else f"python daemon {os.getppid()} on {host}"

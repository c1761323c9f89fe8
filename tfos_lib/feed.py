"""Handing Spark DataFrames to the TensorFlow workers: shards of equal epochs, Arrow all the way.

Synchronous all-reduce needs every worker to run exactly the same number of
steps per epoch; a worker that runs out of batches first leaves the others
waiting in a collective forever. So every worker's epoch is ``total_rows //
num_workers`` rows of its shard (:class:`InputPlan`), and every worker derives the
same steps per epoch from that number.

How the rows travel (driver side, :func:`stage`):

1. Each partition of a sharded input deals its rows round-robin to the shards
   (``monotonically_increasing_id`` gives each row's position in its partition: no
   per-row Python), each partition starting at another shard, so no Spark job
   counts the rows first and shards differ by at most one row per partition. The
   workers learn ``total_rows`` when they meet, from each other's spilled row
   counts (:func:`balance`). The training datasets repeat, so a worker holding a
   few rows more than ``total_rows // num_workers`` sees them in its next epoch,
   and one holding fewer starts its next pass a little early: no row is dropped.
   The tfos backend, whose feed has to know each worker's quota before any row
   arrives, counts first (``stage(..., counted=True)``): there the shards are
   exactly ``total_rows // num_workers`` rows and the ``total_rows % num_workers``
   left-over rows are dropped. A replicated input (``Input(df, shard=False)``,
   e.g. a test set the chief evaluates) is exploded to every shard.
2. All inputs are unioned into one DataFrame with one struct column per input,
   and repartitioned by a key whose Spark hash lands shard ``k`` exactly in
   partition ``k``.
3. The barrier stage runs ``mapInArrow`` over those ``num_workers`` partitions,
   so task ``k`` receives shard ``k`` as Arrow record batches (columnar, no
   Python row objects) and spills them to a local Arrow file per input
   (:func:`spill`). Nothing needs shared storage: this works on any cluster.

Worker side, :class:`ShardData` memory-maps that file and turns it into numpy
columns or a ``tf.data.Dataset`` of per-worker batches.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("tfos_lib")

#: Columns the staging adds; input names and user columns may not use them.
SHARD_COLUMN = "_tfos_shard"
INPUT_COLUMN = "_tfos_input"
KEY_COLUMN = "_tfos_key"
_RESERVED = {SHARD_COLUMN, INPUT_COLUMN, KEY_COLUMN}
# monotonically_increasing_id() puts the partition index in the upper 31 bits
# and the row's position within its partition in the lower 33.
_ROW_BITS = 33


@dataclass(frozen=True)
class Input:
    """A DataFrame handed to the workers.

    Args:
        df: the rows. Columns of numbers, strings, or (nested) arrays of numbers of
            a fixed length per column.
        shard: ``True`` (default) splits the rows into shards, one per worker, whose
            epochs are the same number of rows (training data). ``False`` gives every
            worker all rows (small data every worker needs whole, e.g. a test set the
            chief evaluates).
    """

    df: "DataFrame"
    shard: bool = True


@dataclass(frozen=True)
class InputPlan:
    """What every worker knows about one input (picklable).

    ``rows_per_worker`` is one epoch of every worker (``total_rows // num_workers``
    when sharded, all rows when replicated); ``dropped_rows`` the rest,
    ``total_rows % num_workers``. The row counts are None in a plan staged without
    counting until the workers have met (:func:`balance`).
    """

    name: str
    columns: tuple[str, ...]
    total_rows: int | None
    rows_per_worker: int | None
    dropped_rows: int | None
    sharded: bool


def plan_input(name: str, columns: Iterable[str], total_rows: int | None, num_workers: int,
               sharded: bool) -> InputPlan:
    """Decides how many rows make each worker's epoch (``total_rows=None``: not counted yet). Pure: no Spark.

    Raises:
        ValueError: if a sharded input has fewer rows than workers (some worker would
            get nothing and the others would wait for it forever), or names collide
            with the staging columns.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1; got {num_workers}.")
    columns = tuple(columns)
    clash = _RESERVED.intersection((name, *columns))
    if clash:
        raise ValueError(f"input {name!r} uses reserved column name(s) {sorted(clash)}; rename them.")
    if not columns:
        raise ValueError(f"input {name!r} has no columns.")
    if total_rows is None:
        return InputPlan(name, columns, None, None, None, sharded=sharded)
    if not sharded:
        return InputPlan(name, columns, total_rows, total_rows, 0, sharded=False)
    rows_per_worker, dropped = divmod(total_rows, num_workers)
    if rows_per_worker == 0:
        raise ValueError(
            f"input {name!r} has {total_rows} rows, fewer than num_workers={num_workers}: every worker needs "
            f"at least one row. Use more data or fewer workers."
        )
    return InputPlan(name, columns, total_rows, rows_per_worker, dropped, sharded=True)


def balance(plan: InputPlan, rows_by_rank: list[int]) -> InputPlan:
    """The plan of an input staged without counting, from the rows each worker spilled (by rank). Pure.

    Every worker computes the same plan from the same counts, so all run the same
    steps per epoch whatever their shard's exact size.

    Raises:
        ValueError: a sharded input has fewer rows than workers, or its partitions left a
            worker with no rows (a worker cannot repeat an empty shard).
        RuntimeError: the workers received different numbers of rows of a replicated input.
    """
    num_workers = len(rows_by_rank)
    if not plan.sharded:
        if len(set(rows_by_rank)) != 1:
            raise RuntimeError(
                f"input {plan.name!r} is given whole to every worker, but they received {rows_by_rank} rows "
                "(please report this)."
            )
        return plan_input(plan.name, plan.columns, rows_by_rank[0], num_workers, sharded=False)
    balanced = plan_input(plan.name, plan.columns, sum(rows_by_rank), num_workers, sharded=True)
    if 0 in rows_by_rank:
        raise ValueError(
            f"input {plan.name!r}: worker {rows_by_rank.index(0)} received none of its {balanced.total_rows} rows "
            f"(rows per worker: {rows_by_rank}); each partition deals its rows to the workers in turn, and this "
            f"DataFrame's partitions hold too few. Repartition it first, e.g. df.repartition({num_workers})."
        )
    return balanced


def steps_per_epoch(rows_per_worker: int, global_batch_size: int, num_workers: int) -> int:
    """Steps that cover each worker's shard once; identical on every worker by construction."""
    return math.ceil(rows_per_worker / per_worker_batch_size(global_batch_size, num_workers))


def per_worker_batch_size(global_batch_size: int, num_workers: int) -> int:
    """The batch each worker feeds per step, so that the workers together step on ``global_batch_size``.

    Raises:
        ValueError: if the global batch does not split evenly across workers.
    """
    if global_batch_size < 1:
        raise ValueError(f"batch size must be >= 1; got {global_batch_size}.")
    if global_batch_size % num_workers:
        lower = global_batch_size - global_batch_size % num_workers
        examples = f"{lower} or {lower + num_workers}" if lower else f"{num_workers} or {2 * num_workers}"
        raise ValueError(
            f"the global batch size {global_batch_size} does not split evenly across {num_workers} workers; "
            f"use a multiple of {num_workers} (e.g. {examples})."
        )
    return global_batch_size // num_workers


# ---------------------------------------------------------------------------------------------
# Driver side.


def partition_keys(num_partitions: int) -> list[int]:
    """Returns ``keys`` such that ``repartition(num_partitions, col)`` sends long ``keys[k]`` to partition ``k``. Pure.

    Spark's hash partitioning sends a row to ``pmod(murmur3(col, seed 42), n)``, the
    SQL ``hash`` function's value, so the keys are found here by computing that hash
    (no Spark job). ``tests/test_feed.py`` checks the mapping against Spark itself.
    """
    keys: dict[int, int] = {}
    candidate = 0
    while len(keys) < num_partitions:
        keys.setdefault(spark_hash_long(candidate) % num_partitions, candidate)  # Python's % is pmod
        candidate += 1
    return [keys[k] for k in range(num_partitions)]


def spark_hash_long(value: int, seed: int = 42) -> int:
    """Spark's ``hash()`` of a long (``Murmur3_x86_32.hashLong``), as a signed 32-bit int. Pure."""
    mask = 0xFFFFFFFF

    def rotate_left(x: int, bits: int) -> int:
        return ((x << bits) | (x >> (32 - bits))) & mask

    def mix(h1: int, word: int) -> int:
        k1 = rotate_left((word * 0xCC9E2D51) & mask, 15) * 0x1B873593 & mask
        return (rotate_left(h1 ^ k1, 13) * 5 + 0xE6546B64) & mask

    value &= 0xFFFFFFFFFFFFFFFF
    h1 = mix(mix(seed & mask, value & mask), value >> 32) ^ 8  # low word, high word, then the length in bytes
    h1 ^= h1 >> 16
    h1 = (h1 * 0x85EBCA6B) & mask
    h1 ^= h1 >> 13
    h1 = (h1 * 0xC2B2AE35) & mask
    h1 ^= h1 >> 16
    return h1 - (1 << 32) if h1 & 0x80000000 else h1


# The staging kept for the next run (warm workers): the key of the inputs it was made from,
# those inputs (so their ids stay unique while kept), the persisted staged DataFrame, its plans.
_kept: dict = {}


def _staging_key(spark: "SparkSession", inputs: dict, num_workers: int) -> tuple:
    """The same DataFrame objects, shard flags and worker count in the same application give the same key."""
    specs = {name: spec if isinstance(spec, Input) else Input(spec) for name, spec in inputs.items()}
    return (spark.sparkContext.applicationId, num_workers,
            tuple((name, id(spec.df), spec.shard) for name, spec in sorted(specs.items())))


def release_kept_staging() -> None:
    """Unpersists the staging kept by ``stage(..., keep=True)``, if any (driver side)."""
    staged = _kept.pop("staged", None)
    _kept.clear()
    if staged is not None:
        staged.unpersist()


def stage(
    spark: "SparkSession", inputs: dict, num_workers: int, keep: bool = False, counted: bool = False
) -> tuple["DataFrame", dict[str, InputPlan], list]:
    """Lays out ``inputs`` as one DataFrame of exactly ``num_workers`` partitions, partition ``k`` = shard ``k``.

    Runs on the driver. Every partition also holds one marker row, so a worker
    whose inputs are all empty still gets a task.

    Args:
        spark: the session.
        inputs: name -> :class:`Input` or DataFrame (a DataFrame is sharded).
        num_workers: number of shards.
        keep: persist the staged DataFrame and hand it out again to the next call
            with the same DataFrame objects, shard flags and worker count, which then
            skips Spark's shuffle (a notebook re-running its training cell). Any other
            call releases the kept staging.
        counted: count the rows first (Spark jobs before the stage, and the sharded
            inputs persisted so that both passes see the same partitions), for shards of
            exactly ``total_rows // num_workers`` rows and plans complete before any row
            moves. Without it (the barrier backend) each partition deals its rows
            round-robin, and the plans' row counts are filled in by :func:`balance` once
            the workers have spilled their shards.

    Returns:
        ``(staged DataFrame, plans by name, DataFrames persisted here)``; the caller
        unpersists the last once the stage has run.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    key = _staging_key(spark, inputs, num_workers)
    if keep and _kept.get("key") == key:
        log.info("reusing the staged inputs of the previous run (same DataFrames, %d workers)", num_workers)
        return _kept["staged"], _kept["plans"], []
    release_kept_staging()
    plans: dict[str, InputPlan] = {}
    markers = spark.range(0, num_workers, 1, 1).select(
        F.col("id").alias(SHARD_COLUMN), F.lit(None).cast("string").alias(INPUT_COLUMN)
    )
    parts = [markers]
    persisted = []
    for name, spec in inputs.items():
        spec = spec if isinstance(spec, Input) else Input(spec)
        df = spec.df
        columns = df.columns
        packed = F.struct(*[F.col(f"`{c}`") for c in columns]).alias(name)
        position = F.monotonically_increasing_id().bitwiseAND((1 << _ROW_BITS) - 1)  # the row's, in its partition
        if not spec.shard:
            plan = plan_input(name, columns, df.count() if counted else None, num_workers, sharded=False)
            part = df.select(F.explode(F.sequence(F.lit(0), F.lit(num_workers - 1))).alias(SHARD_COLUMN), packed)
        elif not counted:
            plan = plan_input(name, columns, None, num_workers, sharded=True)
            # Each partition starts dealing at another worker, so the odd rows of many partitions spread out.
            part = df.select(((F.spark_partition_id() + position) % num_workers).alias(SHARD_COLUMN), packed)
        else:
            # The index must be computed on the same partitioning twice (counts, then
            # rows), so pin the rows first.
            df = df.persist(StorageLevel.MEMORY_AND_DISK)
            persisted.append(df)
            counts = dict(df.groupBy(F.spark_partition_id().alias("p")).count().collect())
            plan = plan_input(name, columns, sum(counts.values()), num_workers, sharded=True)
            offsets, total = [], 0
            for p in range(df.rdd.getNumPartitions()):
                offsets.append(total)
                total += counts.get(p, 0)
            index = F.element_at(F.array(*[F.lit(o) for o in offsets]), F.spark_partition_id() + 1) + position
            part = (
                df.select(index.alias("_index"), packed)
                .where(F.col("_index") < plan.rows_per_worker * num_workers)
                .select((F.col("_index") % num_workers).alias(SHARD_COLUMN), F.col(name))
            )
        plans[name] = plan
        parts.append(part.withColumn(INPUT_COLUMN, F.lit(name)))

    staged = parts[0]
    for part in parts[1:]:
        staged = staged.unionByName(part, allowMissingColumns=True)
    keys = partition_keys(num_workers)
    staged = staged.withColumn(
        # Long keys, as partition_keys() hashed them: an int literal hashes differently.
        KEY_COLUMN,
        F.element_at(F.array(*[F.lit(k).cast("long") for k in keys]), F.col(SHARD_COLUMN).cast("int") + 1),
    ).repartition(num_workers, KEY_COLUMN)
    if keep:  # filled by the stage that reads it; later runs read the cached shards
        staged = staged.persist(StorageLevel.MEMORY_AND_DISK)
        _kept.update(key=key, inputs=inputs, staged=staged, plans=plans)
    return staged, plans, persisted


# ---------------------------------------------------------------------------------------------
# Worker side.


def spill(batches: Iterator["pa.RecordBatch"], plans: dict[str, InputPlan], directory: str) -> dict[str, int]:
    """Writes the Arrow batches of one staged partition to ``directory/<input>.arrow``.

    Runs in the Spark task. Returns the rows written per input.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    writers: dict[str, pa.ipc.RecordBatchFileWriter] = {}
    rows = {name: 0 for name in plans}
    try:
        for batch in batches:
            names = batch.column(INPUT_COLUMN)
            for name in plans:
                selected = batch.filter(pc.equal(names, name))
                if selected.num_rows == 0:
                    continue
                table = pa.RecordBatch.from_struct_array(selected.column(name))
                if name not in writers:
                    writers[name] = pa.ipc.new_file(os.path.join(directory, f"{name}.arrow"), table.schema)
                writers[name].write_batch(table)
                rows[name] += table.num_rows
    finally:
        for writer in writers.values():
            writer.close()
    return rows


class ShardData:
    """This worker's rows of one input, spilled to a local Arrow file.

    Attributes:
        plan: sizes known to all workers (:class:`InputPlan`).
        num_rows: rows of one epoch on this worker (``plan.rows_per_worker``). A shard staged
            without counting holds a few rows more or fewer; the repeating training
            datasets carry them over into the next epoch.
    """

    def __init__(self, plan: InputPlan, path: str | None, num_workers: int, num_cpus: int | None = None,
                 shuffle_buffer: int = 0):
        self.plan = plan
        self.path = path
        self.num_workers = num_workers
        self.num_rows = plan.rows_per_worker
        #: The task's cores: the size of tf.data's thread pool (None: one thread per core of the host).
        self.num_cpus = num_cpus
        #: The default of :meth:`dataset`'s ``shuffle_buffer`` (the job's ``--shuffle-buffer``).
        self.shuffle_buffer = shuffle_buffer
        #: Arrow record batches read by streaming datasets so far (how tests see that memory stays bounded).
        self.chunks_read = 0
        self._table = None

    def table(self) -> "pa.Table":
        """The rows as an Arrow table, memory-mapped (no copy until a column is converted)."""
        import pyarrow as pa

        if self._table is None:
            if self.path is None:
                self._table = pa.table({c: pa.array([], pa.null()) for c in self.plan.columns})
            else:
                with pa.memory_map(self.path) as source:
                    self._table = pa.ipc.open_file(source).read_all()
        return self._table

    def column(self, name: str) -> np.ndarray:
        """One column as numpy; fixed-length arrays become extra dimensions ``(rows, d1, ...)``."""
        self._check_column(name)
        return arrow_to_numpy(self.table().column(name), f"{self.plan.name}.{name}")

    def _check_column(self, name: str) -> None:
        if name not in self.plan.columns:
            raise KeyError(f"input {self.plan.name!r} has no column {name!r}; its columns are {list(self.plan.columns)}.")

    def chunks(self, names: list[str], order_seed=None) -> Iterator[tuple[np.ndarray, ...]]:
        """The columns ``names`` as numpy, one spilled Arrow record batch at a time (bounded memory).

        The file is read, not memory-mapped, so pages already used do not stay in this
        process's memory. ``order_seed`` (an int or a sequence of ints, as numpy takes it)
        shuffles the order of the record batches.
        """
        for name in names:
            self._check_column(name)
        if self.path is None:
            return
        with pa_file(self.path) as reader:
            order = np.arange(reader.num_record_batches)
            if order_seed is not None:
                np.random.default_rng(order_seed).shuffle(order)
            for index in order:
                batch = reader.get_batch(int(index))
                self.chunks_read += 1
                yield tuple(arrow_to_numpy(batch.column(n), f"{self.plan.name}.{n}") for n in names)

    def steps_per_epoch(self, global_batch_size: int) -> int:
        """Steps per epoch over this input with ``global_batch_size``; the same on every worker."""
        return steps_per_epoch(self.num_rows, global_batch_size, self.num_workers)

    def dataset(
        self,
        features: str | list[str],
        label: str | None = None,
        *,
        global_batch_size: int,
        shuffle: bool = True,
        repeat: bool = True,
        seed: int = 0,
        shuffle_buffer: int | None = None,
    ):
        """A ``tf.data.Dataset`` of this worker's per-worker batches.

        For training (``repeat=True``) batches are full and the dataset repeats, so
        pair it with ``steps_per_epoch=self.steps_per_epoch(global_batch_size)``; for
        evaluation (``repeat=False``) it passes once, the last batch possibly short.

        Args:
            features: a column name (the dataset yields arrays) or a list of names
                (it yields dicts).
            label: the label column, or None for features only.
            global_batch_size: batch summed over all workers.
            shuffle: reshuffle the shard every epoch (seeded).
            repeat: repeat forever (training) or pass once.
            seed: shuffle seed.
            shuffle_buffer: 0: the whole shard is converted to tensors in memory and
                shuffled whole every epoch (batches are gathered by row number); the
                shard must fit in memory two to three times. N > 0: the rows stream from
                the spilled file one Arrow record batch at a time (in a new order every
                epoch), shuffled within windows of at least N rows, so memory stays
                bounded however large the shard is.
                Either way each pass covers every row of the shard once. None (default):
                :attr:`shuffle_buffer`, the job's ``--shuffle-buffer``.
        """
        from tfos_lib.tfenv import dataset_options, import_tensorflow

        tf = import_tensorflow()
        batch = per_worker_batch_size(global_batch_size, self.num_workers) if self.plan.sharded else global_batch_size
        names = [features] if isinstance(features, str) else list(features)
        columns = names + ([label] if label is not None else [])

        def structure(values):
            x = values[0] if isinstance(features, str) else dict(zip(names, values[: len(names)]))
            return x if label is None else (x, values[-1])

        shuffle_buffer = self.shuffle_buffer if shuffle_buffer is None else shuffle_buffer
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be 0 (in memory) or a number of rows; got {shuffle_buffer}.")
        if shuffle_buffer == 0:
            ds = self._in_memory(tf, columns, structure, batch, repeat, seed if shuffle else None)
        else:
            # Blocks of rows in, batches out: rebatch slices blocks, with no per-row tf.data work.
            ds = self._streamed(tf, columns, structure, shuffle_buffer, seed if shuffle else None)
            ds = ds.repeat() if repeat else ds
            ds = ds.rebatch(batch, drop_remainder=repeat)
        if repeat and (shuffle_buffer or self.num_rows):
            # tf.data cannot tell that these pipelines never end. Said so, a multi-worker strategy skips its
            # per-step all-reduce that asks every worker whether it still has data (for uneven last batches,
            # which full repeated batches never have): one collective round trip less per training step.
            ds = ds.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))
        options = dataset_options(tf, self.num_cpus)
        # Each worker already holds only its own shard; TensorFlow must not shard it again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return ds.with_options(options).prefetch(tf.data.AUTOTUNE)

    def _in_memory(self, tf, columns: list[str], structure, batch: int, repeat: bool, seed: int | None):
        """Batches gathered from the whole shard held as tensors, as Keras' own numpy adapter does.

        Each pass is one permutation of the row numbers (seeded by ``[seed, pass]``; in
        order without a seed); ``rebatch`` cuts the stream of row numbers into batches,
        across passes when repeating, and each batch is one ``gather`` per column. A
        per-row ``shuffle`` and ``batch`` cost a worker with one core about a fifth of an
        input-bound model's throughput.
        """
        tensors = [tf.convert_to_tensor(self.column(c)) for c in columns]
        rows = int(tensors[0].shape[0])  # columns always holds at least the features
        passes = tf.data.Dataset.counter() if repeat and rows else tf.data.Dataset.range(1)

        def row_numbers(n_pass):
            numbers = tf.range(rows, dtype=tf.int64)
            if seed is None:
                return numbers
            return tf.random.experimental.stateless_shuffle(numbers, seed=tf.stack([tf.constant(seed, tf.int64), n_pass]))

        def gather(numbers):
            return structure([tf.gather(t, numbers) for t in tensors])

        ds = passes.map(row_numbers).rebatch(batch, drop_remainder=repeat)
        return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def _streamed(self, tf, columns: list[str], structure, shuffle_buffer: int, seed: int | None):
        """Blocks of rows of ``columns`` read chunk by chunk from the spilled file, one pass per iteration.

        With a ``seed``, every pass reads the record batches in a new order and shuffles
        the rows within windows of at least ``shuffle_buffer`` rows (whole record batches
        pooled, then permuted), so memory holds about two windows, never the shard.
        """
        if self.path is None:
            raise ValueError(f"input {self.plan.name!r} has no rows on this worker; it cannot be streamed.")
        with pa_file(self.path) as reader:
            first = reader.get_batch(0).slice(0, 1)
        specs = []
        for name in columns:
            row = arrow_to_numpy(first.column(name), f"{self.plan.name}.{name}")
            specs.append(tf.TensorSpec((None, *row.shape[1:]), tf.string if row.dtype == object else row.dtype))
        passes = itertools.count()

        def generate():
            if seed is None:
                for values in self.chunks(columns):
                    yield structure(list(values))
                return
            pass_seed = [seed, next(passes)]
            rng = np.random.default_rng(pass_seed)
            window: list[tuple[np.ndarray, ...]] = []
            rows = 0
            for values in self.chunks(columns, pass_seed):
                window.append(values)
                rows += len(values[0])
                if rows >= shuffle_buffer:
                    yield structure(_shuffled(window, rng))
                    window, rows = [], 0
            if window:
                yield structure(_shuffled(window, rng))

        return tf.data.Dataset.from_generator(generate, output_signature=structure(specs))


def _shuffled(window: list[tuple[np.ndarray, ...]], rng: np.random.Generator) -> list[np.ndarray]:
    """The window's chunks joined column by column, rows in one random order."""
    columns = [np.concatenate(parts) for parts in zip(*window)]
    order = rng.permutation(len(columns[0]))
    return [column[order] for column in columns]


@contextlib.contextmanager
def pa_file(path: str):
    """An Arrow IPC file reader on ``path``, read (not memory-mapped) so used pages do not stay resident."""
    import pyarrow as pa

    with pa.OSFile(path) as source:
        yield pa.ipc.open_file(source)


def arrow_to_numpy(array, what: str) -> np.ndarray:
    """Converts an Arrow column to numpy without per-row Python; nested fixed-length lists become dimensions.

    Raises:
        ValueError: on nulls, or list columns whose rows differ in length.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    if array.null_count:
        raise ValueError(f"column {what} has {array.null_count} null values; fill or drop them before training.")
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_fixed_size_list(array.type):
        lengths = pc.list_value_length(array)
        if pa.types.is_fixed_size_list(array.type):
            width = array.type.list_size
        elif len(array) == 0:
            width = 0
        else:
            low, high = pc.min_max(lengths).values()
            if low.as_py() != high.as_py():
                raise ValueError(
                    f"column {what} holds arrays of different lengths ({low} to {high}); "
                    "pad or truncate them to one length in Spark first."
                )
            width = low.as_py()
        inner = arrow_to_numpy(array.flatten(), what)
        return inner.reshape((len(array), width) + inner.shape[1:])
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return np.asarray(array.to_pylist(), dtype=object)
    return array.to_numpy(zero_copy_only=False)

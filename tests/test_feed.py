"""Tests for tfos_lib.feed: shard planning, Arrow -> numpy, spilling, and the Spark staging layout."""

import json
import os
import pickle

import numpy as np
import pyarrow as pa
import pytest

from tfos_lib import feed
from tfos_lib.feed import (
    INPUT_COLUMN,
    KEY_COLUMN,
    SHARD_COLUMN,
    Input,
    InputPlan,
    ShardData,
    arrow_to_numpy,
    partition_keys,
    per_worker_batch_size,
    plan_input,
    spill,
    stage,
    steps_per_epoch,
)

# ---------------------------------------------------------------------------------------------
# plan_input


def test_plan_equal_shards():
    plan = plan_input("train", ["x", "y"], 100, 4, sharded=True)
    assert plan == InputPlan("train", ("x", "y"), 100, 25, 0, sharded=True)


def test_plan_drops_the_remainder():
    plan = plan_input("train", ("x",), 103, 7, sharded=True)
    assert (plan.rows_per_worker, plan.dropped_rows) == (14, 5)
    assert plan.rows_per_worker * 7 + plan.dropped_rows == plan.total_rows
    assert plan.dropped_rows < 7


def test_plan_columns_from_any_iterable():
    plan = plan_input("train", iter(["a", "b"]), 10, 2, sharded=True)
    assert plan.columns == ("a", "b")


def test_plan_exactly_one_row_per_worker():
    plan = plan_input("train", ["x"], 3, 3, sharded=True)
    assert (plan.rows_per_worker, plan.dropped_rows) == (1, 0)


@pytest.mark.parametrize("rows,workers", [(2, 3), (0, 1), (7, 8)])
def test_plan_fewer_rows_than_workers(rows, workers):
    with pytest.raises(ValueError) as info:
        plan_input("my_train", ["x"], rows, workers, sharded=True)
    message = str(info.value)
    assert "'my_train'" in message
    assert f"{rows} rows" in message
    assert f"num_workers={workers}" in message


@pytest.mark.parametrize("reserved", [SHARD_COLUMN, INPUT_COLUMN, KEY_COLUMN])
def test_plan_rejects_reserved_column_names(reserved):
    with pytest.raises(ValueError, match="reserved") as info:
        plan_input("train", ["x", reserved], 10, 2, sharded=True)
    assert reserved in str(info.value)
    assert "'train'" in str(info.value)


def test_plan_rejects_reserved_input_name():
    with pytest.raises(ValueError, match=INPUT_COLUMN):
        plan_input(INPUT_COLUMN, ["x"], 10, 2, sharded=False)


def test_plan_rejects_no_columns():
    with pytest.raises(ValueError, match="no columns"):
        plan_input("train", [], 10, 2, sharded=True)


def test_plan_rejects_zero_workers():
    with pytest.raises(ValueError, match="num_workers"):
        plan_input("train", ["x"], 10, 0, sharded=True)


@pytest.mark.parametrize("rows", [0, 2, 1000])
def test_plan_replicated_gives_every_worker_everything(rows):
    plan = plan_input("test", ["x"], rows, 3, sharded=False)
    assert plan == InputPlan("test", ("x",), rows, rows, 0, sharded=False)


def test_plan_is_picklable_and_frozen():
    plan = plan_input("train", ["x"], 10, 3, sharded=True)
    assert pickle.loads(pickle.dumps(plan)) == plan
    with pytest.raises(AttributeError):
        plan.rows_per_worker = 4


# ---------------------------------------------------------------------------------------------
# steps_per_epoch / per_worker_batch_size


def test_steps_example_from_the_docs():
    plan = plan_input("train", ["x"], 1347, 2, sharded=True)
    assert (plan.rows_per_worker, plan.dropped_rows) == (673, 1)
    assert per_worker_batch_size(100, 2) == 50
    assert steps_per_epoch(plan.rows_per_worker, 100, 2) == 14


@pytest.mark.parametrize(
    "rows_per_worker,global_batch,workers,steps",
    [(50, 100, 2, 1), (51, 100, 2, 2), (1, 1, 1, 1), (1000, 32, 1, 32), (30, 12, 3, 8), (1, 300, 3, 1)],
)
def test_steps_is_ceil_of_shard_over_per_worker_batch(rows_per_worker, global_batch, workers, steps):
    assert steps_per_epoch(rows_per_worker, global_batch, workers) == steps


@pytest.mark.parametrize("global_batch,workers,per_worker", [(1, 1, 1), (64, 4, 16), (99, 3, 33)])
def test_per_worker_batch_size(global_batch, workers, per_worker):
    assert per_worker_batch_size(global_batch, workers) == per_worker


def test_per_worker_batch_size_suggests_multiples():
    with pytest.raises(ValueError) as info:
        per_worker_batch_size(10, 3)
    message = str(info.value)
    assert "10" in message and "3 workers" in message
    assert "multiple of 3" in message
    assert "9 or 12" in message


def test_per_worker_batch_size_suggests_two_distinct_multiples_for_small_batch():
    with pytest.raises(ValueError) as info:
        per_worker_batch_size(2, 3)
    assert "3 or 6" in str(info.value)


@pytest.mark.parametrize("batch", [0, -4])
def test_per_worker_batch_size_rejects_non_positive(batch):
    with pytest.raises(ValueError, match=f"got {batch}"):
        per_worker_batch_size(batch, 2)


# ---------------------------------------------------------------------------------------------
# arrow_to_numpy


def test_arrow_scalars():
    ints = arrow_to_numpy(pa.array([1, 2, 3], pa.int64()), "t.a")
    assert ints.dtype == np.int64 and ints.tolist() == [1, 2, 3]
    floats = arrow_to_numpy(pa.array([0.5, 1.5], pa.float32()), "t.b")
    assert floats.dtype == np.float32 and floats.tolist() == [0.5, 1.5]
    bools = arrow_to_numpy(pa.array([True, False]), "t.c")
    assert bools.dtype == np.bool_ and bools.tolist() == [True, False]


def test_arrow_fixed_length_list_becomes_2d():
    array = pa.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], pa.list_(pa.float32()))
    out = arrow_to_numpy(array, "t.x")
    assert out.shape == (2, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1, 2, 3], [4, 5, 6]])


def test_arrow_large_list_becomes_2d():
    array = pa.array([[1, 2], [3, 4]], pa.large_list(pa.int32()))
    np.testing.assert_array_equal(arrow_to_numpy(array, "t.x"), [[1, 2], [3, 4]])


def test_arrow_nested_list_becomes_3d():
    rows = [[[r * 100 + i * 10 + j for j in range(4)] for i in range(3)] for r in range(2)]
    out = arrow_to_numpy(pa.array(rows, pa.list_(pa.list_(pa.int64()))), "t.img")
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, np.array(rows))


def test_arrow_fixed_size_list_array():
    array = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(12, dtype=np.float64)), 4)
    out = arrow_to_numpy(array, "t.x")
    assert out.shape == (3, 4)
    np.testing.assert_array_equal(out, np.arange(12).reshape(3, 4))


def test_arrow_chunked_arrays():
    scalars = pa.chunked_array([[1, 2], [3], [4, 5]])
    np.testing.assert_array_equal(arrow_to_numpy(scalars, "t.a"), [1, 2, 3, 4, 5])
    lists = pa.chunked_array([pa.array([[1, 2]]), pa.array([[3, 4], [5, 6]])])
    out = arrow_to_numpy(lists, "t.x")
    assert out.shape == (3, 2)
    np.testing.assert_array_equal(out, [[1, 2], [3, 4], [5, 6]])
    single = pa.chunked_array([pa.array([[7, 8]])])
    np.testing.assert_array_equal(arrow_to_numpy(single, "t.x"), [[7, 8]])
    empty = pa.chunked_array([], pa.int64())
    assert arrow_to_numpy(empty, "t.a").shape == (0,)


def test_arrow_sliced_arrays():
    scalars = pa.array([0, 1, 2, 3, 4]).slice(1, 3)
    np.testing.assert_array_equal(arrow_to_numpy(scalars, "t.a"), [1, 2, 3])

    lists = pa.array([[0, 0], [1, 2], [3, 4], [9, 9]]).slice(1, 2)
    out = arrow_to_numpy(lists, "t.x")
    assert out.shape == (2, 2)
    np.testing.assert_array_equal(out, [[1, 2], [3, 4]])

    fixed = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(10)), 2).slice(2, 2)
    np.testing.assert_array_equal(arrow_to_numpy(fixed, "t.x"), [[4, 5], [6, 7]])

    nested = pa.array([[[0]], [[1], [2]], [[3], [4]]]).slice(1)
    out = arrow_to_numpy(nested, "t.x")
    assert out.shape == (2, 2, 1)
    np.testing.assert_array_equal(out, [[[1], [2]], [[3], [4]]])


def test_arrow_slice_hides_ragged_rows_and_nulls_outside_it():
    # Only the rows inside the slice count.
    ragged_outside = pa.array([[1], [2, 3], [4, 5]]).slice(1)
    np.testing.assert_array_equal(arrow_to_numpy(ragged_outside, "t.x"), [[2, 3], [4, 5]])
    null_outside = pa.array([None, 1, 2]).slice(1)
    np.testing.assert_array_equal(arrow_to_numpy(null_outside, "t.a"), [1, 2])


@pytest.mark.parametrize(
    "array",
    [
        pa.array([[1, 2], [3]]),
        pa.array([[[1, 2], [3, 4]], [[5, 6], [7]]]),  # ragged one level down
        pa.chunked_array([pa.array([[1, 2]]), pa.array([[3]])]),  # ragged across chunks
    ],
    ids=["flat", "nested", "chunks"],
)
def test_arrow_ragged_lists_name_the_column(array):
    with pytest.raises(ValueError, match="different lengths") as info:
        arrow_to_numpy(array, "train.features")
    assert "train.features" in str(info.value)


@pytest.mark.parametrize(
    "array",
    [
        pa.array([1.0, None, 3.0]),
        pa.array([[1, 2], None]),
        pa.array([[1, None], [3, 4]]),
        pa.chunked_array([[1, 2], [None]]),
        pa.array(["a", None]),
    ],
    ids=["scalar", "list", "element", "chunked", "string"],
)
def test_arrow_nulls_are_rejected(array):
    with pytest.raises(ValueError, match="null") as info:
        arrow_to_numpy(array, "train.label")
    assert "train.label" in str(info.value)


def test_arrow_strings():
    for array in (pa.array(["a", "bb", ""]), pa.array(["a", "bb", ""], pa.large_string())):
        out = arrow_to_numpy(array, "t.s")
        assert out.dtype == object
        assert out.tolist() == ["a", "bb", ""]


def test_arrow_empty_list_column():
    out = arrow_to_numpy(pa.array([], pa.list_(pa.float32())), "t.x")
    assert out.shape[0] == 0 and out.ndim == 2


# ---------------------------------------------------------------------------------------------
# spill + ShardData without Spark: batches laid out as the staged DataFrame is.

TRAIN_TYPE = pa.struct([("id", pa.int64()), ("x", pa.list_(pa.float32())), ("label", pa.int32())])
TEST_TYPE = pa.struct([("name", pa.string())])


def _staged_batch(shard, train_ids=(), test_names=(), markers=0):
    """One record batch of a staged partition: markers, then train rows, then test rows."""
    n_train, n_test = len(train_ids), len(test_names)
    train = [None] * markers + [
        {"id": i, "x": [float(i), float(i) + 0.5, -float(i)], "label": i % 10} for i in train_ids
    ] + [None] * n_test
    test = [None] * (markers + n_train) + [{"name": s} for s in test_names]
    return pa.RecordBatch.from_pydict(
        {
            SHARD_COLUMN: pa.array([shard] * (markers + n_train + n_test), pa.int64()),
            "train": pa.array(train, TRAIN_TYPE),
            "test": pa.array(test, TEST_TYPE),
            INPUT_COLUMN: pa.array([None] * markers + ["train"] * n_train + ["test"] * n_test, pa.string()),
        }
    )


def test_spill_and_shard_data_round_trip(tmp_path):
    num_workers = 2
    plans = {
        "train": plan_input("train", ["id", "x", "label"], 13, num_workers, sharded=True),
        "test": plan_input("test", ["name"], 3, num_workers, sharded=False),
    }
    assert plans["train"].rows_per_worker == 6
    # Worker 1's shard arriving in three batches, the marker in the middle one.
    batches = [
        _staged_batch(1, train_ids=[1, 3, 5], test_names=["a"]),
        _staged_batch(1, train_ids=[7], markers=1),
        _staged_batch(1, train_ids=[9, 11], test_names=["b", "c"]),
    ]
    counts = spill(iter(batches), plans, str(tmp_path))
    assert counts == {"train": 6, "test": 3}
    assert sorted(os.listdir(tmp_path)) == ["test.arrow", "train.arrow"]

    train = ShardData(plans["train"], str(tmp_path / "train.arrow"), num_workers)
    assert train.num_rows == 6
    assert train.table().column_names == ["id", "x", "label"]
    ids = train.column("id")
    assert ids.shape == (6,) and ids.dtype == np.int64
    assert ids.tolist() == [1, 3, 5, 7, 9, 11]
    x = train.column("x")
    assert x.shape == (6, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, 0], ids)
    np.testing.assert_array_equal(x[:, 2], -ids)
    assert train.column("label").tolist() == [1, 3, 5, 7, 9, 1]
    assert train.steps_per_epoch(4) == 3  # 6 rows, 2 per worker per step
    assert train.steps_per_epoch(12) == 1
    with pytest.raises(KeyError, match="name"):
        train.column("name")

    test = ShardData(plans["test"], str(tmp_path / "test.arrow"), num_workers)
    assert test.num_rows == 3
    assert test.column("name").tolist() == ["a", "b", "c"]


def test_spill_of_markers_only_writes_nothing(tmp_path):
    plans = {"train": plan_input("train", ["id", "x", "label"], 4, 2, sharded=True)}
    counts = spill(iter([_staged_batch(0, markers=1)]), plans, str(tmp_path))
    assert counts == {"train": 0}
    assert os.listdir(tmp_path) == []
    empty = ShardData(plan_input("test", ["name"], 0, 2, sharded=False), None, 2)
    assert empty.num_rows == 0
    assert empty.table().num_rows == 0
    assert empty.table().column_names == ["name"]


# ---------------------------------------------------------------------------------------------
# With Spark.


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 64])
def test_partition_keys_map_key_k_to_partition_k(spark, n):
    from pyspark.sql import functions as F

    keys = partition_keys(n)
    assert len(keys) == n and len(set(keys)) == n
    df = spark.createDataFrame([(k, shard) for shard, k in enumerate(keys)], "key long, shard long")
    rows = df.repartition(n, "key").select("shard", F.spark_partition_id().alias("p")).collect()
    assert sorted((r.shard, r.p) for r in rows) == [(k, k) for k in range(n)]


def test_spark_hash_long_is_sparks_own_hash(spark):
    values = [0, 1, -1, 42, 2**31 - 1, 2**31, -(2**31), 2**32 + 7, 2**63 - 1, -(2**63), 123456789012345]
    df = spark.createDataFrame([(v,) for v in values], "v long")
    assert [r.h for r in df.selectExpr("hash(v) AS h").collect()] == [feed.spark_hash_long(v) for v in values]


@pytest.mark.parametrize("num_workers", [1, 2, 3, 5])
def test_stage_key_column_puts_marker_k_in_partition_k(spark, num_workers):
    from pyspark.sql import functions as F

    staged, plans, persisted = stage(spark, {}, num_workers)
    assert plans == {} and persisted == []
    rows = staged.select(F.col(SHARD_COLUMN).alias("s"), F.spark_partition_id().alias("p")).collect()
    assert sorted((r.s, r.p) for r in rows) == [(k, k) for k in range(num_workers)]


def _uneven_train_df(spark):
    """103 rows with ids 0..102 in order over 7 partitions of 20, 20, 3, 0, 1, 29, 30 rows."""
    from pyspark.sql import functions as F

    parts = [spark.range(0, 40, 1, 2), spark.range(40, 43, 1, 1), spark.range(43, 44, 1, 2), spark.range(44, 103, 1, 2)]
    df = parts[0]
    for part in parts[1:]:
        df = df.union(part)
    return df.select(
        "id",
        F.array(F.col("id").cast("float"), (F.col("id") * 2).cast("float")).alias("x"),
        (F.col("id") % 10).cast("int").alias("label"),
    )


#: Where _uneven_train_df's rows sit: partition -> (first id, rows).
_UNEVEN_LAYOUT = {0: (0, 20), 1: (20, 20), 2: (40, 3), 3: (43, 0), 4: (43, 1), 5: (44, 29), 6: (73, 30)}


@pytest.mark.parametrize("counted", [False, True], ids=["dealt", "counted"])
@pytest.mark.parametrize("num_workers", [1, 2, 3])
def test_stage_lays_out_one_shard_per_partition_and_every_worker_derives_the_same_epoch(
        spark, tmp_path, num_workers, counted):
    from pyspark.sql import functions as F

    train_df = _uneven_train_df(spark)
    assert train_df.rdd.getNumPartitions() == 7
    if num_workers == 1 and counted:  # the layout is the same every time; check it once
        assert train_df.rdd.glom().map(len).collect() == [rows for _, rows in _UNEVEN_LAYOUT.values()]
    small_df = spark.range(5).select((F.col("id") + 1000).alias("id"), F.concat(F.lit("t"), F.col("id")).alias("tag"))
    total = 103

    staged, plans, persisted = stage(spark, {"train": train_df, "small": Input(small_df, shard=False)}, num_workers,
                                     counted=counted)
    try:
        if counted:
            assert plans["train"] == plan_input("train", ["id", "x", "label"], total, num_workers, sharded=True)
            assert plans["small"] == plan_input("small", ["id", "tag"], 5, num_workers, sharded=False)
        else:  # no Spark job counted the rows: the plans wait for the workers' counts
            assert persisted == []
            assert plans["train"] == plan_input("train", ["id", "x", "label"], None, num_workers, sharded=True)
            assert plans["small"].total_rows is None and not plans["small"].sharded
        assert staged.rdd.getNumPartitions() == num_workers

        root = str(tmp_path)

        def report(batches):
            from pyspark import TaskContext

            pid = TaskContext.get().partitionId()
            kept = list(batches)
            shards = {}
            markers = []
            for batch in kept:
                for shard, name in zip(batch.column(SHARD_COLUMN).to_pylist(), batch.column(INPUT_COLUMN).to_pylist()):
                    if name is None:
                        markers.append(shard)
                    else:
                        shards.setdefault(name, set()).add(shard)
            directory = os.path.join(root, f"part-{pid}")
            os.makedirs(directory)
            counts = feed.spill(iter(kept), plans, directory)
            summary = {"shards": {k: sorted(v) for k, v in shards.items()}, "markers": markers, "counts": counts}
            yield pa.RecordBatch.from_pydict({"partition": [pid], "summary": [json.dumps(summary)]})

        rows = staged.mapInArrow(report, "partition long, summary string").collect()
    finally:
        for df in persisted:
            df.unpersist()

    summaries = {r.partition: json.loads(r.summary) for r in rows}
    assert sorted(summaries) == list(range(num_workers))  # one task per partition, all partitions present
    counts = [summaries[k]["counts"] for k in range(num_workers)]
    if counted:
        train_plan, small_plan = plans["train"], plans["small"]
    else:  # what the workers do when they meet: each completes the plans from every worker's counts
        train_plan, small_plan = (feed.balance(plans[name], [c[name] for c in counts]) for name in ("train", "small"))
    assert train_plan == plan_input("train", ["id", "x", "label"], total, num_workers, sharded=True)
    assert small_plan == plan_input("small", ["id", "tag"], 5, num_workers, sharded=False)

    used, steps_by_rank = set(), {}
    for k, summary in summaries.items():
        # Partition k holds shard k only, with exactly one marker row.
        assert summary["markers"] == [k]
        assert summary["shards"] == {"train": [k], "small": [k]}
        assert summary["counts"]["small"] == 5

        directory = tmp_path / f"part-{k}"
        with pa.ipc.open_file(str(directory / "train.arrow")) as reader:
            ids = reader.read_all().column("id").to_pylist()
        assert len(set(ids)) == len(ids) == summary["counts"]["train"]
        assert used.isdisjoint(ids)
        used.update(ids)
        if counted:  # rows indexed in partition order (here: id order), shard = index % num_workers: exact shards
            assert all(i % num_workers == k for i in ids) and len(ids) == train_plan.rows_per_worker
        else:  # partition p deals its i-th row to worker (p + i) % num_workers
            expected = [first + i for p, (first, size) in _UNEVEN_LAYOUT.items() for i in range(size)
                        if (p + i) % num_workers == k]
            assert sorted(ids) == expected

        shard = ShardData(train_plan, str(directory / "train.arrow"), num_workers)
        x = shard.column("x")
        assert x.shape == (len(ids), 2) and x.dtype == np.float32
        np.testing.assert_array_equal(x[:, 0], shard.column("id"))
        np.testing.assert_array_equal(shard.column("label"), shard.column("id") % 10)
        # Every worker runs the same number of steps (or the collective ring deadlocks).
        steps_by_rank[k] = shard.steps_per_epoch(5 * num_workers)

    assert set(steps_by_rank.values()) == {-(-(total // num_workers) // 5)}, steps_by_rank
    if counted:
        assert used == set(range(total - train_plan.dropped_rows))
    else:  # nothing dropped: a worker's extra row comes round in its next epoch
        assert used == set(range(total))


def test_balance_completes_a_dealt_plan_from_the_workers_counts_or_says_what_is_wrong():
    dealt = plan_input("train", ["x"], None, 3, sharded=True)
    assert feed.balance(dealt, [34, 35, 34]) == plan_input("train", ["x"], 103, 3, sharded=True)
    with pytest.raises(ValueError,
                       match=r"'train': worker 1 received none of its 4 rows.*\[2, 0, 2\].*repartition\(3\)"):
        feed.balance(dealt, [2, 0, 2])
    with pytest.raises(ValueError, match="has 2 rows, fewer than num_workers=3"):
        feed.balance(dealt, [1, 0, 1])
    whole = plan_input("test", ["x"], None, 3, sharded=False)
    assert feed.balance(whole, [7, 7, 7]) == plan_input("test", ["x"], 7, 3, sharded=False)
    with pytest.raises(RuntimeError, match=r"'test' is given whole to every worker, but they received \[7, 6, 7\]"):
        feed.balance(whole, [7, 6, 7])


# ---------------------------------------------------------------------------------------------
# Streaming from the spilled file (--shuffle-buffer): the same rows, bounded memory.


def _spilled_shard(tmp_path, rows: int, rows_per_chunk: int) -> ShardData:
    """One worker's shard of ``rows`` rows (id, x = [id, 2 id], label = id % 7), spilled in chunks."""
    plan = plan_input("train", ["id", "x", "label"], rows, 1, sharded=True)
    schema = pa.schema([("id", pa.int64()), ("x", pa.list_(pa.float32(), 2)), ("label", pa.int64())])
    with pa.ipc.new_file(str(tmp_path / "train.arrow"), schema) as writer:
        for start in range(0, rows, rows_per_chunk):
            ids = np.arange(start, min(rows, start + rows_per_chunk))
            x = pa.FixedSizeListArray.from_arrays(pa.array(np.stack([ids, 2 * ids], 1).reshape(-1), pa.float32()), 2)
            writer.write_batch(pa.RecordBatch.from_arrays([pa.array(ids), x, pa.array(ids % 7)], schema=schema))
    return ShardData(plan, str(tmp_path / "train.arrow"), 1, num_cpus=1)


def _epochs(dataset, steps: int, epochs: int) -> list[list[int]]:
    """The ids of each epoch's batches, read from a repeated dataset."""
    it = iter(dataset)
    out = []
    for _ in range(epochs):
        ids = []
        for _ in range(steps):
            features, label = next(it)
            ids += features["id"].numpy().tolist()
            np.testing.assert_array_equal(features["x"].numpy()[:, 1], 2 * features["id"].numpy())
            np.testing.assert_array_equal(label.numpy(), features["id"].numpy() % 7)
        out.append(ids)
    return out


def test_streamed_batches_equal_in_memory_batches(tmp_path):
    shard = _spilled_shard(tmp_path, rows=100, rows_per_chunk=16)
    options = dict(global_batch_size=10, shuffle=False)
    in_memory = _epochs(shard.dataset(["id", "x"], "label", shuffle_buffer=0, **options), 10, 2)
    streamed = _epochs(shard.dataset(["id", "x"], "label", shuffle_buffer=8, **options), 10, 2)
    assert streamed == in_memory == [list(range(100))] * 2
    # One pass for evaluation: every row once, the last batch short.
    once = shard.dataset("id", global_batch_size=32, shuffle=False, repeat=False, shuffle_buffer=8)
    assert [len(b) for b in once] == [32, 32, 32, 4]


@pytest.mark.parametrize("shuffle_buffer", [0, 8])
def test_training_datasets_say_they_never_end_and_evaluation_ones_do_not(tmp_path, shuffle_buffer):
    """Infinite cardinality spares a multi-worker strategy its per-step "does every worker have data" all-reduce."""
    from tfos_lib import import_tensorflow

    tf = import_tensorflow()
    shard = _spilled_shard(tmp_path, rows=50, rows_per_chunk=16)
    training = shard.dataset(["id", "x"], "label", global_batch_size=10, shuffle_buffer=shuffle_buffer)
    assert training.cardinality() == tf.data.INFINITE_CARDINALITY
    assert len(_epochs(training, 5, 3)) == 3
    once = shard.dataset("id", global_batch_size=10, repeat=False, shuffle_buffer=shuffle_buffer)
    assert once.cardinality() != tf.data.INFINITE_CARDINALITY and sum(len(b) for b in once) == 50


def test_streamed_shuffle_covers_every_row_each_epoch_in_a_new_order(tmp_path):
    shard = _spilled_shard(tmp_path, rows=120, rows_per_chunk=10)
    epochs = _epochs(shard.dataset(["id", "x"], "label", global_batch_size=12, shuffle_buffer=25, seed=3), 10, 3)
    for ids in epochs:
        assert sorted(ids) == list(range(120))  # every row exactly once per epoch
    assert epochs[0] != epochs[1] != epochs[2] and epochs[0] != list(range(120))


def test_in_memory_shuffle_covers_every_row_each_epoch_in_a_new_order_seeded(tmp_path):
    shard = _spilled_shard(tmp_path, rows=110, rows_per_chunk=30)
    options = dict(global_batch_size=11, shuffle_buffer=0, seed=5)
    epochs = _epochs(shard.dataset(["id", "x"], "label", **options), 10, 3)
    for ids in epochs:
        assert sorted(ids) == list(range(110))  # every row exactly once per epoch
    assert epochs[0] != epochs[1] != epochs[2] and epochs[0] != list(range(110))
    assert _epochs(shard.dataset(["id", "x"], "label", **options), 10, 3) == epochs  # the seed decides the order
    assert _epochs(shard.dataset(["id", "x"], "label", **{**options, "seed": 6}), 10, 1)[0] != epochs[0]
    # Batches run across the epoch boundary when the shard is not a multiple of the batch.
    crossing = _epochs(shard.dataset(["id", "x"], "label", global_batch_size=12, shuffle_buffer=0), 10, 1)[0]
    assert len(crossing) == 120 and sorted(crossing[:110]) == list(range(110))


def test_streaming_reads_the_file_a_chunk_at_a_time(tmp_path):
    """Memory stays bounded: the first batch needs only the chunks that fill the shuffle buffer, not the file."""
    shard = _spilled_shard(tmp_path, rows=4000, rows_per_chunk=100)  # 40 chunks, larger than the buffer
    dataset = shard.dataset(["id", "x"], "label", global_batch_size=10, shuffle_buffer=150)
    next(iter(dataset))
    # A 150-row window is 2 chunks of 100; prefetching may read a window or two more, far from all 40.
    assert 2 <= shard.chunks_read <= 8, shard.chunks_read
    assert shard._table is None  # the in-memory table was never built


def test_shuffle_buffer_default_comes_from_the_shard_and_is_checked(tmp_path):
    shard = _spilled_shard(tmp_path, rows=50, rows_per_chunk=10)
    shard.shuffle_buffer = 20  # what the job's --shuffle-buffer sets
    list(shard.dataset("id", global_batch_size=10, repeat=False))
    assert shard.chunks_read == 5 and shard._table is None
    with pytest.raises(ValueError, match="shuffle_buffer must be 0 .in memory. or a number of rows; got -1"):
        shard.dataset("id", global_batch_size=10, shuffle_buffer=-1)

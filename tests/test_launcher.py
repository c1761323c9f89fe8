"""The launcher end to end: local backend in-process, barrier backend with two real workers."""

from __future__ import annotations

import numpy as np
import pytest

import tfos_lib
from tfos_lib.monitor import Timeouts


def fail_on_rank_one(ctx):
    if ctx.rank == 1:
        raise ValueError("boom on purpose in rank 1")
    # The chief waits in the collective set-up for a peer that never comes.
    tf = tfos_lib.import_tensorflow()
    with ctx.strategy().scope():
        tf.Variable(1.0)
    return "unreachable"


def test_local_backend_runs_in_process(spark, tmp_path, linear_regression):
    make_frame, train_linear = linear_regression
    result = tfos_lib.run(
        train_linear, 3, backend="local", inputs={"train": make_frame(spark)}, output_dir=str(tmp_path)
    )
    assert result["rank"] == 0 and result["world"] == 1 and result["rows"] == 400
    assert result["loss"][-1] < result["loss"][0]


def test_local_backend_refuses_more_workers(spark, linear_regression):
    _, train_linear = linear_regression
    with pytest.raises(ValueError, match="exactly one"):
        tfos_lib.run(train_linear, 1, backend="local", num_workers=2)


def test_barrier_two_workers_train_together(spark, tmp_path, linear_regression):
    make_frame, train_linear = linear_regression
    result = tfos_lib.run(
        train_linear,
        4,
        num_workers=2,
        backend="barrier",
        inputs={"train": make_frame(spark, rows=401)},
        output_dir=str(tmp_path),
        spark=spark,
    )
    assert result["rank"] == 0 and result["world"] == 2
    assert result["rows"] == 200  # 401 rows -> an epoch of 200 rows on each of 2 workers
    assert result["loss"][-1] < 0.5 * result["loss"][0]
    chief = np.load(tmp_path / "weights-0.npy")
    other = np.load(tmp_path / "_workers" / "1" / "weights-1.npy")
    np.testing.assert_allclose(chief, other, rtol=0, atol=1e-6)
    assert not np.allclose(chief, 0)
    # Two processes, each with its own half of the rows: identical weights then mean the gradients were
    # all-reduced (with no all-reduce, two different shards would have trained two different models).
    with np.load(tmp_path / "shard-0.npz") as first, np.load(tmp_path / "_workers" / "1" / "shard-1.npz") as second:
        assert int(first["pid"]) != int(second["pid"])
        # 3 partitions of 133, 134, 134 rows, each dealt in turn starting at worker p % 2: 201 + 200 rows. No row
        # is dropped: the chief's extra row comes round in its next epoch.
        assert (first["x"].shape, second["x"].shape) == ((201, 2), (200, 2))
        assert not np.array_equal(first["x"], second["x"])  # the disjointness of shards: test_feed.py


def checksum(ctx, array):
    return {"rank": ctx.rank, "shape": array.shape, "sum": float(array.sum(dtype=np.float64))}


def test_barrier_ships_large_arguments_as_a_broadcast_not_inside_the_task(spark, tmp_path, monkeypatch):
    import cloudpickle

    task_sizes = []
    frame_class = type(spark.range(1))
    map_in_arrow = frame_class.mapInArrow

    def measured(self, fn, *args, **kwargs):
        task_sizes.append(len(cloudpickle.dumps(fn)))
        return map_in_arrow(self, fn, *args, **kwargs)

    monkeypatch.setattr(frame_class, "mapInArrow", measured)
    array = np.random.default_rng(0).standard_normal(6_000_000).astype(np.float32)  # 24 MB
    result = tfos_lib.run(checksum, array, num_workers=1, output_dir=str(tmp_path), spark=spark)
    assert result == {"rank": 0, "shape": array.shape, "sum": float(array.sum(dtype=np.float64))}
    assert task_sizes and max(task_sizes) < 1 << 20  # Spark warns about tasks above 1 MiB


def test_barrier_worker_failure_reaches_driver_with_traceback(spark, tmp_path):
    with pytest.raises(tfos_lib.WorkerError) as caught:
        tfos_lib.run(fail_on_rank_one, num_workers=2, output_dir=str(tmp_path), spark=spark)
    assert caught.value.rank == 1
    assert "ValueError: boom on purpose in rank 1" in caught.value.worker_traceback
    assert "fail_on_rank_one" in caught.value.worker_traceback


def test_workers_that_cannot_reach_the_driver_fail_at_once_naming_port_and_setting(spark, tmp_path, monkeypatch):
    import socket

    from tfos_lib.monitor import Monitor

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    started = Monitor.__init__

    def unreachable(self, *args, **kwargs):  # the workers are told a port nothing listens on
        started(self, *args, **kwargs)
        self.address = f"{self.secret}@127.0.0.1:{port}"

    monkeypatch.setattr(Monitor, "__init__", unreachable)
    with pytest.raises(tfos_lib.WorkerError, match=rf"127.0.0.1:{port} .*spark.tfos.monitor.port") as caught:
        tfos_lib.run(fail_on_rank_one, num_workers=2, output_dir=str(tmp_path), spark=spark)
    assert caught.value.rank in (0, 1)


def test_an_input_with_fewer_rows_than_workers_fails_the_run_saying_so(spark, tmp_path, linear_regression):
    make_frame, train_linear = linear_regression
    with pytest.raises(tfos_lib.WorkerError, match="'train' has 1 rows, fewer than num_workers=2.*fewer workers"):
        tfos_lib.run(train_linear, 1, num_workers=2, inputs={"train": make_frame(spark, rows=1)},
                     output_dir=str(tmp_path), spark=spark)


def test_too_many_workers_is_refused_with_both_numbers(spark, linear_regression):
    _, train_linear = linear_regression
    with pytest.raises(RuntimeError, match=r"num_workers=3 .* only 2") as caught:
        tfos_lib.run(train_linear, 1, num_workers=3, spark=spark, timeouts=Timeouts(start=30))
    assert isinstance(caught.value, ValueError)  # a configuration error: jobs print one `error:` line, exit 1


def test_unknown_backend(spark, linear_regression):
    _, train_linear = linear_regression
    with pytest.raises(ValueError, match="barrier"):
        tfos_lib.run(train_linear, 1, backend="horovod")


def fit_with_frozen_weights(ctx):
    """ctx.fit of a model that cannot learn, on shards whose losses differ: what it logs; the step's collectives."""
    tf = ctx.tf()
    with ctx.strategy().scope():
        model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(1,), kernel_initializer="zeros")])
        model.compile(tf.keras.optimizers.SGD(0.0), "mse", metrics=["mae"])
    dataset = ctx.distributed_dataset("train", "x", "y", global_batch_size=8)

    class StepLogs(tf.keras.callbacks.Callback):
        seen = []

        def on_train_batch_end(self, batch, logs=None):
            StepLogs.seen.append({name: float(value) for name, value in logs.items()})

    history, _ = ctx.fit(model, dataset, epochs=2, steps_per_epoch=4, callbacks=[StepLogs()])

    def collectives_per_step():
        step = model.make_train_function(force=True).get_concrete_function(iter(dataset))
        return sum(node.op.startswith("Collective") for node in step.graph.as_graph_def().node)

    with ctx.fitting(model, steps_per_epoch=4):
        ours = collectives_per_step()
    model.distribute_reduction_method = "auto"
    return {"history": history, "step_logs": StepLogs.seen, "collectives": ours,
            "keras_default": collectives_per_step()}


def test_two_workers_log_global_epoch_metrics_with_no_metric_collectives_per_step(spark, tmp_path):
    from pyspark.sql import functions as F

    # One partition, dealt in turn: rank 0's rows have y = 1, rank 1's y = 3. The prediction stays 0.
    frame = spark.range(0, 64, 1, 1).select(
        F.array(F.lit(0.0).cast("float")).alias("x"), (1 + 2 * (F.col("id") % 2)).cast("float").alias("y"))
    result = tfos_lib.run(fit_with_frozen_weights, num_workers=2, inputs={"train": frame}, output_dir=str(tmp_path),
                          spark=spark)
    # Each epoch: the mean over both shards (squared: (1 + 9) / 2, absolute: (1 + 3) / 2), not the chief's own nor
    # a sum; each step: the chief's own (its shard's y = 1), read without a collective.
    assert result["history"] == {"loss": [5.0, 5.0], "mae": [2.0, 2.0]}
    assert result["step_logs"] == [{"loss": 1.0, "mae": 1.0}] * 8
    assert result["collectives"] < result["keras_default"], result

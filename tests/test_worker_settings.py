"""What a worker applies from its task and its job's options: threads, strategy, steps per call, streaming."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

import tfos_lib
from tfos_lib.context import WorkerContext
from tfos_lib.feed import ShardData, plan_input, spill
from tfos_lib.tfenv import task_env


def test_task_env_sizes_every_pool_to_the_task_cores(monkeypatch):
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    one = task_env(1)
    assert {k: one[k] for k in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")} == {
        "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    assert task_env(3)["TF_NUM_INTEROP_THREADS"] == "3"
    monkeypatch.setenv("OMP_NUM_THREADS", "5")  # what the user exported wins
    assert task_env(1)["OMP_NUM_THREADS"] == "5"


@dataclass
class StreamingOptions:
    steps_per_execution: int = 3
    shuffle_buffer: int = 7


def report_settings(ctx, options: StreamingOptions):
    from tfos_lib.tfenv import thread_settings

    tf = ctx.tf()
    return {
        "threads": thread_settings(tf),
        "strategy": type(ctx.strategy()).__name__,
        "steps_per_execution": ctx.steps_per_execution,
        "shuffle_buffer": ctx.data("train").shuffle_buffer,
        "pid": os.getpid(),
    }


def test_workers_use_their_share_of_the_cores_and_one_worker_no_collectives(spark, tmp_path, linear_regression):
    make_frame, _ = linear_regression
    assert spark.sparkContext.master == "local[2]"
    pair = tfos_lib.run(report_settings, StreamingOptions(), num_workers=2, inputs={"train": make_frame(spark)},
                        output_dir=str(tmp_path / "two"), spark=spark)
    # Two workers on local[2]: spark.task.cpus=1 each, one thread in each of TensorFlow's pools and OpenMP's.
    assert pair["threads"] == {"intra_op": 1, "inter_op": 1, "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"}
    assert pair["strategy"] == "CollectiveAllReduceStrategy"  # MultiWorkerMirroredStrategy's class
    result = tfos_lib.run(report_settings, StreamingOptions(), num_workers=1, inputs={"train": make_frame(spark)},
                          output_dir=str(tmp_path / "one"), spark=spark)
    assert result["pid"] != os.getpid()  # a worker process of its own
    # A lone worker in local mode has the process's 2 cores to itself while it trains.
    assert result["threads"] == {"intra_op": 2, "inter_op": 2, "OMP_NUM_THREADS": "2", "TF_NUM_INTRAOP_THREADS": "2"}
    # One worker: TensorFlow's default strategy, not a one-worker MultiWorkerMirroredStrategy.
    assert result["strategy"] == "_DefaultDistributionStrategy"
    assert (result["steps_per_execution"], result["shuffle_buffer"]) == (3, 7)  # from the job's config


class Recorder:
    """A stand-in for the driver's reporter: keeps what the worker sent."""

    def __init__(self):
        self.sent = []

    def send(self, kind, **fields):
        self.sent.append((kind, fields))

    def close(self):
        pass


def test_fit_runs_several_steps_per_call_and_still_counts_every_step(tmp_path):
    rows, batch, steps = 96, 8, 12
    plan = plan_input("train", ["x", "y"], rows, 1, sharded=True)
    import pyarrow as pa

    x = np.linspace(-1, 1, rows, dtype=np.float32)
    table = pa.RecordBatch.from_pydict({"_tfos_shard": [0] * rows, "_tfos_input": ["train"] * rows,
                                        "train": pa.StructArray.from_arrays([x, 3 * x], ["x", "y"])})
    spill(iter([table]), {"train": plan}, str(tmp_path))
    recorder = Recorder()
    ctx = WorkerContext(rank=0, num_workers=1, output_dir=str(tmp_path / "out"), backend="local",
                        num_cpus=os.cpu_count(), reporter=recorder, steps_per_execution=4,
                        inputs={"train": ShardData(plan, str(tmp_path / "train.arrow"), 1)})
    tf = ctx.tf()
    with ctx.strategy().scope():
        model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(1,))])
        model.compile(tf.keras.optimizers.SGD(0.1), "mse")
    dataset = ctx.distributed_dataset("train", "x", "y", global_batch_size=batch)
    history, _ = ctx.fit(model, dataset, epochs=2, steps_per_epoch=steps,
                         callbacks=ctx.callbacks(batch, checkpoint_every_steps=4, tensorboard=False))
    assert int(model._steps_per_execution.numpy()) == 4
    assert history["loss"][-1] < history["loss"][0]
    epochs = [fields for kind, fields in recorder.sent if kind == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    for epoch in epochs:  # examples/s counts all 12 steps of the epoch, not the 3 calls
        assert abs(epoch["examples_per_second"] * epoch["seconds"] - steps * batch) < 1e-6 * steps * batch
    beats = [fields["step"] for kind, fields in recorder.sent if kind == "heartbeat" and fields["step"]]
    assert beats and all(step % 4 == 0 for step in beats)  # batch hooks run once per call of 4 steps


def test_environment_key_changes_with_the_environment_and_the_installed_code(tmp_path, monkeypatch):
    from tfos_lib import process

    env = {"OMP_NUM_THREADS": "1"}
    key = process.environment_key(env)
    assert process.environment_key(dict(env)) == key
    assert process.environment_key({"OMP_NUM_THREADS": "2"}) != key  # the task's threads
    monkeypatch.setenv("TFOS_TEST_SETTING", "x")  # a variable exported in the worker's environment
    assert process.environment_key(env) != key
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    before = process.environment_key(env)
    (site / "newly_installed").mkdir()  # what pip install does to a directory on the path
    modified = os.stat(site).st_mtime_ns + 10**9  # a filesystem with a coarse clock still sees a change
    os.utime(site, ns=(modified, modified))
    assert process.environment_key(env) != before


def report_start(ctx):
    shard = ctx.data("train")
    return {"timeline": dict(ctx.timeline), "pid": os.getpid(), "rows": shard.num_rows,
            "y": sorted(shard.column("y").tolist())}


def test_a_second_run_starts_in_the_warm_spare_and_a_cold_run_ends_it(spark, tmp_path, linear_regression, caplog):
    from tfos_lib import feed

    make_frame, _ = linear_regression
    frame = make_frame(spark)

    def run(name, warm, data=frame):
        return tfos_lib.run(report_start, num_workers=2, inputs={"train": data}, output_dir=str(tmp_path / name),
                            spark=spark, warm_workers=warm)

    with caplog.at_level("INFO", logger="tfos_lib"):
        first, second = run("first", True), run("second", True)
    assert "spare_taken" not in first["timeline"]
    # The second run's chief took the spare its Spark Python worker kept: a process started (and importing
    # TensorFlow) when the first run ended, not the first run's own process.
    assert "spare_taken" in second["timeline"]
    assert second["pid"] != first["pid"]
    # ... and read the first run's staged shard (no counting, no shuffle): the same rows.
    assert caplog.text.count("reusing the staged inputs of the previous run") == 1
    assert second["rows"] == first["rows"] == 200 and second["y"] == first["y"]
    assert feed._kept["staged"].is_cached
    other = run("other", True, make_frame(spark, rows=300))  # other DataFrame: staged afresh
    assert other["rows"] == 150 and caplog.text.count("reusing the staged inputs") == 1
    kept = feed._kept["staged"]
    cold = run("cold", False)
    assert "spare_taken" not in cold["timeline"] and "spare_dropped" in cold["timeline"]  # memory given back
    assert not kept.is_cached and not feed._kept  # and the kept staging unpersisted


def test_metrics_made_global_once_per_epoch_fill_the_epoch_logs_and_say_when_an_epoch_ends_early(caplog):
    from tfos_lib.context import metrics_global_once_per_epoch

    tf = tfos_lib.import_tensorflow()
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(1,), kernel_initializer="zeros")])
    model.compile(tf.keras.optimizers.SGD(0.0), "mse", metrics=["mae"])
    x, y = np.zeros((8, 1), np.float32), np.full((8, 1), 2.0, np.float32)  # 4 steps of 2 rows, loss 4, MAE 2
    keras_step = model.train_step
    with metrics_global_once_per_epoch(tf, model, steps_per_epoch=4) as callback:
        assert model.train_step is not keras_step
        full = model.fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[callback])
    assert model.train_step == keras_step and "train_step" not in vars(model)  # its own step back
    assert full.history == {"loss": [4.0, 4.0], "mae": [2.0, 2.0]}
    assert "ended before" not in caplog.text
    with metrics_global_once_per_epoch(tf, model, steps_per_epoch=5) as callback:  # the data gives 4 steps
        model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[callback])
    assert "epoch 1 ended before its step 5: its logged metrics are this worker's own, not global" in caplog.text


def test_float16_all_reduce_sends_dense_gradients_as_float16_and_leaves_sparse_ones_alone():
    from tfos_lib.context import send_gradients_as_float16

    tf = tfos_lib.import_tensorflow()
    dense, table = tf.Variable([0.0, 0.0]), tf.Variable([[0.0], [0.0], [0.0]])
    optimizer = tf.keras.optimizers.SGD(learning_rate=1.0)
    send_gradients_as_float16(tf, optimizer)
    send_gradients_as_float16(tf, optimizer)  # once is enough: a second call changes nothing
    third = np.float32(1 / 3)
    sparse = tf.IndexedSlices(tf.constant([[third]]), tf.constant([1]), tf.constant([3, 1]))
    optimizer.apply_gradients([(tf.constant([third, 2.0]), dense), (sparse, table)])
    # The dense gradient went through float16 (1/3 rounds to 0.33325); the sparse row kept float32.
    np.testing.assert_array_equal(dense.numpy(), -np.array([np.float16(third), 2.0], np.float32))
    np.testing.assert_array_equal(table.numpy()[:, 0], [0.0, -third, 0.0])


def test_worker_addresses_from_either_kind_of_tf_config():
    import json

    from tfos_lib.context import cluster_addresses

    ours = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    # TensorFlowOnSpark's: a chief job (rank 0) and, with more than one node, workers (ranks 1..).
    tfos_one = {"cluster": {"chief": ["a:1"]}, "task": {"type": "chief", "index": 0}}
    tfos_two = {"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "worker", "index": 0}}
    assert cluster_addresses(json.dumps(ours)) == ("a:1", "b:2")
    assert cluster_addresses(json.dumps(tfos_one)) == ("a:1",)
    assert cluster_addresses(json.dumps(tfos_two)) == ("a:1", "b:2")
    assert cluster_addresses(None) == ()


def test_environment_key_of_tfos_lib_shipped_as_a_zip(monkeypatch):
    from tfos_lib import process

    # With --py-files, tfos_lib is imported from ./tfos_lib.zip/tfos_lib: no directory to walk.
    monkeypatch.setattr(process, "__file__", "/nonexistent/tfos_lib.zip/tfos_lib/process.py")
    assert len(process.environment_key({})) == 64


def test_a_script_is_not_a_notebook(monkeypatch):
    from tfos_lib.launcher import in_notebook

    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    assert not in_notebook()  # pytest, like spark-submit, is no Jupyter kernel (warm workers stay off)
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "15.4")
    assert in_notebook()


def test_local_mode_shares_the_drivers_cores_among_workers():
    from tfos_lib.backends.barrier import local_mode_cpus

    class Context:  # what local_mode_cpus reads of a SparkContext
        def __init__(self, master, task_cpus="1"):
            self.master, self.conf = master, {"spark.task.cpus": task_cpus}
            self.defaultParallelism = 200  # spark.default.parallelism is no core count

        def getConf(self):
            return self.conf

    cores = os.cpu_count()
    assert [local_mode_cpus(Context(m), 1) for m in ("local", "local[3]", "local[*]", "local[4,2]")] == [1, 3, cores, 4]
    assert local_mode_cpus(Context("local[4]"), 2) == 2 and local_mode_cpus(Context("local[4]"), 3) == 1
    assert local_mode_cpus(Context("local[4]", task_cpus="2"), 4) == 2  # never below spark.task.cpus
    for master in ("local-cluster[2,1,1024]", "spark://host:7077", "yarn", "k8s://https://api:443"):
        assert local_mode_cpus(Context(master), 1) is None  # executors keep their task's CPUs

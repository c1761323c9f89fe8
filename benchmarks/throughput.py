"""Training throughput of tfos_lib against plain tf-keras, measured in one run.

Compares, on the same synthetic MNIST-shaped data (uint8 images scaled to [0, 1],
10 classes) and the same models:

* plain single-process tf-keras, limited to 1 thread and with all threads, and two
  1-thread processes at once (their summed rate is what this machine's cores give
  two independent workers: the ceiling for the 2-vs-1-worker ratios);
* tfos_lib with 1 and 2 workers on ``local-cluster[N,1,2048]`` (one core per
  worker), for each backend (barrier, tfos);
* the same with 20 training steps per TensorFlow call (``--steps-per-execution``);
* streaming each worker's shard from its spilled file through a bounded shuffle
  buffer (``--shuffle-buffer``) against the whole shard in memory, on the default
  rows and on 10x as many, with the worker process's peak resident memory;
* the CNN's 2 workers with gradients exchanged as float16 (``--all-reduce-precision``),
  and 1 and 2 workers at 512 examples per worker and step (4x the compute per
  all-reduce);
* a second ``run()`` in the same application with ``warm_workers`` (a notebook's
  re-training), started 5 s after the first returned (the spare worker process imports
  TensorFlow in that time): its first step after the call;
* the time from submit (the Spark application's process start) and from the
  ``tfos_lib.run`` call to the chief's first finished step, and what it went to
  (the chief's start-up timeline: task start, shard spilled, workers met, TensorFlow
  imported, ``train_fn`` called, strategy ready, first step);
* each worker's thread settings;
* a step of each model on 1 and 2 workers taken apart (``step profile`` rows, in
  milliseconds per step, medians of timed repeats inside the chief): reading a
  batch, forward and backward pass, one all-reduce of gradient-sized tensors,
  Keras' whole training step as ``ctx.fit`` runs it (``ctx.fitting``), its logs read
  every call as ``fit``'s callbacks do, at 1 and at 20 steps per call.

Two models: the MLP 784-256-256-10 (batch 128) the TensorFlowOnSpark figures in
issue 3 were measured on (input-bound: small steps, so feeding and framework
overhead show), and chapter 12's CNN as ``jobs/mnist.py`` builds it
(compute-bound: the figure for 2-vs-1 worker scaling). Throughput is the median
of the epochs after the first (the first includes tracing and warm-up).

Run::

    python benchmarks/throughput.py                 # full run, about 10 minutes on 2 cores
    python benchmarks/throughput.py --quick         # small sizes, a smoke run

Prints a table and, last, one JSON line with the figures and ratios. Nothing is
asserted: timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tfos_lib  # noqa: E402  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from benchmarks import harness  # noqa: E402

MODELS = {"mlp": {"batch_size": 128}, "cnn": {"batch_size": 128}}
STREAM_BUFFER = 10_000  # rows in a streaming worker's shuffle buffer
WARM_PAUSE = 5  # seconds between the runs of a warm re-run: a person re-running a notebook cell takes longer


def make_arrays(rows: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, rows).astype(np.int32)
    # Class-dependent blobs so the models have something to learn.
    images = rng.integers(0, 64, (rows, 784)).astype(np.float32)
    images[np.arange(rows), labels * 78] = 255.0
    return images / 255.0, labels


def make_frame(spark, rows: int):
    """:func:`make_arrays` as a cached DataFrame (``image``: 784 floats, ``label``)."""
    import pyarrow as pa

    x, y = make_arrays(rows)
    table = pa.table({"image": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 784), "label": pa.array(y)})
    df = spark.createDataFrame(table).cache()
    df.count()
    return df


def epoch_timer(tf, batch_size: int, first_step: dict):
    class Timer(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rates = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started, self.steps = time.perf_counter(), 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps = batch + 1  # the last step of the call (several with steps_per_execution)
            first_step.setdefault("time", time.time())

        def on_epoch_end(self, epoch, logs=None):
            self.rates.append(self.steps * batch_size / (time.perf_counter() - self.started))

    return Timer()


def steady_rate(rates: list[float]) -> float:
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


# ---------------------------------------------------------------------------------------------
# One measurement per process (each needs its own TensorFlow threads or SparkContext).


def run_plain(model_name: str, rows: int, epochs: int, threads: int | None, start_at: float = 0) -> dict:
    tf = tfos_lib.import_tensorflow()
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    x, y = make_arrays(rows)
    batch = MODELS[model_name]["batch_size"]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(rows).batch(batch, drop_remainder=True).prefetch(2)
    model = harness.build_model(model_name)
    timer = epoch_timer(tf, batch, {})
    time.sleep(max(0.0, start_at - time.time()))  # processes measured together start training together
    model.fit(ds, epochs=epochs, callbacks=[timer], verbose=0)
    return {"examples_per_second": steady_rate(timer.rates)}


def train_fn(ctx, model_name: str, epochs: int, steps_per_execution: int, shuffle_buffer: int, precision: str,
             per_worker_batch: int):
    import resource

    from tfos_lib.tfenv import thread_settings

    tf = ctx.tf()
    ctx.steps_per_execution, ctx.all_reduce_precision = steps_per_execution, precision
    batch = per_worker_batch * ctx.num_workers
    timeline = dict(ctx.timeline)
    with ctx.strategy().scope():
        model = harness.build_model(model_name)
    timeline["strategy_ready"] = time.time()
    timer = epoch_timer(tf, batch, first_step := {})
    dataset = ctx.distributed_dataset("train", "image", "label", global_batch_size=batch, shuffle_buffer=shuffle_buffer)
    ctx.fit(model, dataset, epochs=epochs, steps_per_epoch=ctx.data("train").steps_per_epoch(batch), callbacks=[timer])
    timeline["first_step"] = first_step["time"]
    return {
        "examples_per_second": steady_rate(timer.rates),
        "timeline": timeline,
        "threads": thread_settings(tf),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def profile_fn(ctx, model_name: str, repeats: int) -> dict:
    """Milliseconds per step of each part of a training step, on this worker (the chief's is returned)."""
    tf = ctx.tf()
    strategy = ctx.strategy()
    batch = MODELS[model_name]["batch_size"] * ctx.num_workers
    with strategy.scope():
        model = harness.build_model(model_name)
    batches = iter(ctx.distributed_dataset("train", "image", "label", global_batch_size=batch))
    images, labels = next(batches)
    variables = model.trainable_variables

    def settle(per_replica):  # waits for a step's result without copying tensors off the device
        return [float(t.numpy()) for t in strategy.experimental_local_results(per_replica)]

    @tf.function
    def forward_backward(x, y):
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = model.compiled_loss(y, model(x, training=True), regularization_losses=model.losses)
            return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(loss, variables)])
        return strategy.run(step, args=(x, y))

    @tf.function
    def all_reduce():
        def step():
            summed = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, [tf.ones_like(v) for v in variables])
            return tf.add_n([tf.reduce_sum(t) for t in summed])
        return strategy.run(step)

    def median_ms(fn, calls: int = 1) -> float:
        fn()  # traces
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            times.append((time.perf_counter() - started) * 1000 / calls)
        return round(statistics.median(times), 2)

    def keras_step_ms(steps: int) -> float:
        """Per step of Keras' training function as ctx.fit runs it, at ``steps`` per call."""
        ctx.steps_per_execution = steps
        with ctx.fitting(model, steps_per_epoch=repeats * steps):
            function = model.make_train_function()
            # The logs are read, as fit's callbacks do.
            return median_ms(lambda: tf.nest.map_structure(lambda t: t.numpy(), function(batches)), calls=steps)

    return {
        "input": median_ms(lambda: next(batches)),
        "forward_backward": median_ms(lambda: settle(forward_backward(images, labels))),
        "all_reduce": median_ms(lambda: settle(all_reduce())) if ctx.num_workers > 1 else 0.0,
        "gradient_megabytes": round(sum(v.shape.num_elements() for v in variables) * 4 / 2**20, 2),
        "train_step": keras_step_ms(1),
        "train_step_at_20_per_call": keras_step_ms(20),
    }


def run_profile(model_name: str, rows: int, workers: int, repeats: int = 20) -> dict:
    spark = harness.local_cluster_session(workers)
    df = make_frame(spark, rows)
    result = tfos_lib.run(profile_fn, model_name, repeats, num_workers=workers, inputs={"train": df}, spark=spark)
    spark.stop()
    return {"profile_ms": result}


def run_launcher(model_name: str, rows: int, epochs: int, workers: int, backend: str, process_start: float,
                 steps_per_execution: int = 1, shuffle_buffer: int = 0, repeat_rows: int = 1,
                 warm_rerun: bool = False, precision: str = "float32", per_worker_batch: int = 0) -> dict:
    spark = harness.local_cluster_session(workers)
    df = make_frame(spark, rows)
    if repeat_rows > 1:  # more rows than the driver should hold: the same rows, repeated by Spark
        df = df.crossJoin(spark.range(repeat_rows).withColumnRenamed("id", "copy")).drop("copy")
    for run in range(2 if warm_rerun else 1):  # warm_rerun: the figures are the second run's, in the same application
        if run:
            time.sleep(WARM_PAUSE)
        called = time.time()
        result = tfos_lib.run(train_fn, model_name, epochs, steps_per_execution, shuffle_buffer, precision,
                              per_worker_batch or MODELS[model_name]["batch_size"],
                              num_workers=workers,
                              backend=backend, inputs={"train": df}, spark=spark, warm_workers=warm_rerun)
    spark.stop()
    return {
        "examples_per_second": result["examples_per_second"],
        "first_step_from_submit": result["timeline"]["first_step"] - process_start,
        "first_step_from_run": result["timeline"]["first_step"] - called,
        "startup": {name: round(t - called, 2) for name, t in result["timeline"].items()},
        "threads": result["threads"],
        "peak_rss_mb": round(result["peak_rss_mb"]),
    }


# ---------------------------------------------------------------------------------------------
# Orchestration.


def main() -> None:
    args = harness.parse_args(__doc__.split("\n\n")[0])
    if args.one:
        harness.run_one(args.one, {"plain": run_plain, "launcher": run_launcher, "profile": run_profile})
        return

    sizes = {"mlp": (6000, 2), "cnn": (1024, 2)} if args.quick else {"mlp": (60000, 3), "cnn": (6000, 3)}
    figures = {}
    plan = []
    for model_name, (rows, epochs) in sizes.items():
        common = {"model_name": model_name, "rows": rows, "epochs": epochs}
        plan += [
            (f"{model_name} plain 1 thread", "plain", {**common, "threads": 1}),
            (f"{model_name} plain all threads", "plain", {**common, "threads": None}),
            (f"{model_name} plain 1 thread x2 at once", "plain x2", {**common, "threads": 1}),
            (f"{model_name} barrier 1 worker", "launcher", {**common, "workers": 1, "backend": "barrier"}),
            (f"{model_name} barrier 2 workers", "launcher", {**common, "workers": 2, "backend": "barrier"}),
            *[(f"{model_name} step profile, {n} worker{'s' * (n > 1)}", "profile",
               {"model_name": model_name, "rows": rows, "workers": n}) for n in (1, 2)],
        ]
        if model_name == "cnn":
            plan.append((f"{model_name} barrier 2 workers, float16 all-reduce", "launcher",
                         {**common, "workers": 2, "backend": "barrier", "precision": "float16"}))
            plan += [(f"{model_name} barrier {n} worker{'s' * (n > 1)}, 512 per worker", "launcher",
                      {**common, "rows": 4 * rows, "workers": n, "backend": "barrier", "per_worker_batch": 512})
                     for n in (1, 2)]
        if model_name == "mlp":
            big = {**common, "epochs": 2, "workers": 1, "backend": "barrier", "repeat_rows": 10}
            plan += [
                (f"{model_name} barrier 1 worker, 20 steps/call", "launcher",
                 {**common, "workers": 1, "backend": "barrier", "steps_per_execution": 20}),
                (f"{model_name} barrier 2 workers, 20 steps/call", "launcher",
                 {**common, "workers": 2, "backend": "barrier", "steps_per_execution": 20}),
                (f"{model_name} barrier 1 worker, second run() warm", "launcher",
                 {**common, "workers": 1, "backend": "barrier", "warm_rerun": True}),
                (f"{model_name} barrier 2 workers, second run() warm", "launcher",
                 {**common, "workers": 2, "backend": "barrier", "warm_rerun": True}),
                (f"{model_name} tfos 1 worker", "launcher", {**common, "workers": 1, "backend": "tfos"}),
                (f"{model_name} tfos 2 workers", "launcher", {**common, "workers": 2, "backend": "tfos"}),
                (f"{model_name} 1 worker streamed", "launcher",
                 {**common, "workers": 1, "backend": "barrier", "shuffle_buffer": STREAM_BUFFER}),
                (f"{model_name} 1 worker 10x rows in memory", "launcher", big),
                (f"{model_name} 1 worker 10x rows streamed", "launcher", {**big, "shuffle_buffer": STREAM_BUFFER}),
            ]
    machine = harness.machine()
    print(f"machine: {machine['cores']} cores, load average {machine['load_average']} at start", flush=True)
    for label, kind, params in harness.selected(plan, args.only):
        if kind == "launcher":  # the "submit" that the first step's time is measured from
            params = {**params, "process_start": time.time()}
        if kind == "plain x2":  # two independent processes: the machine's own ceiling for 2 workers
            each = harness.measure_together(__file__, "plain", 2, **params, start_at=time.time() + 30)
            errors = [r["error"] for r in each if "error" in r]
            result = {"error": errors[0]} if errors else {
                "examples_per_second": sum(r["examples_per_second"] for r in each)}
        else:
            result = harness.measure(__file__, kind, **params)
        figures[label] = result
        print(f"{label:36s} {describe(result)}", flush=True)

    def rate(label):
        return figures.get(label, {}).get("examples_per_second")

    def ratio(a, b):
        return round(rate(a) / rate(b), 3) if rate(a) and rate(b) else None

    def rss(label):
        return figures.get(label, {}).get("peak_rss_mb")

    ratios = {
        "mlp_barrier_1w_vs_plain_1thread": ratio("mlp barrier 1 worker", "mlp plain 1 thread"),
        "mlp_barrier_2w_vs_1w": ratio("mlp barrier 2 workers", "mlp barrier 1 worker"),
        "mlp_20_steps_per_call_1w_vs_plain_1thread": ratio("mlp barrier 1 worker, 20 steps/call", "mlp plain 1 thread"),
        "mlp_20_steps_per_call_2w_vs_1w": ratio("mlp barrier 2 workers, 20 steps/call",
                                                 "mlp barrier 1 worker, 20 steps/call"),
        "mlp_tfos_1w_vs_plain_1thread": ratio("mlp tfos 1 worker", "mlp plain 1 thread"),
        "mlp_tfos_2w_vs_1w": ratio("mlp tfos 2 workers", "mlp tfos 1 worker"),
        "mlp_barrier_vs_tfos_2w": ratio("mlp barrier 2 workers", "mlp tfos 2 workers"),
        "mlp_streamed_vs_in_memory": ratio("mlp 1 worker streamed", "mlp barrier 1 worker"),
        "mlp_10x_streamed_vs_in_memory": ratio("mlp 1 worker 10x rows streamed", "mlp 1 worker 10x rows in memory"),
        "mlp_peak_rss_10x_vs_1x_streamed": round(rss("mlp 1 worker 10x rows streamed") / rss("mlp 1 worker streamed"), 2)
        if rss("mlp 1 worker 10x rows streamed") and rss("mlp 1 worker streamed") else None,
        "mlp_peak_rss_10x_vs_1x_in_memory": round(rss("mlp 1 worker 10x rows in memory") / rss("mlp barrier 1 worker"), 2)
        if rss("mlp 1 worker 10x rows in memory") and rss("mlp barrier 1 worker") else None,
        "cnn_barrier_1w_vs_plain_1thread": ratio("cnn barrier 1 worker", "cnn plain 1 thread"),
        "cnn_barrier_2w_vs_1w": ratio("cnn barrier 2 workers", "cnn barrier 1 worker"),
        "cnn_barrier_2w_vs_plain_all_threads": ratio("cnn barrier 2 workers", "cnn plain all threads"),
        # What two cores give two independent 1-thread processes: the ceiling for the 2-vs-1 ratios above.
        "cnn_machine_2_processes_vs_1": ratio("cnn plain 1 thread x2 at once", "cnn plain 1 thread"),
        "cnn_barrier_2w_vs_machine_2_processes": ratio("cnn barrier 2 workers", "cnn plain 1 thread x2 at once"),
        "mlp_machine_2_processes_vs_1": ratio("mlp plain 1 thread x2 at once", "mlp plain 1 thread"),
        "cnn_float16_all_reduce_2w_vs_1w": ratio("cnn barrier 2 workers, float16 all-reduce", "cnn barrier 1 worker"),
        "cnn_512_per_worker_2w_vs_1w": ratio("cnn barrier 2 workers, 512 per worker",
                                             "cnn barrier 1 worker, 512 per worker"),
    }
    print("\nstart-up of the chief, seconds after run() (barrier, 2 workers):")
    for label in ("mlp barrier 1 worker", "mlp barrier 2 workers", "mlp barrier 2 workers, second run() warm",
                  "cnn barrier 2 workers"):
        print(f"  {label}: " + ", ".join(f"{k} {v}" for k, v in figures.get(label, {}).get("startup", {}).items()))
    print()
    for name, value in ratios.items():
        print(f"{name:44s} {value}")
    print(json.dumps({"machine": machine, "sizes": sizes, "figures": figures, "ratios": ratios}))


def describe(result: dict) -> str:
    if "error" in result:
        return f"FAILED {result['error']}"
    if "profile_ms" in result:
        return "ms per step: " + ", ".join(f"{k} {v}" for k, v in result["profile_ms"].items())
    text = f"{result['examples_per_second']:10,.0f} examples/s"
    if "first_step_from_submit" in result:
        threads = result["threads"]
        text += (f"   first step {result['first_step_from_submit']:5.1f} s after submit"
                 f" ({result['first_step_from_run']:4.1f} s after run())   peak RSS {result['peak_rss_mb']:5,} MB"
                 f"   threads intra {threads['intra_op']} inter {threads['inter_op']} OMP {threads['OMP_NUM_THREADS']}")
    return text


if __name__ == "__main__":
    main()

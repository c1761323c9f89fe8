"""Training throughput of tfos_lib against plain tf-keras, measured in one run.

Compares, on the same synthetic MNIST-shaped data (uint8 images scaled to [0, 1],
10 classes) and the same models:

* plain single-process tf-keras, limited to 1 thread and with all threads;
* tfos_lib with 1 and 2 workers on ``local-cluster[N,1,2048]`` (one core per
  worker), for each backend (barrier, tfos);
* the time from submit (the Spark application's process start) and from the
  ``tfos_lib.run`` call to the chief's first finished step.

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


def make_arrays(rows: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, rows).astype(np.int32)
    # Class-dependent blobs so the models have something to learn.
    images = rng.integers(0, 64, (rows, 784)).astype(np.float32)
    images[np.arange(rows), labels * 78] = 255.0
    return images / 255.0, labels


def epoch_timer(tf, batch_size: int, first_step: dict):
    class Timer(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rates = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started, self.steps = time.perf_counter(), 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            first_step.setdefault("time", time.time())

        def on_epoch_end(self, epoch, logs=None):
            self.rates.append(self.steps * batch_size / (time.perf_counter() - self.started))

    return Timer()


def steady_rate(rates: list[float]) -> float:
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


# ---------------------------------------------------------------------------------------------
# One measurement per process (each needs its own TensorFlow threads or SparkContext).


def run_plain(model_name: str, rows: int, epochs: int, threads: int | None) -> dict:
    tf = tfos_lib.import_tensorflow()
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    x, y = make_arrays(rows)
    batch = MODELS[model_name]["batch_size"]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(rows).batch(batch, drop_remainder=True).prefetch(2)
    model = harness.build_model(model_name)
    timer = epoch_timer(tf, batch, {})
    model.fit(ds, epochs=epochs, callbacks=[timer], verbose=0)
    return {"examples_per_second": steady_rate(timer.rates)}


def train_fn(ctx, model_name: str, epochs: int):
    tf = ctx.tf()
    batch = MODELS[model_name]["batch_size"] * ctx.num_workers
    first_step: dict = {}
    with ctx.strategy().scope():
        model = harness.build_model(model_name)
    timer = epoch_timer(tf, batch, first_step)
    model.fit(
        ctx.distributed_dataset("train", "image", "label", global_batch_size=batch),
        steps_per_epoch=ctx.data("train").steps_per_epoch(batch),
        epochs=epochs,
        callbacks=[timer],
        verbose=0,
    )
    return {"examples_per_second": steady_rate(timer.rates), "first_step_time": first_step["time"]}


def run_launcher(model_name: str, rows: int, epochs: int, workers: int, backend: str, process_start: float) -> dict:
    import pyarrow as pa

    spark = harness.local_cluster_session(workers)
    x, y = make_arrays(rows)
    table = pa.table(
        {"image": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 784), "label": pa.array(y)}
    )
    df = spark.createDataFrame(table).cache()
    df.count()
    called = time.time()
    result = tfos_lib.run(train_fn, model_name, epochs, num_workers=workers, backend=backend, inputs={"train": df}, spark=spark)
    spark.stop()
    return {
        "examples_per_second": result["examples_per_second"],
        "first_step_from_submit": result["first_step_time"] - process_start,
        "first_step_from_run": result["first_step_time"] - called,
    }


# ---------------------------------------------------------------------------------------------
# Orchestration.


def main() -> None:
    args = harness.parse_args(__doc__.split("\n\n")[0])
    if args.one:
        harness.run_one(args.one, {"plain": run_plain, "launcher": run_launcher})
        return

    sizes = {"mlp": (6000, 2), "cnn": (1024, 2)} if args.quick else {"mlp": (60000, 3), "cnn": (6000, 3)}
    rows_out, figures = [], {}
    plan = []
    for model_name, (rows, epochs) in sizes.items():
        common = {"model_name": model_name, "rows": rows, "epochs": epochs}
        plan += [
            (f"{model_name} plain 1 thread", "plain", {**common, "threads": 1}),
            (f"{model_name} plain all threads", "plain", {**common, "threads": None}),
            (f"{model_name} barrier 1 worker", "launcher", {**common, "workers": 1, "backend": "barrier"}),
            (f"{model_name} barrier 2 workers", "launcher", {**common, "workers": 2, "backend": "barrier"}),
        ]
        if model_name == "mlp":
            plan += [
                (f"{model_name} tfos 1 worker", "launcher", {**common, "workers": 1, "backend": "tfos"}),
                (f"{model_name} tfos 2 workers", "launcher", {**common, "workers": 2, "backend": "tfos"}),
            ]
    for label, kind, params in plan:
        if kind == "launcher":  # the "submit" that the first step's time is measured from
            params = {**params, "process_start": time.time()}
        result = harness.measure(__file__, kind, **params)
        figures[label] = result
        rows_out.append((label, result))
        print(f"{label:30s} " + (
            f"{result['examples_per_second']:10,.0f} examples/s"
            + (f"   first step {result['first_step_from_submit']:5.1f} s after submit"
               f" ({result['first_step_from_run']:4.1f} s after run())" if "first_step_from_submit" in result else "")
            if "error" not in result else f"FAILED {result['error']}"
        ), flush=True)

    def rate(label):
        return figures.get(label, {}).get("examples_per_second")

    def ratio(a, b):
        return round(rate(a) / rate(b), 3) if rate(a) and rate(b) else None

    ratios = {
        "mlp_barrier_1w_vs_plain_1thread": ratio("mlp barrier 1 worker", "mlp plain 1 thread"),
        "mlp_barrier_2w_vs_1w": ratio("mlp barrier 2 workers", "mlp barrier 1 worker"),
        "mlp_tfos_1w_vs_plain_1thread": ratio("mlp tfos 1 worker", "mlp plain 1 thread"),
        "mlp_tfos_2w_vs_1w": ratio("mlp tfos 2 workers", "mlp tfos 1 worker"),
        "mlp_barrier_vs_tfos_2w": ratio("mlp barrier 2 workers", "mlp tfos 2 workers"),
        "cnn_barrier_1w_vs_plain_1thread": ratio("cnn barrier 1 worker", "cnn plain 1 thread"),
        "cnn_barrier_2w_vs_1w": ratio("cnn barrier 2 workers", "cnn barrier 1 worker"),
    }
    print()
    for name, value in ratios.items():
        print(f"{name:36s} {value}")
    print(json.dumps({"sizes": sizes, "figures": figures, "ratios": ratios}))


if __name__ == "__main__":
    main()

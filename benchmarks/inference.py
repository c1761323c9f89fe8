"""Inference throughput of tfos_lib's DataFrame path against plain ``model.predict``, measured in one run.

The same saved model scores the same rows (synthetic MNIST-shaped images, 784
floats each) in:

* plain single-process tf-keras ``model.predict`` on a numpy array, limited to 1
  thread (the per-core baseline) and with all threads;
* ``tfos_lib.ml.inference.predict`` (a ``mapInArrow`` over Arrow batches) over a cached
  DataFrame on ``local-cluster[N,1,2048]``, N = 1 and 2 executors of one core.
  "warm" passes reuse the model already loaded in every Python worker; "cold"
  (the first pass) includes starting the Python workers, importing TensorFlow
  and loading the model.

The same DataFrame path on 1 executor also scores the model's TF Serving export
(``tfos_lib.export.saved_model``, read through its ``serving_default`` signature) and
its full-integer int8 ``.tflite`` (``tfos_lib.export.tflite``, LiteRT, one interpreter
per Python worker), so the ratios compare LiteRT int8 vs SavedModel vs plain
``model.predict`` per core, in the same run.

Each figure is the fastest of 3 passes (on a shared machine the fastest pass is
the least disturbed one).

Two models, ``jobs/mnist.py``'s own: chapter 12's CNN (compute-bound, the figure that matters) and
chapter 1's softmax regression (so cheap that the numbers show the per-row cost
of moving rows between the JVM and Python).

Run::

    python benchmarks/inference.py                  # about 5 minutes on 2 cores
    python benchmarks/inference.py --quick          # small sizes, a smoke run

Prints a table and, last, one JSON line with the figures and the ratios
(DataFrame rows/s per executor core / plain rows/s on 1 thread). Nothing is
asserted: timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tfos_lib  # noqa: E402  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from benchmarks import harness  # noqa: E402

BATCH_SIZE = 256
PASSES = 3


def make_images(rows: int, seed: int = 0):
    import numpy as np

    return np.random.default_rng(seed).random((rows, 784), dtype=np.float32)


def save_model(name: str, path: str) -> dict:
    from tfos_lib.export import saved_model, tflite

    tf = tfos_lib.import_tensorflow()
    tf.keras.utils.set_random_seed(0)
    model = harness.build_model(name)
    model.save(path, save_format="tf")
    saved_model.export_saved_model(model, path + "_serving", name, version=1)
    tflite.convert(model, path + "_int8.tflite", quantization="int8", representative_data=make_images(200, seed=1))
    return {}


def best_rate(rows: int, run) -> float:
    """Rows/s of the fastest of PASSES runs: on a shared machine the fastest is the least disturbed."""
    seconds = []
    for _ in range(PASSES):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return rows / min(seconds)


def run_plain(model_path: str, rows: int, threads: int | None) -> dict:
    from tfos_lib.tfenv import configure_threads

    tf = tfos_lib.import_tensorflow()
    # The same thread pools a one-core Spark task gets (tfos_lib.ml.inference sizes them alike).
    configure_threads(tf, threads)
    model = tf.keras.models.load_model(model_path, compile=False)
    x = make_images(rows)
    model.predict(x[: BATCH_SIZE * 4], batch_size=BATCH_SIZE, verbose=0)  # tracing, thread pools
    return {"rows_per_second": best_rate(rows, lambda: model.predict(x, batch_size=BATCH_SIZE, verbose=0))}


def run_dataframe(model_path: str, rows: int, executors: int) -> dict:
    import pyarrow as pa

    from tfos_lib.ml import inference

    spark = harness.local_cluster_session(executors)
    x = make_images(rows)
    table = pa.table({"image": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 784)})
    # One partition per core, cached in the executors: the timing is scoring, not reading.
    df = spark.createDataFrame(table).repartition(executors).cache()
    df.count()
    scored = inference.predict(df, model_path, ["image"], output_col="scores", batch_size=BATCH_SIZE)

    def score_all():
        # The "noop" sink computes every row and writes nothing; no shuffle, so a
        # later pass cannot reuse an earlier one's shuffle files and skip the work.
        scored.write.format("noop").mode("overwrite").save()

    started = time.perf_counter()
    score_all()
    cold = time.perf_counter() - started
    # The same UDF again: every Python worker has the model cached.
    warm = best_rate(rows, score_all)
    spark.stop()
    return {"rows_per_second": warm, "cold_rows_per_second": rows / cold, "cold_seconds": cold}


# ---------------------------------------------------------------------------------------------
# Orchestration.


def main() -> None:
    args = harness.parse_args(__doc__.split("\n\n")[0])
    if args.one:
        harness.run_one(args.one, {"save": save_model, "plain": run_plain, "dataframe": run_dataframe})
        return

    sizes = {"cnn": 2000, "logreg": 20000} if args.quick else {"cnn": 20000, "logreg": 200000}
    workdir = tempfile.mkdtemp(prefix="tfos-inference-bench-")
    figures: dict = {}
    for model_name, rows in sizes.items():
        model_path = os.path.join(workdir, model_name)
        saved = harness.measure(__file__, "save", name=model_name, path=model_path)
        if "error" in saved:
            print(f"{model_name}: could not save the model: {saved['error']}")
            continue
        plan = [
            ("plain 1 thread", "plain", {"threads": 1}),
            ("plain all threads", "plain", {"threads": None}),
            ("dataframe 1 executor", "dataframe", {"executors": 1}),
            ("dataframe 2 executors", "dataframe", {"executors": 2}),
            # The export's model directory, <base>/<name> (its latest version is served).
            ("dataframe 1 executor savedmodel", "dataframe",
             {"executors": 1, "model_path": os.path.join(model_path + "_serving", model_name)}),
            ("dataframe 1 executor litert int8", "dataframe",
             {"executors": 1, "model_path": model_path + "_int8.tflite"}),
        ]
        for label, kind, params in harness.selected([(f"{model_name} {row[0]}", *row[1:]) for row in plan], args.only):
            result = harness.measure(__file__, kind, **{"model_path": model_path, "rows": rows, **params})
            figures[label] = result
            if "error" in result:
                line = f"FAILED {result['error']}"
            else:
                line = f"{result['rows_per_second']:10,.0f} rows/s"
                if "cold_seconds" in result:
                    line += f"   cold (workers start, model loads): {result['cold_rows_per_second']:8,.0f} rows/s"
            print(f"{label:32s} {line}", flush=True)

    def rate(label):
        return figures.get(label, {}).get("rows_per_second")

    def per_core_ratio(model_name, executors):
        frame, plain = (
            rate(f"{model_name} dataframe {executors} executor{'s' if executors > 1 else ''}"),
            rate(f"{model_name} plain 1 thread"),
        )
        return round(frame / executors / plain, 3) if frame and plain else None

    ratios = {}
    for model_name in sizes:
        ratios[f"{model_name}_dataframe_1x_per_core_vs_plain_1thread"] = per_core_ratio(model_name, 1)
        ratios[f"{model_name}_dataframe_2x_per_core_vs_plain_1thread"] = per_core_ratio(model_name, 2)
        two, all_threads = rate(f"{model_name} dataframe 2 executors"), rate(f"{model_name} plain all threads")
        ratios[f"{model_name}_dataframe_2x_vs_plain_all_threads"] = (
            round(two / all_threads, 3) if two and all_threads else None
        )
        keras, serving = rate(f"{model_name} dataframe 1 executor"), rate(f"{model_name} dataframe 1 executor savedmodel")
        litert, plain = rate(f"{model_name} dataframe 1 executor litert int8"), rate(f"{model_name} plain 1 thread")
        for name, value, base in (("litert_int8_vs_savedmodel", litert, serving), ("litert_int8_vs_plain_1thread",
                                  litert, plain), ("savedmodel_vs_plain_1thread", serving, plain),
                                  ("savedmodel_vs_keras_dataframe", serving, keras)):
            ratios[f"{model_name}_{name}"] = round(value / base, 3) if value and base else None
    print()
    for name, value in ratios.items():
        print(f"{name:46s} {value}")
    print(json.dumps({"rows": sizes, "batch_size": BATCH_SIZE, "figures": figures, "ratios": ratios}))


if __name__ == "__main__":
    main()

"""What the benchmarks share: one measurement per fresh Python process, a local-cluster session, the models.

Each benchmark script runs itself again with ``--one '<json spec>'`` for every
measurement (:func:`measure`), so each gets its own TensorFlow thread pools and
SparkContext; the child prints one ``RESULT {...}`` line (:func:`run_one`).
The chapter models are ``jobs/mnist.py``'s own, so a benchmark measures what the
job trains; executors import them (and this module) from this checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(description: str) -> argparse.Namespace:
    """``--quick`` (small sizes, a smoke run), ``--only`` (a subset of rows) and the hidden ``--one`` of a child."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--only", metavar="TEXT", action="append",
                        help="measure only the rows whose label contains TEXT (repeatable; ratios need both rows)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    return parser.parse_args()


def selected(plan: list, only: list[str] | None) -> list:
    """The rows of ``plan`` (label first) whose label contains one of ``only``; all rows without it."""
    return [row for row in plan if not only or any(text in row[0] for text in only)]


def measure(script: str, kind: str, **params) -> dict:
    """Runs one measurement in a fresh Python process (its own TensorFlow and Spark) and returns its JSON result.

    A failed measurement is ``{"error": "exit N: <last lines of its stderr>"}``, so the
    other measurements still run and print.
    """
    return measure_together(script, kind, 1, **params)[0]


def measure_together(script: str, kind: str, copies: int, **params) -> list[dict]:
    """:func:`measure` in ``copies`` processes started at once: what the machine gives each when they compete.

    Independent processes share nothing but the hardware, so their summed rate is
    the most N workers on this machine could reach (the ceiling for N-worker scaling).
    """
    command = [sys.executable, script, "--one", json.dumps({"kind": kind, **params})]
    running = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(copies)]
    return [_result(process) for process in running]


def _result(process: subprocess.Popen) -> dict:
    stdout, stderr = process.communicate()
    returncode = process.returncode
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if returncode or not lines:
        # The Python error, not the JVM's stack frames that Spark logs while it shuts down.
        lines = [line for line in stderr.splitlines() if not line.lstrip().startswith("at ")]
        start = max((i for i, line in enumerate(lines) if line.startswith("Traceback")), default=len(lines) - 15)
        tail = "\n".join(lines[start:][:40])
        return {"error": f"exit {returncode}: {tail}"}
    return json.loads(lines[-1][len("RESULT ") :])


def run_one(one: str, runners: dict) -> None:
    """The child side of :func:`measure`: runs ``runners[spec["kind"]](**rest of spec)`` and prints its result."""
    spec = json.loads(one)
    result = runners[spec.pop("kind")](**spec)
    print("RESULT " + json.dumps(result), flush=True)


def machine() -> dict:
    """Cores and load average now: how quiet the machine was when a benchmark started."""
    return {"cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def local_cluster_session(executors: int):
    """A SparkSession on ``local-cluster[executors,1,2048]``: one core per executor, quiet, no UI."""
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master(f"local-cluster[{executors},1,2048]")
        .config("spark.executor.memory", "1536m")
        .config("spark.executorEnv.TF_USE_LEGACY_KERAS", "1")
        # tfos_lib refuses Spark's own task retries off local[N]: it restarts from checkpoints itself.
        .config("spark.task.maxFailures", "1")
        # Executors import tfos_lib, jobs/ and benchmarks/ from this checkout, whatever is installed.
        .config("spark.executorEnv.PYTHONPATH", REPO)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def build_model(name: str):
    """A compiled model on 784 pixels in [0, 1], 10 classes out (softmax).

    ``mlp``: 784-256-256-10 (ReLU), Adam 1e-3, the model TensorFlowOnSpark's figures were
    measured on. ``cnn`` (chapter 12) and ``logreg`` (chapter 1): ``jobs/mnist.py``'s
    models with that job's default optimizers.
    """
    if name != "mlp":
        from jobs import mnist

        return mnist.build_model(mnist.Config(model=name))
    from tfos_lib import import_tensorflow

    tf = import_tensorflow()
    layers = tf.keras.layers
    model = tf.keras.Sequential([
        layers.InputLayer(input_shape=(784,)),
        layers.Dense(256, activation="relu"),
        layers.Dense(256, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(tf.keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model

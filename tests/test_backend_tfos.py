"""The `tfos` backend (real TensorFlowOnSpark) with two executors on local-cluster.

TFoS needs executors in separate JVMs, and a process can hold only one
SparkContext, so this runs in its own Python process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import tensorflowonspark  # noqa: F401  (a broken install must fail here, not skip: it is in the test extra)

TESTS = os.path.dirname(os.path.abspath(__file__))

SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
import tfos_lib
from pyspark.sql import SparkSession
from conftest import regression_frame, train_linear

spark = (SparkSession.builder.master("local-cluster[2,1,1024]")
         .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
         .config("spark.task.maxFailures", "1")
         .config("spark.executorEnv.TF_USE_LEGACY_KERAS", "1").getOrCreate())
try:
    result = tfos_lib.run(train_linear, 4, num_workers=2, backend="tfos", spark=spark,
                          inputs={{"train": regression_frame(spark, rows=401)}}, output_dir={out!r})
    print("RESULT " + json.dumps(result), flush=True)
finally:
    spark.stop()
"""


def test_tfos_two_workers_train_together(tmp_path):
    script = SCRIPT.format(tests=TESTS, out=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, f"exit {run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    result = json.loads(lines[0][len("RESULT ") :])
    assert result["world"] == 2 and result["rows"] == 200
    assert result["loss"][-1] < 0.5 * result["loss"][0]
    chief = np.load(tmp_path / "weights-0.npy")
    other = np.load(tmp_path / "_workers" / "1" / "weights-1.npy")
    np.testing.assert_allclose(chief, other, rtol=0, atol=1e-6)

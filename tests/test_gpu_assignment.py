"""GPUs through Spark's resource scheduling, on a CPU-only machine with a fake discovery script.

local-cluster[1,2,1024]: one executor with 2 cores and the 2 "GPUs" the fake script
reports; 2 workers each request 1 GPU, so Spark must give them different ones, and
each TensorFlow worker must see exactly its own (CUDA_VISIBLE_DEVICES), with
memory growth on. Runs in its own process (its own SparkContext).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))

SCRIPT = """
import json, os, sys
import tfos_lib
from pyspark.sql import SparkSession

def report_devices(ctx):
    tf = ctx.tf()
    devices = {{"rank": ctx.rank, "ctx_gpus": list(ctx.gpus or []),
               "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
               "allow_growth": os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH"),
               "tf_gpus": len(tf.config.list_physical_devices("GPU"))}}
    with open(os.path.join(ctx.output_dir, f"devices-{{ctx.rank}}.json"), "w") as f:
        json.dump(devices, f)
    return devices

spark = (SparkSession.builder.master("local-cluster[1,2,1024]")
         .config("spark.worker.resource.gpu.amount", "2")
         .config("spark.worker.resource.gpu.discoveryScript", {script!r})
         .config("spark.executor.resource.gpu.amount", "2")
         .config("spark.task.resource.gpu.amount", "1")
         .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
         .config("spark.task.maxFailures", "1")
         .config("spark.executorEnv.TF_USE_LEGACY_KERAS", "1").getOrCreate())
try:
    tfos_lib.run(report_devices, num_workers=2, spark=spark, output_dir={out!r})
finally:
    spark.stop()
"""


def test_each_worker_sees_only_its_assigned_gpu(tmp_path):
    fake = tmp_path / "fake-gpus.sh"
    fake.write_text('#!/usr/bin/env bash\necho \'{"name": "gpu", "addresses": ["0", "1"]}\'\n')
    fake.chmod(0o755)
    out = tmp_path / "out"
    script = SCRIPT.format(script=str(fake), out=str(out))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-5000:]
    devices = [json.loads((out / f"devices-{rank}.json").read_text()) for rank in (0, 1)]
    assigned = sorted(d["cuda_visible_devices"] for d in devices)
    assert assigned == ["0", "1"], devices
    for d in devices:
        assert d["ctx_gpus"] == [d["cuda_visible_devices"]]
        assert d["allow_growth"] == "true"
        assert d["tf_gpus"] == 0  # no real GPU here: TensorFlow falls back to the CPU


def test_no_gpu_request_leaves_environment_alone():
    from tfos_lib.tfenv import gpu_env, task_gpus

    assert gpu_env(None) == {}
    assert gpu_env(("3",)) == {"CUDA_VISIBLE_DEVICES": "3", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}

    class Resource:
        addresses = ["2", "5"]

    class Context:
        def __init__(self, resources):
            self._resources = resources

        def resources(self):
            return self._resources

    assert task_gpus(Context({})) is None
    assert task_gpus(Context({"gpu": Resource()})) == ("2", "5")

"""The packed-environment route: executors run Python from an archive shipped with the job.

Packs a light environment (pyspark, numpy, cloudpickle: what a Spark Python worker
and `import tfos_lib` need) with ``cluster/pack-env.sh --from-installed`` (copied from
this Python's installed packages, so no package index is needed), ships it with
`./spark-submit.sh --packed-env`, and checks that the executor ran that Python and
imported tfos_lib from the zip spark-submit.sh ships. The full environment
(TensorFlow included, about 2.5 GB) is built the same way, without arguments.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = """
import json, os, sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
def probe(_):
    import tfos_lib
    yield json.dumps({"executable": sys.executable, "cwd": os.getcwd(), "tfos_lib": tfos_lib.__file__})
print("PROBE " + spark.sparkContext.parallelize([0], 1).mapPartitions(probe).collect()[0])
spark.stop()
"""


def test_executors_run_python_from_the_packed_environment(tmp_path):
    archive = tmp_path / "env.tar.gz"
    pack = subprocess.run(
        # From this Python's installed packages: no package index needed, nothing downloaded.
        [os.path.join(REPO, "cluster", "pack-env.sh"), "--output", str(archive), "--from-installed",
         "pyspark", "cloudpickle", "numpy"],
        capture_output=True, text=True, timeout=900,
    )
    assert pack.returncode == 0, pack.stderr[-3000:]
    assert "py4j" in pack.stdout and "pyspark" in pack.stdout  # pyspark's own requirement came along
    assert archive.stat().st_size > 1_000_000
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    run = subprocess.run(
        [os.path.join(REPO, "spark-submit.sh"), str(script), "--master", "local-cluster[1,1,1024]",
         "--packed-env", str(archive)],
        capture_output=True, text=True, timeout=600,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("PROBE ")]
    assert run.returncode == 0 and lines, run.stderr[-5000:]
    probe = json.loads(lines[0][len("PROBE ") :])
    # local-cluster unpacks the archive under SPARK_HOME/work/<app>/<executor>; remove it.
    shutil.rmtree(os.path.dirname(probe["cwd"]), ignore_errors=True)
    assert probe["executable"] == os.path.join(probe["cwd"], "env", "bin", "python")
    assert probe["tfos_lib"].endswith("tfos_lib.zip/tfos_lib/__init__.py")


def test_missing_archive_is_a_clear_error(tmp_path):
    run = subprocess.run([os.path.join(REPO, "spark-submit.sh"), "mnist", "--packed-env", str(tmp_path / "nope.tar.gz")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "cluster/pack-env.sh" in run.stderr

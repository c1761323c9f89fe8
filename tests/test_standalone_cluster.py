"""A real standalone cluster on this host (cluster/local-standalone.sh) running the MNIST job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "cluster", "local-standalone.sh")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_mnist_on_a_two_worker_standalone_cluster(tmp_path):
    # Port 0: the master binds free ports itself (no pick-then-bind race) and the script reports them.
    env = dict(os.environ, SPARK_MASTER_PORT="0", SPARK_MASTER_WEBUI_PORT="0",
               TFOS_STANDALONE_DIR=str(tmp_path / "cluster"))
    started = subprocess.run([SCRIPT, "start", "2"], env=env, capture_output=True, text=True, timeout=180)
    pids = [int(p.read_text()) for p in (tmp_path / "cluster").glob("*.pid")]
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        port = int(re.search(r"master: spark://127\.0\.0\.1:(\d+)", started.stdout).group(1))
        ui_port = int(re.search(r"web UI: http://127\.0\.0\.1:(\d+)", started.stdout).group(1))
        assert port > 0 and ui_port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=10) as page:
            assert json.load(page)["url"] == f"spark://127.0.0.1:{port}"
        assert len(pids) == 3
        job = subprocess.run(
            [os.path.join(REPO, "spark-submit.sh"), "mnist", "--master", f"spark://127.0.0.1:{port}", "--",
             "--num-workers", "2", "--epochs", "3", "--output-dir", str(tmp_path / "out")],
            env=env, capture_output=True, text=True, timeout=900,
        )
        assert job.returncode == 0, job.stderr[-5000:]
        metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
        assert metrics["num_workers"] == 2 and metrics["results"]["examples_per_worker"] == 673 * 3
        assert metrics["results"]["test_accuracy"] > 0.8
    finally:
        stopped = subprocess.run([SCRIPT, "stop"], env=env, capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0 and "stopped 3 process(es)" in stopped.stdout
    assert not [pid for pid in pids if _alive(pid)]


def test_start_rejects_a_bad_worker_count(tmp_path):
    env = dict(os.environ, TFOS_STANDALONE_DIR=str(tmp_path / "cluster"))
    run = subprocess.run([SCRIPT, "start", "zero"], env=env, capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "positive number of workers" in run.stderr

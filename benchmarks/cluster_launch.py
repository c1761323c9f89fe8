"""Cluster launch figures: time from each bad Spark setting to its error, and MNIST on S3 vs local disk.

Each figure is one plain ``spark-submit jobs/mnist.py`` (or ``python jobs/mnist.py``)
process, timed from its start to its exit, so the times include starting the JVM,
Spark and Python. The S3 runs go to moto's S3 server, started here on 127.0.0.1 and
reached through ``AWS_ENDPOINT_URL``/``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
exactly like a real bucket. Measures; asserts nothing.

    python benchmarks/cluster_launch.py                  # all figures (MNIST: logreg, 10 epochs, default digits)
    python benchmarks/cluster_launch.py --only settings  # the bad-settings times only
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

#: (what, spark-submit options, job options): each must be refused before training starts.
BAD_SETTINGS = [
    ("dynamic allocation on", ["--master", "local[2]", "--conf", "spark.dynamicAllocation.enabled=true"], []),
    ("spark.task.maxFailures=4 (the default) on local-cluster", ["--master", "local-cluster[2,1,1024]"], []),
    ("fewer slots than workers (local[1], 2 workers)", ["--master", "local[1]"], []),
]


def _spark_submit() -> str:
    import pyspark

    return os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit")


def _timed(command: list[str], env: dict) -> tuple[float, int, str]:
    start = time.monotonic()
    run = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO, **env})
    return time.monotonic() - start, run.returncode, run.stdout + run.stderr


def bad_settings(work: str) -> list[dict]:
    rows = []
    for what, spark_args, job_args in BAD_SETTINGS:
        command = [_spark_submit(), "--conf", "spark.ui.enabled=false", *spark_args,
                   os.path.join(REPO, "jobs", "mnist.py"), "--model", "logreg", "--num-workers", "2", "--output-dir", os.path.join(work, "bad"), *job_args]
        seconds, code, text = _timed(command, {})
        lines = text.splitlines()
        first = next((i for i, line in enumerate(lines) if line.startswith("error:")), None)
        error = " ".join(lines[first:first + 2]) if first is not None else "no 'error:' line: " + text.strip()[-300:]
        rows.append({"setting": what, "seconds_to_error": round(seconds, 1), "exit_code": code, "error": error[:300]})
        print(json.dumps(rows[-1]), flush=True)
    # YARN/Kubernetes cannot be started here: the memory-overhead check, timed in-process on a YARN configuration.
    from tfos_lib import launcher

    start = time.monotonic()
    try:
        launcher.check_spark_conf({"spark.master": "yarn", "spark.executor.memory": "4g",
                                   "spark.task.maxFailures": "1"}, "barrier")
        error = "not refused"
    except ValueError as refused:
        error = str(refused).splitlines()[-1]
    rows.append({"setting": "memory overhead 410 MiB on YARN (check only, no YARN here)",
                 "seconds_to_error": round(time.monotonic() - start, 4), "exit_code": None, "error": error[:300]})
    print(json.dumps(rows[-1]), flush=True)
    return rows


def _moto() -> tuple[subprocess.Popen, dict]:
    """moto's S3 server as its own process on a free port of 127.0.0.1, with a bucket ``bench``."""
    from pyarrow import fs

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("moto's S3 server did not start") from None
            time.sleep(0.2)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    s3 = fs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], access_key="bench", secret_key="bench",
                         region="us-east-1", allow_bucket_creation=True)
    s3.create_dir("bench")
    return server, env


def s3_vs_local(work: str, model: str, epochs: int) -> list[dict]:
    server, env = _moto()
    rows = []
    try:
        for where, output in (("local disk", os.path.join(work, "mnist-local")), ("S3 (moto, 127.0.0.1)", "s3a://bench/mnist")):
            command = [sys.executable, os.path.join(REPO, "jobs", "mnist.py"), "--num-workers", "2", "--model", model,
                       "--epochs", str(epochs), "--output-dir", output]
            seconds, code, text = _timed(command, {**env, "MASTER": "local[2]"})
            row = {"output": where, "model": model, "epochs": epochs, "wall_seconds": round(seconds, 1),
                   "exit_code": code}
            if code:
                row["tail"] = text.strip()[-600:]
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        server.terminate()
        server.wait()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("settings", "s3"))
    parser.add_argument("--model", default="logreg", choices=("logreg", "cnn"))
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="tfos-bench-cluster-")
    results = {}
    if args.only in (None, "settings"):
        results["bad_settings"] = bad_settings(work)
    if args.only in (None, "s3"):
        results["mnist_two_workers"] = s3_vs_local(work, args.model, args.epochs)
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main()

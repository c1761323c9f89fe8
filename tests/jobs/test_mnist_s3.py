"""The MNIST job with --output-dir on an S3-compatible server (moto, on 127.0.0.1): write, kill, refuse, resume.

The job runs as a program (its own Spark driver and local[2] executors), so the
AWS_* variables reach the executors' Python workers as they would on a cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tfos_lib.datasets import idx

REPO = str(Path(__file__).resolve().parents[2])


def _job(args, env, **popen):
    full_env = {**os.environ, **env, "PYTHONPATH": REPO, "MASTER": "local[2]"}
    return subprocess.Popen([sys.executable, os.path.join(REPO, "jobs", "mnist.py"), *args], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            **popen)


def test_two_workers_write_to_s3_resume_after_kill_and_load_the_model_from_there(s3_server, tmp_path, monkeypatch):
    s3_env = s3_server  # the conftest server (bucket "runs")
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    from tfos_lib import report, runstate, storage

    rng = np.random.default_rng(0)
    for split, n in (("train", 80), ("t10k", 20)):
        idx.write_idx(tmp_path / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        idx.write_idx(tmp_path / f"{split}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    out = "s3a://runs/mnist"
    args = ["--num-workers", "2", "--model", "logreg", "--batch-size", "8", "--data-dir", str(tmp_path),
            "--output-dir", out]

    # 1. A long run, killed (SIGKILL, whole process group) once its first checkpoint is on S3.
    run = _job([*args, "--epochs", "400"], s3_env)
    deadline = time.monotonic() + 240
    while not runstate.has_checkpoint(out):
        assert run.poll() is None, run.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint on S3 within 240 s"
        time.sleep(0.3)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert runstate.recorded_fingerprint(out)["options"]["model"] == "logreg"
    assert storage.exists(f"{out}/{runstate.LOCK_FILE}")  # left behind by the killed run

    # 2. The same directory with another model: refused in seconds, naming the option (the stale lock is taken over).
    refused = _job([*args, "--model", "cnn", "--epochs", "400"], s3_env)
    text = refused.communicate(timeout=180)[0]
    assert refused.returncode == 1, text
    assert "--model: checkpoint 'logreg', this run 'cnn'" in text and "removing the stale lock" in text

    # 3. The original command, shortened (epochs may change on resume): resumes from the checkpoint on S3 and
    # finishes there, with epochs left to train after those the killed run saved.
    resumed = _job([*args, "--epochs", "30"], s3_env)
    text = resumed.communicate(timeout=420)[0]
    assert resumed.returncode == 0, text[-3000:]
    metrics = report.read_metrics(out)
    results = metrics["results"]
    assert 1 <= results["resumed_from_epoch"] < 30, results["resumed_from_epoch"]
    # The DataFrame inference in the executors loaded the model from S3 and agrees with the chief's figure.
    assert results["dataframe_test_accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)
    files = storage.list_files(out)
    assert {"metrics.json", "models/mnist/1/saved_model.pb", "confusion_matrix.png", "training_curves.png"} <= set(files)
    assert any(f.startswith("tensorboard/") for f in files)
    assert not any(f.startswith("checkpoints/chief/ckpt") for f in files)  # removed once training completed
    assert runstate.LOCK_FILE not in files
    assert json.loads(storage.read_bytes(f"{out}/metrics.json"))["num_workers"] == 2

"""Output locations (tfos_lib.storage) and one run per output directory (tfos_lib.runstate), without Spark.

The S3 tests talk to a real S3-compatible server (moto's server mode) on 127.0.0.1,
configured through the standard AWS_* variables.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile

import pytest

from tfos_lib import runstate, storage
from tfos_lib.runstate import OutputDirBusy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 with bucket ``tfos-test``; AWS_* point at it while the module runs."""
    import boto3
    from moto import server as moto_server

    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    boto3.client("s3").create_bucket(Bucket="tfos-test")
    yield env
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_normalize_and_join():
    assert storage.normalize("file:///tmp/x/") == "/tmp/x"
    assert storage.normalize("dbfs:/runs/a") == "/dbfs/runs/a"
    assert storage.normalize("s3a://bucket/dir/") == "s3a://bucket/dir"
    assert storage.normalize("rel") == os.path.abspath("rel")
    assert storage.join("s3a://bucket/dir", "model") == "s3a://bucket/dir/model"
    assert storage.join("hdfs://nn:8020/user/x", "a", "b") == "hdfs://nn:8020/user/x/a/b"
    assert storage.is_remote("gs://b/x") and not storage.is_remote("/x") and not storage.is_remote("dbfs:/x")


@pytest.mark.parametrize("uri, expected", [("ftp://host/x", "scheme ftp:// is not supported"),
                                           ("s3a:///no-bucket", "needs a bucket or host")])
def test_unsupported_locations_are_refused(uri, expected):
    with pytest.raises(ValueError, match=expected):
        storage.normalize(uri)


def test_local_path_on_a_multi_host_cluster_is_refused_at_start():
    yarn = {"spark.master": "yarn"}
    with pytest.raises(ValueError, match="local path, but master=yarn runs executors on other hosts") as error:
        storage.check_output_location("/data/out", yarn)
    assert "s3a://" in str(error.value) and storage.SHARED_SETTING in str(error.value)
    assert storage.check_output_location("/data/out", {**yarn, storage.SHARED_SETTING: "true"}) == "/data/out"
    assert storage.check_output_location("s3a://b/out", yarn) == "s3a://b/out"
    assert storage.check_output_location("out", {"spark.master": "local-cluster[2,1,1024]"}) == os.path.abspath("out")
    assert storage.check_output_location("out", {"spark.master": "spark://localhost:7077"}) == os.path.abspath("out")


def test_s3_round_trip(s3, tmp_path):
    base = "s3a://tfos-test/round-trip"
    storage.write_bytes(f"{base}/a.json", b"{}")
    assert storage.read_bytes(f"{base}/a.json") == b"{}" and storage.exists(base)
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "sub" / "x.bin").write_bytes(b"x" * 1000)
    (tmp_path / "src" / "checkpoint").write_text("index")
    assert storage.upload(str(tmp_path / "src"), f"{base}/dir", last=("checkpoint",)) == ["sub/x.bin", "checkpoint"]
    assert storage.list_files(base) == ["a.json", "dir/checkpoint", "dir/sub/x.bin"]
    (tmp_path / "src" / "sub" / "x.bin").unlink()
    storage.upload(str(tmp_path / "src"), f"{base}/dir", prune=True)
    assert storage.list_files(f"{base}/dir") == ["checkpoint"]
    storage.move(f"{base}/dir", f"{base}/moved")
    assert storage.download(f"{base}/moved", str(tmp_path / "back")) == ["checkpoint"]
    assert not storage.exists(f"{base}/dir")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        storage.read_bytes(f"{base}/missing.json")
    with pytest.raises(FileExistsError, match="a.json"):
        storage.write_bytes(f"{base}/a.json", b"x", exclusive=True)


def _write_lock(directory, **holder):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / runstate.LOCK_FILE).write_text(json.dumps({"started_at": "2026-01-01T00:00:00+00:00", **holder}))


def test_second_run_on_one_directory_is_refused(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(tmp_path / "live", host=socket.gethostname(), pid=other.pid)
        with pytest.raises(OutputDirBusy, match=f"another run is using .*pid {other.pid} on host"):
            runstate.RunLock(str(tmp_path / "live")).acquire()
        _write_lock(tmp_path / "remote", host="some-other-host", pid=1)
        with pytest.raises(OutputDirBusy, match="some-other-host.*delete the lock file"):
            runstate.RunLock(str(tmp_path / "remote")).acquire()
    finally:
        other.kill()
        other.wait()
    # Its process is gone now: the lock is stale and taken over.
    with runstate.RunLock(str(tmp_path / "live")) as lock:
        assert lock.holder()["pid"] == os.getpid()
    assert not (tmp_path / "live" / runstate.LOCK_FILE).exists()


def test_job_run_holds_the_lock_and_overwrite_moves_the_old_run_aside(tmp_path):
    from tfos_lib.job import JobConfig, JobRun

    out = tmp_path / "out"
    first = JobRun("plain", JobConfig(output_dir=str(out)))
    assert json.loads((out / runstate.LOCK_FILE).read_text())["pid"] == os.getpid()
    first.write_metrics(data={}, results={"x": 1}, book_reference=None)
    assert not (out / runstate.LOCK_FILE).exists()  # released with the results
    again = JobRun("plain", JobConfig(output_dir=str(out), overwrite=True))
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("out.replaced-")]
    assert len(aside) == 1 and (aside[0] / "metrics.json").exists() and not (out / "metrics.json").exists()
    again.release()


def test_resume_with_other_options_lists_them():
    old = runstate.make_fingerprint({"layers": ["Dense"]}, {"model": "logreg", "learning_rate": 0.01})
    new = runstate.make_fingerprint({"layers": ["Conv2D"]}, {"model": "cnn", "learning_rate": 0.01})
    runstate.check_resume(old, old, "here")
    with pytest.raises(OutputDirBusy) as error:
        runstate.check_resume(old, new, "here")
    text = str(error.value)
    assert "--model: checkpoint 'logreg', this run 'cnn'" in text and "learning-rate" not in text
    assert old["fingerprint"] in text and new["fingerprint"] in text and "--overwrite" in text


def test_resumable_options_leave_out_what_may_change():
    from tfos_lib.job import TrainingConfig

    options = runstate.resumable_options((TrainingConfig(epochs=5, num_workers=2, batch_size=32),))
    assert "epochs" not in options and "num_workers" not in options and options["batch_size"] == 32


def test_generated_default_data_goes_under_a_local_output_else_to_local_scratch(tmp_path):
    assert storage.default_data_dir(str(tmp_path), "default-data") == str(tmp_path / "default-data")
    scratch = storage.default_data_dir("s3a://bucket/run", "default-data", {"spark.master": "local[2]"})
    assert scratch.startswith(tempfile.gettempdir()) and "://" not in scratch
    assert scratch == storage.default_data_dir("s3a://bucket/run/", "default-data")  # one place per output URI
    assert scratch != storage.default_data_dir("s3a://bucket/other", "default-data")
    with pytest.raises(ValueError, match="executors on other hosts .*Pass --data-dir"):
        storage.default_data_dir("s3a://bucket/run", "default-data", {"spark.master": "yarn"})
    # Local and dbfs:/ outputs need no Hadoop connector check (no Spark session is consulted).
    for path in (str(tmp_path), "file:///tmp/x", "dbfs:/tmp/x"):
        storage.check_spark_writable(None, path)

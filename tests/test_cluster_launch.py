"""What a real cluster needs from the launcher: the locked-down monitor, live Spark-config checks,
deadlines outside fit and for the whole job, and plain spark-submit with and without the wrapper's zip."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tfos_lib
from tfos_lib.datasets import idx
from tfos_lib.errors import LauncherTimeout
from tfos_lib.launcher import check_spark_conf
from tfos_lib.monitor import MAX_LINE, Monitor, MonitorUnreachable, Reporter, Timeouts, escape, parse_ports

REPO = str(Path(__file__).resolve().parents[1])


# ---------------------------------------------------------------------------------------------
# The monitor.


def _wait(predicate, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def _raw(monitor, *lines: bytes) -> None:
    with socket.create_connection((monitor.host, monitor.port), timeout=5) as sock:
        for line in lines:
            sock.sendall(line)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)  # until the monitor closes


def test_monitor_binds_to_the_given_address_and_port_range():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        taken = probe.getsockname()[1]
        probe.listen()
        # The first port of the range is busy: the next one is used.
        with Monitor(1, Timeouts(), host="127.0.0.1", ports=f"{taken}-{taken + 1}") as monitor:
            assert monitor.port == taken + 1 and monitor._server.server_address[0] == "127.0.0.1"
            assert monitor.address == f"{monitor.secret}@127.0.0.1:{taken + 1}"
    assert parse_ports(None) == [0] and parse_ports("40000-40002") == [40000, 40001, 40002]
    with pytest.raises(ValueError, match="spark.tfos.monitor.port must be a port or a range"):
        parse_ports("40010-40000")


def test_monitor_refuses_strangers_long_lines_fake_events_and_past_attempts(caplog):
    caplog.set_level(logging.INFO, logger="tfos_lib")
    with Monitor(2, Timeouts(), host="127.0.0.1") as monitor:
        monitor.stage_started(attempt=1)
        hello = {"kind": "hello", "secret": monitor.secret, "attempt": 1}
        # No secret: a fake "done" of the chief is dropped.
        _raw(monitor, b'{"kind": "done", "rank": 0}\n')
        _raw(monitor, json.dumps({**hello, "secret": "guess", "rank": 0}).encode() + b'\n{"kind": "done"}\n')
        # An event from the previous attempt, and a rank out of range.
        _raw(monitor, json.dumps({**hello, "attempt": 0, "rank": 0}).encode() + b'\n{"kind": "done"}\n')
        _raw(monitor, json.dumps({**hello, "rank": 7}).encode() + b"\n")
        # A line longer than MAX_LINE without a newline: the connection is closed, nothing is kept.
        _raw(monitor, json.dumps({**hello, "rank": 1}).encode() + b"\n" + b"x" * (MAX_LINE + 10))
        assert _wait(lambda: len(monitor.refused) == 5), monitor.refused
        assert monitor._chief_done_at is None and monitor._state == {}
        assert "no valid secret" in monitor.refused[0] and "no valid secret" in monitor.refused[1]
        assert "attempt 0" in monitor.refused[2] and "rank 7" in monitor.refused[3]
        assert f"a line over {MAX_LINE} bytes" in monitor.refused[4]
        # A worker of this attempt with the secret: its events count; a newline cannot forge a log line.
        reporter = Reporter(monitor.address, 0, attempt=1)
        reporter.send("message", text="hi\n2026-01-01 INFO tfos_lib: forged")
        reporter.send("done", rank=1)  # another rank than its hello: dropped
        reporter.send("done")
        assert _wait(lambda: monitor._chief_done_at is not None)
        reporter.close()
        assert any("rank 0" in why for why in monitor.refused[5:])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("worker 0:")]
    assert lines == ["worker 0: hi\\n2026-01-01 INFO tfos_lib: forged"]
    assert escape("a\rb\x1b") == "a\\rb\\x1b"


def test_monitor_caps_connections():
    with Monitor(1, Timeouts(), host="127.0.0.1") as monitor:
        held = [socket.create_connection((monitor.host, monitor.port)) for _ in range(monitor.max_connections)]
        try:
            _raw(monitor, b"{}\n")
            assert _wait(lambda: any("over" in why for why in monitor.refused))
        finally:
            for sock in held:
                sock.close()


def test_unreachable_monitor_names_host_port_and_setting():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(MonitorUnreachable, match=rf"127.0.0.1:{port} .*spark.tfos.monitor.port"):
        Reporter(f"secret@127.0.0.1:{port}", 0)


def test_monitor_rendezvous_answers_every_rank_once_all_met_and_frees_waiters_of_a_past_attempt():
    from concurrent.futures import ThreadPoolExecutor

    def meet(rank, attempt, address):
        reporter = Reporter(monitor.address, rank, attempt)
        try:
            return [record["address"] for record in reporter.meet({"address": address})]
        finally:
            reporter.close()

    with Monitor(3, Timeouts(), host="127.0.0.1") as monitor, ThreadPoolExecutor(4) as pool:
        monitor.stage_started(attempt=0)
        first, restarted = pool.submit(meet, 0, 0, "a:1"), pool.submit(meet, 2, 0, "c:3")
        assert _wait(lambda: len(monitor._meeting) == 2)
        assert not first.done()  # nobody is answered before the last rank comes
        # Rank 2's task restarted within the attempt: its new record replaces the old one.
        second_two = pool.submit(meet, 2, 0, "c:4")
        assert _wait(lambda: monitor._meeting.get(2) == {"address": "c:4"})
        assert meet(1, 0, "b:2") == ["a:1", "b:2", "c:4"]
        assert first.result(5) == second_two.result(5) == ["a:1", "b:2", "c:4"]
        assert restarted.result(5) == ["a:1", "b:2", "c:4"]  # same round: a late reader still gets the list
        # A new round starts empty; a relaunch frees the tasks of the old attempt with an error naming it.
        stale = pool.submit(meet, 0, 0, "a:5")
        assert _wait(lambda: monitor._meeting == {0: {"address": "a:5"}})
        monitor.stage_started(attempt=1)
        with pytest.raises(MonitorUnreachable, match="closed the rendezvous before every worker had met"):
            stale.result(5)
    assert monitor.refused == []


# ---------------------------------------------------------------------------------------------
# The live Spark configuration.


@pytest.mark.parametrize("conf, setting, fix", [
    ({"spark.master": "local[2]", "spark.dynamicAllocation.enabled": "true"}, "spark.dynamicAllocation.enabled=true",
     "--conf spark.dynamicAllocation.enabled=false"),
    ({"spark.master": "spark://h:7077"}, "spark.task.maxFailures=4 (the default)", "--conf spark.task.maxFailures=1"),
    ({"spark.master": "yarn", "spark.task.maxFailures": "1", "spark.executor.memory": "2g"},
     "spark.executor.memoryOverhead is 384 MiB", "--conf spark.executor.memoryOverhead=3g"),
    ({"spark.master": "k8s://h", "spark.task.maxFailures": "1", "spark.executor.memoryOverhead": "1g"},
     "spark.executor.memoryOverhead is 1024 MiB", "2.6 GB measured"),
])
def test_bad_spark_settings_are_refused_with_the_fix(conf, setting, fix):
    with pytest.raises(ValueError) as error:
        check_spark_conf(conf, "barrier")
    assert setting in str(error.value) and fix in str(error.value)


def test_good_settings_pass_and_tfos_is_refused_under_the_security_profile():
    check_spark_conf({"spark.master": "yarn", "spark.task.maxFailures": "1", "spark.executor.memoryOverhead": "6g"},
                     "barrier")
    check_spark_conf({"spark.master": "local[2]"}, "barrier")
    with pytest.raises(ValueError, match="tfos.* refused under the security profile.*unpickles"):
        check_spark_conf({"spark.master": "local[2]", "spark.authenticate": "true"}, "tfos")


# ---------------------------------------------------------------------------------------------
# Deadlines.


def _hang_before_fit(ctx):
    time.sleep(600)


def test_a_hang_before_the_first_step_times_out(spark, tmp_path):
    started = time.monotonic()
    with pytest.raises(LauncherTimeout, match=r"worker 0 .*reported nothing for 3 s while 'starting TensorFlow'"):
        tfos_lib.run(_hang_before_fit, num_workers=1, spark=spark, output_dir=str(tmp_path),
                     timeouts=Timeouts(phase=3.0))
    assert time.monotonic() - started < 120


def _rank_1_hangs_after_the_chief(ctx):
    if ctx.rank == 1:
        ctx.phase("writing its files")
        time.sleep(600)
    return {"rank": ctx.rank}


def test_a_worker_that_outlives_the_chief_hits_the_shutdown_deadline(spark, tmp_path):
    """A real two-worker launch: the chief returns, rank 1 hangs; Timeouts.shutdown ends the job, naming it."""
    started = time.monotonic()
    with pytest.raises(LauncherTimeout, match=r"the chief finished 3 s ago but worker\(s\) \[1\] did not "
                                              r"\(last phases: \{1: 'writing its files'\}\)"):
        tfos_lib.run(_rank_1_hangs_after_the_chief, num_workers=2, spark=spark, output_dir=str(tmp_path),
                     timeouts=Timeouts(shutdown=3.0))
    assert time.monotonic() - started < 120


def _stall_on_rank_1():
    """Runs where the worker unpickles its arguments, after ``TF_CONFIG`` is set and before it reports "started"."""
    if json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 1:
        time.sleep(600)  # this worker never reaches the rendezvous
    return "unpickled"


class _NeverStartsOnRank1:
    def __reduce__(self):
        return _stall_on_rank_1, ()


def _start_and_wait(ctx, marker=None):
    if marker is None:  # the clean run: every worker starts and returns at once
        return {"rank": ctx.rank}
    time.sleep(600)  # rank 0 started; it waits (as a strategy would) for a peer that never comes


def _active_stages(spark) -> list:
    return list(spark.sparkContext.statusTracker().getActiveStageIds())


def test_a_worker_that_never_reaches_the_rendezvous_ends_the_launch_within_its_deadline(spark, tmp_path):
    """A real two-worker launch whose rank 1 never reports "started": Timeouts.rendezvous ends it, naming rank 1,
    and the barrier stage is cancelled (its task slots free for the next launch). The deadline is relative to a
    clean launch measured here, so a loaded machine cannot trip it for an honest start-up."""
    started = time.monotonic()
    assert tfos_lib.run(_start_and_wait, num_workers=2, spark=spark, output_dir=str(tmp_path / "clean")) == {"rank": 0}
    clean = time.monotonic() - started
    rendezvous = round(max(10.0, 2 * clean))
    started = time.monotonic()
    with pytest.raises(LauncherTimeout, match=rf"worker\(s\) \[1\] did not start within {rendezvous} s "
                                              r"\(1 of 2 started\)"):
        tfos_lib.run(_start_and_wait, _NeverStartsOnRank1(), num_workers=2, spark=spark,
                     output_dir=str(tmp_path / "stalled"), timeouts=Timeouts(rendezvous=rendezvous))
    elapsed = time.monotonic() - started
    # The deadline, plus one clean launch's worth of polling and cancelling (the cancelled thread gets 30 s at most).
    assert rendezvous <= elapsed < rendezvous + clean + 35, (elapsed, rendezvous, clean)
    assert _wait(lambda: not _active_stages(spark), 60), _active_stages(spark)


def test_time_limit_stops_the_job(tmp_path):
    script = (
        "import time\nfrom tfos_lib import job\n"
        f"cfg = job.JobConfig(output_dir={str(tmp_path)!r}, time_limit=1.0)\n"
        "def main():\n    job.JobRun('demo', cfg)\n    time.sleep(60)\n"
        "job.run_main(main)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": REPO})
    assert run.returncode == 1 and "ran longer than --time-limit 1 s" in run.stderr, run.stderr


# ---------------------------------------------------------------------------------------------
# Plain spark-submit.


def _spark_submit() -> str:
    import pyspark

    return os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit")


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory):
    directory = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 20)):
        idx.write_idx(directory / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        idx.write_idx(directory / f"{split}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    return directory


def _submit(spark_args, job_args, env):
    command = [_spark_submit(), "--conf", "spark.ui.enabled=false", "--conf", "spark.executorEnv.TF_USE_LEGACY_KERAS=1",
               *spark_args, os.path.join(REPO, "jobs", "mnist.py"), *job_args]
    return subprocess.run(command, capture_output=True, text=True, timeout=400, env={**os.environ, **env})


def test_plain_spark_submit_local_and_with_the_zip_on_local_cluster(small_mnist, tmp_path):
    job_args = ["--model", "logreg", "--epochs", "1", "--batch-size", "8", "--data-dir", str(small_mnist)]
    # tfos_lib importable (here: PYTHONPATH, as an installed package would be), `--` passed through.
    local = _submit(["--master", "local[2]"],
                    ["--", *job_args, "--num-workers", "2", "--output-dir", str(tmp_path / "local")],
                    {"PYTHONPATH": REPO})
    assert local.returncode == 0, local.stderr[-3000:]
    assert json.loads((tmp_path / "local" / "metrics.json").read_text())["num_workers"] == 2
    # The zip of `python -m tfos_lib.pack`, on a local-cluster (driver and executors import it from the zip).
    zip_path = subprocess.run([sys.executable, "-m", "tfos_lib.pack", str(tmp_path / "tfos_lib.zip"),
                               os.path.join(REPO, "tfos_lib")], capture_output=True, text=True, check=True).stdout.strip()
    cluster = _submit(["--master", "local-cluster[2,1,1024]", "--conf", "spark.task.maxFailures=1",
                       "--py-files", zip_path],
                      [*job_args, "--num-workers", "2", "--output-dir", str(tmp_path / "cluster")],
                      {"PYTHONPATH": ""})
    assert cluster.returncode == 0, cluster.stderr[-3000:]
    assert json.loads((tmp_path / "cluster" / "metrics.json").read_text())["backend"] == "barrier"


def test_spark_submit_with_dynamic_allocation_fails_at_once_with_the_fix(small_mnist, tmp_path):
    run = _submit(["--master", "local[2]", "--conf", "spark.dynamicAllocation.enabled=true"],
                  ["--model", "logreg", "--data-dir", str(small_mnist), "--output-dir", str(tmp_path)],
                  {"PYTHONPATH": REPO})
    # spark-submit's PythonRunner sends the driver's stderr to its stdout.
    assert run.returncode == 1 and "--conf spark.dynamicAllocation.enabled=false" in run.stdout, run.stdout[-3000:]

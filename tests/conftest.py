"""Shared fixtures: one small local[2] SparkSession for the whole run, and the workloads several tests use.

Test modules never import each other: what two of them share lives here. The
plain functions below are also what ``test_backend_tfos.py``'s child script
imports (it runs outside pytest, with this folder on ``sys.path``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

import tfos_lib  # noqa: F401  (sets TF_USE_LEGACY_KERAS=1 before anything imports TensorFlow)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The book's small real datasets live beside the clone (never copied into it); TFOS_BOOK_DATA points elsewhere.
BOOK_DATA = os.environ.get("TFOS_BOOK_DATA") or os.path.join(os.path.dirname(REPO), "shared", "data", "book")

# Skip reasons a --no-skip run still accepts. Empty: CI provides everything every test needs, so a skip there
# means a test silently stopped checking something (a missing package, browser or dataset). The one thing CI
# cannot install is the book's data beside the clone: .ci/run allows that reason, loudly, only when it is absent.
ALLOWED_SKIPS: tuple[str, ...] = tuple(filter(None, os.environ.get("TFOS_ALLOWED_SKIPS", "").split("|")))


def pytest_addoption(parser):
    parser.addoption(
        "--no-skip",
        action="store_true",
        help="fail every skipped test whose reason is not in conftest.ALLOWED_SKIPS (what .ci/run uses)",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and item.config.getoption("--no-skip")) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if any(allowed in reason for allowed in ALLOWED_SKIPS):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped in a --no-skip run: {reason}\n"
        "Provide what the test needs (.ci/run installs it all) or run without --no-skip."
    )


def _spark_work_dir() -> str:
    import pyspark

    return os.path.join(os.environ.get("SPARK_HOME") or os.path.dirname(pyspark.__file__), "work")


def _cwds_in_use() -> set[str]:
    """Working directories of this host's live processes (an executor's is its app's work dir)."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            found.add(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            pass
    return found


@pytest.fixture(scope="session", autouse=True)
def remove_local_cluster_work_dirs():
    """``local-cluster`` executors unpack each app under ``SPARK_HOME/work/<app>``, and nothing removes them.
    At the end of the session, the app folders that appeared during it go, unless a live process still works
    in one (another run on this host)."""
    work = _spark_work_dir()
    before = set(os.listdir(work)) if os.path.isdir(work) else set()
    yield
    if not os.path.isdir(work):
        return
    in_use = _cwds_in_use()
    for app in set(os.listdir(work)) - before:
        path = os.path.join(work, app)
        if not any(cwd == path or cwd.startswith(path + os.sep) for cwd in in_use):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def book_data():
    """``path(*parts)``: a file or folder of the book's data, or a skip naming where it was looked for."""

    def path(*parts: str) -> str:
        found = os.path.join(BOOK_DATA, *parts)
        if not os.path.exists(found):
            pytest.skip(f"the book's data is not at {found} (set TFOS_BOOK_DATA to the folder holding ch03/, ch06/...)")
        return found

    return path


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """local[2]: two task slots, so barrier tests get two workers in separate Python processes."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.fail("Java not found: Spark needs Java 17+ (apt-get install openjdk-17-jre-headless).")
    from pyspark.sql import SparkSession

    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    session = (
        SparkSession.builder.master("local[2]")
        .appName("tfos_lib-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config("spark.executorEnv.TF_USE_LEGACY_KERAS", "1")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto's server mode) on 127.0.0.1 with a bucket ``runs``.

    Yields the standard ``AWS_*`` variables that reach it (set them where a test needs them: see ``s3``).
    """
    import socket

    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:  # moto binds it itself below; nothing else asks for a port in between
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket="runs")
    yield env
    server.stop()


@pytest.fixture
def s3(s3_server, spark, monkeypatch):
    """``s3_server``'s variables in this process and in the shared session's executors (``sc.environment``:
    Python workers started from now on get them, as executors on a cluster get theirs)."""
    for key, value in s3_server.items():
        monkeypatch.setenv(key, value)
    environment = spark.sparkContext.environment
    saved = dict(environment)
    environment.update(s3_server)
    yield s3_server
    environment.clear()
    environment.update(saved)


def regression_frame(spark, rows=400):
    """``y = 2*x0 - x1 + 0.5`` as columns ``x`` (array<float> of 2) and ``y``, spread over 3 partitions."""
    from pyspark.sql import functions as F

    x0 = (F.col("id") % 17) / 17.0
    x1 = (F.col("id") % 5) / 5.0
    return spark.range(0, rows, 1, 3).select(
        F.array(x0.cast("float"), x1.cast("float")).alias("x"), (2 * x0 - x1 + 0.5).cast("float").alias("y")
    )


def train_linear(ctx, epochs):
    """Fits a linear model; every worker saves its final weights for the test to compare."""
    tf = tfos_lib.import_tensorflow()
    tf.keras.utils.set_random_seed(0)
    shard = ctx.data("train")
    with ctx.strategy().scope():
        model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
        model.compile(tf.keras.optimizers.SGD(0.2), "mse")
    history = model.fit(
        ctx.distributed_dataset("train", "x", "y", global_batch_size=20),
        steps_per_epoch=shard.steps_per_epoch(20),
        epochs=epochs,
        verbose=0,
    )
    weights = np.concatenate([w.ravel() for w in model.get_weights()])
    np.save(os.path.join(ctx.worker_dir(), f"weights-{ctx.rank}.npy"), weights)
    # What this worker trained on and in which process, for tests that two workers really were two.
    np.savez(os.path.join(ctx.worker_dir(), f"shard-{ctx.rank}.npz"), x=shard.column("x"), pid=os.getpid())
    return {"loss": history.history["loss"], "rank": ctx.rank, "rows": shard.num_rows, "world": ctx.num_workers}


@pytest.fixture(scope="session")
def linear_regression():
    """``(make_frame(spark, rows=400), train_fn(ctx, epochs))``: a tiny task two workers must agree on."""
    return regression_frame, train_linear


ENVELOPE_KEYS = {"job", "tfos_lib_version", "started_at", "wall_seconds", "config", "data", "book_reference", "results"}


def _check_metrics_envelope(metrics: dict, job: str, training: bool) -> None:
    """Every job's metrics.json has the same top-level keys (README, "metrics.json"); its own figures sit in results."""
    from datetime import datetime, timedelta

    expected = ENVELOPE_KEYS | ({"num_workers", "backend"} if training else set())
    expected |= {"mlflow"} if metrics.get("config", {}).get("mlflow") else set()  # --mlflow: the run's id
    assert set(metrics) == expected, f"unexpected {set(metrics) - expected}, missing {expected - set(metrics)}"
    assert metrics["job"] == job and metrics["tfos_lib_version"] == tfos_lib.__version__
    started = datetime.fromisoformat(metrics["started_at"])
    assert started.utcoffset() == timedelta(0), metrics["started_at"]  # UTC
    assert metrics["wall_seconds"] > 0
    assert isinstance(metrics["config"], dict) and metrics["config"]["output_dir"]
    assert isinstance(metrics["data"], dict) and metrics["data"]["source"]
    assert isinstance(metrics["results"], dict)
    if training:
        assert metrics["num_workers"] == metrics["config"]["num_workers"] >= 1
        assert metrics["backend"] == metrics["config"]["backend"]


@pytest.fixture(scope="session")
def check_metrics_envelope():
    """``check(metrics, job, training)``: asserts a job's metrics.json is in the common envelope."""
    return _check_metrics_envelope


def record_figures(monkeypatch) -> dict[str, list[dict]]:
    """Records every figure ``report.save_figure`` writes from now on (this process): PNG file name -> its axes.

    Each axes as a dict: ``title``, ``xlabel``, ``ylabel``, ``lines`` (label -> y values), ``images`` (arrays),
    ``bars`` (heights of the bar/histogram rectangles), ``points`` (scatter points), ``legend`` (its texts).
    Every plot of the project goes through ``report.save_figure`` (module attribute, looked up at call time).
    """
    from matplotlib.patches import Rectangle

    from tfos_lib import report

    saved: dict[str, list[dict]] = {}
    write = report.save_figure

    def recording(fig, path):
        saved[os.path.basename(str(path))] = [
            {
                "title": ax.get_title(),
                "xlabel": ax.get_xlabel(),
                "ylabel": ax.get_ylabel(),
                "lines": {line.get_label(): [float(y) for y in line.get_ydata()] for line in ax.get_lines()},
                "images": [np.asarray(image.get_array()) for image in ax.get_images()],
                "bars": [float(p.get_height()) for p in ax.patches if isinstance(p, Rectangle)],
                "points": sum(len(c.get_offsets()) for c in ax.collections if hasattr(c, "get_offsets")),
                "legend": [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else [],
            }
            for ax in fig.get_axes()
        ]
        return write(fig, path)

    monkeypatch.setattr(report, "save_figure", recording)
    return saved


@pytest.fixture
def saved_figures(monkeypatch):
    """PNG file name -> what each saved figure drew, per axes (:func:`record_figures`).

    Plot tests check these (the right series, one point per epoch, an image per confusion matrix), not only
    that some PNG bytes were written.
    """
    return record_figures(monkeypatch)


SENTIMENT_ROWS = 600


@pytest.fixture(scope="session")
def sentiment_run(spark):
    """``(output_dir, metrics, rows, figures)`` of one sentiment job run on a generated file (2 barrier workers,
    6 epochs); ``figures`` as :func:`record_figures` records them.

    Training is the slow part of the sentiment job and browser tests, so it runs once per session.
    """
    from jobs import sentiment

    out = Path(tempfile.mkdtemp(prefix="sentiment-job-"))
    args = ["--num-workers", "2", "--epochs", "6", "--synthetic-rows", str(SENTIMENT_ROWS), "--output-dir", str(out)]
    with pytest.MonkeyPatch.context() as monkeypatch:
        figures = record_figures(monkeypatch)
        metrics = sentiment.main(args)
    yield out, metrics, SENTIMENT_ROWS, figures
    shutil.rmtree(out, ignore_errors=True)

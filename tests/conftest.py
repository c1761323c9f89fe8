"""Shared fixtures: one small local[2] SparkSession for the whole run."""

from __future__ import annotations

import os
import shutil

import pytest

import tfos_lib  # noqa: F401  (sets TF_USE_LEGACY_KERAS=1 before anything imports TensorFlow)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOK_DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "book")


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

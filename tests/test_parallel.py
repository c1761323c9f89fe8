"""tfos_lib.parallel: independent tasks, one per key, each in its own process; results and failures per key."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import tfos_lib
from tfos_lib import parallel


def square(task, payload):
    return {"square": payload * payload, "pid": os.getpid(), "threads": os.environ.get("TF_NUM_INTRAOP_THREADS")}


def test_dict_tasks_give_one_row_per_key_in_order(spark, tmp_path):
    results = parallel.run_tasks(
        square, {"a": 1, "b": 2, "c": 3}, result_schema="square long, pid long, threads string",
        spark=spark, output_dir=str(tmp_path),
    )
    assert results.columns == ["key", "status", "square", "pid", "threads", "error", "executor", "seconds"]
    rows = results.collect()
    assert [(r.key, r.status, r.square) for r in rows] == [("a", "ok", 1), ("b", "ok", 4), ("c", "ok", 9)]
    assert all(r.error is None and r.executor and r.seconds > 0 for r in rows)
    # A fresh process per task, its thread pools sized to the task's one CPU.
    assert len({r.pid for r in rows}) == 3 and os.getpid() not in {r.pid for r in rows}
    assert {r.threads for r in rows} == {"1"}
    assert parallel.failures(results) == {}
    parallel.raise_for_failures(results)  # nothing failed: returns


def wait_for_each_other(task, marker_dir):
    """Returns whether every other task started while this one was running."""
    open(os.path.join(marker_dir, f"started-{task.key}"), "w").close()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if len(os.listdir(marker_dir)) == task.num_tasks:
            return {"met": True}
        time.sleep(0.1)
    return {"met": False}


def test_tasks_run_at_the_same_time_on_two_workers(spark, tmp_path):
    """Two tasks on local[2] each wait for the other to start; one after the other, neither would meet it."""
    markers = tmp_path / "markers"
    markers.mkdir()
    results = parallel.run_tasks(
        wait_for_each_other, {"first": str(markers), "second": str(markers)},
        result_schema="met boolean", spark=spark, output_dir=str(tmp_path),
    ).collect()
    assert [(r.key, r.status, r.met) for r in results] == [("first", "ok", True), ("second", "ok", True)]


def sometimes_fails(task, payload):
    if payload == "raise":
        raise ValueError(f"bad input for {task.key}")
    if payload == "crash":
        os._exit(3)  # dies like a segfault or the OOM killer would: no traceback
    return {"value": 1.0}


def test_a_failing_key_is_reported_with_its_traceback_and_the_others_finish(spark, tmp_path):
    tasks = {"good": "fine", "bad": "raise", "dead": "crash", "also_good": "fine"}
    results = parallel.run_tasks(sometimes_fails, tasks, result_schema="value double", spark=spark, output_dir=str(tmp_path))
    rows = {r.key: r for r in results.collect()}
    assert rows["good"].status == rows["also_good"].status == "ok" and rows["good"].value == 1.0
    assert rows["bad"].status == "failed" and rows["bad"].value is None
    assert "ValueError: bad input for bad" in rows["bad"].error and "sometimes_fails" in rows["bad"].error
    assert rows["dead"].status == "failed" and "exit code 3" in rows["dead"].error

    assert set(parallel.failures(results)) == {"bad", "dead"}
    with pytest.raises(tfos_lib.TaskFailures, match=r"2 of 4 task\(s\) failed: 'bad', 'dead'") as caught:
        parallel.raise_for_failures(results)
    assert "ValueError: bad input for bad" in str(caught.value) and "good" not in caught.value.failures
    with pytest.raises(tfos_lib.TaskFailures) as caught:
        parallel.run_tasks(sometimes_fails, {"x": "raise", "y": "fine"}, result_schema="value double",
                           spark=spark, raise_on_failure=True)
    assert set(caught.value.failures) == {"x"}
    assert [r.status for r in caught.value.results.orderBy("key").collect()] == ["failed", "ok"]


def summarize_rows(task, rows):
    # Every task must see only its own key's rows, and all of them.
    keys = set(zip(rows.group, rows.part))
    return {"rows": len(rows), "total": float(rows.value.sum()), "only_mine": keys == {task.key}}


def test_dataframe_tasks_get_their_key_rows_one_partition_each(spark, tmp_path):
    keys = [("x", 1), ("x", 2), ("y", 1), ("y", 2), ("z", 1)]
    data = [(g, p, float(v)) for g, p in keys for v in range(3 + p)]
    df = spark.createDataFrame(data, "group string, part int, value double").repartition(3)
    results = parallel.run_tasks(
        summarize_rows, df, key=["group", "part"], result_schema="rows long, total double, only_mine boolean",
        spark=spark, output_dir=str(tmp_path),
    )
    assert dict(results.dtypes)["part"] == "int"  # key columns keep their types
    rows = results.collect()
    # 5 keys, more than spark.sql.shuffle.partitions (4): still one task each.
    assert [(r.group, r.part) for r in rows] == keys
    assert all(r.status == "ok" and r.only_mine for r in rows)
    assert [r.rows for r in rows] == [4, 5, 4, 5, 4]
    assert [r.total for r in rows] == [6.0, 10.0, 6.0, 10.0, 6.0]


def odd_result(task, payload):
    return {"value": "not a number"} if payload == "wrong" else {"value": 2.5}


def test_a_result_that_does_not_fit_the_schema_fails_only_its_key(spark):
    rows = {r.key: r for r in parallel.run_tasks(
        odd_result, {"ok": "right", "bad": "wrong"}, result_schema="value double", spark=spark
    ).collect()}
    assert rows["ok"].status == "ok" and rows["ok"].value == 2.5
    assert rows["bad"].status == "failed" and "does not fit result_schema" in rows["bad"].error


def slow(task, seconds):
    time.sleep(seconds)
    return {"slept": seconds}


def test_timeout_kills_a_hung_task(spark):
    rows = {r.key: r for r in parallel.run_tasks(
        slow, {"quick": 0.0, "hung": 600.0}, result_schema="slept double", spark=spark, timeout=5
    ).collect()}
    assert rows["quick"].status == "ok"
    assert rows["hung"].status == "failed" and "timed out after 5 s" in rows["hung"].error


def array_result(task, n):
    return np.arange(n) * task.index


def test_any_picklable_result_without_a_schema(spark):
    results = parallel.run_tasks(array_result, {("a", 1): 3, ("b", 2): 2}, key=("name", "number"), spark=spark)
    assert results.columns[:3] == ["name", "number", "status"] and "result" in results.columns
    values = parallel.task_results(results)
    assert set(values) == {("a", 1), ("b", 2)}
    np.testing.assert_array_equal(values[("a", 1)], [0, 0, 0])
    np.testing.assert_array_equal(values[("b", 2)], [0, 1])


def test_bad_arguments_are_refused_with_the_fix(spark):
    with pytest.raises(ValueError, match="no tasks"):
        parallel.run_tasks(square, {}, spark=spark)
    with pytest.raises(ValueError, match=r"tuples of 2 values.*key=\("):
        parallel.run_tasks(square, {("a", 1): 1}, spark=spark)
    with pytest.raises(ValueError, match="one type"):
        parallel.run_tasks(square, {"a": 1, 2: 2}, spark=spark)
    df = spark.createDataFrame([("a", 1.0)], "name string, value double")
    with pytest.raises(ValueError, match="need key="):
        parallel.run_tasks(square, df, spark=spark)
    with pytest.raises(ValueError, match=r"\['ticker'\] are not in the DataFrame"):
        parallel.run_tasks(square, df, key="ticker", spark=spark)
    with pytest.raises(ValueError, match="not a valid DDL schema"):
        parallel.run_tasks(square, {"a": 1}, result_schema="square lng lng", spark=spark)
    with pytest.raises(ValueError, match="reserved"):
        parallel.run_tasks(square, {"a": 1}, result_schema="status string", spark=spark)


def test_the_child_process_finds_modules_on_relative_sys_path_entries(tmp_path, monkeypatch):
    """Executors put --py-files on sys.path relative to their working directory; the child runs elsewhere."""
    import importlib
    import sys

    from tfos_lib import process

    (tmp_path / "shipped").mkdir()
    (tmp_path / "shipped" / "shipped_module.py").write_text("def answer():\n    return 42\n")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend("shipped")  # relative, like "./tfos_lib.zip" on an executor
    monkeypatch.delitem(sys.modules, "shipped_module", raising=False)
    module = importlib.import_module("shipped_module")
    assert process.call_in_process(module.answer, workdir=str(tmp_path / "work")) == 42
    monkeypatch.delitem(sys.modules, "shipped_module")

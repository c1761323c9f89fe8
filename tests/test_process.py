"""The child-process runner (tfos_lib.process): shipping the caller's code, a quiet TensorFlow start."""

from __future__ import annotations

import functools
import importlib
import io
import os
import subprocess
import sys

import cloudpickle
import pytest

from tfos_lib import process
from tfos_lib.errors import ProcessFailed
from tfos_lib.tfenv import startup_noise_filter

# What TensorFlow prints while it starts. Only the logger's banner shows on every host: the oneDNN line
# needs a CPU TensorFlow turns oneDNN on for (AVX-512 VNNI or BF16), the CUDA lines a host without a GPU driver.
TENSORFLOW_STARTUP = ("oneDNN", "cuInit", "cudart_stub", "absl::InitializeLog")


def test_a_partial_of_a_function_from_a_module_nobody_installed_goes_by_value(tmp_path, monkeypatch):
    (tmp_path / "users_code").mkdir()
    (tmp_path / "users_code" / "__init__.py").write_text("")
    (tmp_path / "users_code" / "scaling.py").write_text("def scale(x, factor):\n    return x * factor\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("users_code", "users_code.scaling"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    scaling = importlib.import_module("users_code.scaling")

    data = process.pickle_with_code(functools.partial(scaling.scale, factor=3))

    assert "users_code" not in cloudpickle.list_registry_pickle_by_value()  # registered only while pickling
    (tmp_path / "call.pkl").write_bytes(data)
    # A fresh interpreter that cannot import users_code, like an executor.
    loader = "import sys, cloudpickle; print(cloudpickle.loads(open(sys.argv[1], 'rb').read())(14))"
    run = subprocess.run(
        [sys.executable, "-c", loader, str(tmp_path / "call.pkl")],
        capture_output=True, text=True, cwd="/", env={**os.environ, "PYTHONPATH": ""}, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "42"
    for name in ("users_code", "users_code.scaling"):
        monkeypatch.delitem(sys.modules, name)


def test_installed_and_tfos_lib_code_goes_by_reference():
    import json

    from tfos_lib import feed

    assert process._callers_package(json.dumps) is None
    assert process._callers_package(functools.partial(feed.plan_input, "x")) is None
    assert process._callers_package(pytest.raises) is None


def raise_value_error():
    raise ValueError("raised in the child on purpose")


def test_the_childs_traceback_reaches_the_caller(tmp_path):
    with pytest.raises(ProcessFailed) as caught:
        process.call_in_process(raise_value_error, workdir=str(tmp_path), stream=io.StringIO())
    assert "ValueError: raised in the child on purpose" in caught.value.detail
    assert "raise_value_error" in caught.value.detail and caught.value.returncode == 1


def slow_to_exit(marker: str) -> int:
    """Returns at once; its process's exit handler then takes 2 s and writes ``marker``."""
    import atexit
    import time

    def flush_at_exit():
        time.sleep(2)
        with open(marker, "w") as f:
            f.write("flushed")

    atexit.register(flush_at_exit)
    return 7


def test_the_value_returns_when_written_and_the_child_still_runs_its_exit_handlers(tmp_path):
    marker = tmp_path / "exit-handler-ran"
    child = process.ChildProcess(str(tmp_path), stream=io.StringIO())
    with child:
        assert child.run(slow_to_exit, (str(marker),)) == 7
        assert child.process.poll() is None and not marker.exists()  # returned before the child's exit
    # Leaving the context did not kill it: its exit handler finishes what it had to write.
    assert child.process.wait(timeout=120) == 0
    assert marker.read_text() == "flushed"


def add_in_tensorflow(a, b):
    import tfos_lib

    tf = tfos_lib.import_tensorflow()
    return float(tf.constant(a) + tf.constant(b))


@pytest.mark.parametrize("user_level", [None, "0"])
def test_a_tensorflow_child_starts_quietly_unless_the_user_asks(tmp_path, monkeypatch, user_level):
    if user_level is None:
        monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", user_level)
    output = io.StringIO()
    assert process.call_in_process(add_in_tensorflow, (1.0, 2.0), workdir=str(tmp_path), stream=output) == 3.0
    printed = [marker for marker in TENSORFLOW_STARTUP if marker in output.getvalue()]
    if user_level is None:
        assert printed == [], output.getvalue()
    else:
        assert "absl::InitializeLog" in printed, output.getvalue()  # the user's level wins: everything shows


def test_startup_noise_filter_keeps_warnings_and_a_gpu_processes_cuinit_error():
    cuinit = "E0000 00:00:1796017268.025815   10045 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n"
    onednn = "I0000 00:00:1796017265.400695   10045 port.cc:153] oneDNN custom operations are on.\n"
    warning = "W0000 00:00:1796017268.541451   10045 dataset.cc:997] Input of GeneratorDatasetOp will not be optimized\n"
    error = "E0000 00:00:1796017268.541451   10045 collective.cc:12] peer went away\n"
    banner = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    is_noise = startup_noise_filter({"TF_CPP_MIN_LOG_LEVEL": "1"})
    assert [is_noise(line) for line in (cuinit, onednn, banner, warning, error, "epoch 1\n")] == [
        True, True, True, False, False, False,
    ]
    on_gpu = startup_noise_filter({"TF_CPP_MIN_LOG_LEVEL": "1", "CUDA_VISIBLE_DEVICES": "0"})
    assert not on_gpu(cuinit) and on_gpu(onednn)
    assert not startup_noise_filter({"TF_CPP_MIN_LOG_LEVEL": "2"})(error)
    assert startup_noise_filter({"TF_CPP_MIN_LOG_LEVEL": "2"})(warning)
    everything = startup_noise_filter({"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert not any(everything(line) for line in (cuinit, onednn, banner))


@pytest.mark.parametrize("user_level", [None, "0"])
def test_tensorflow_imported_in_process_starts_quietly_unless_the_user_asks(user_level):
    """A Spark Python worker running inference imports TensorFlow itself: import_tensorflow filters fd 2 there."""
    code = ("import sys, tfos_lib; print('before', file=sys.stderr, flush=True); tf = tfos_lib.import_tensorflow(1); "
            "tf.constant(1.0) + 1.0; print('after', file=sys.stderr)")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if user_level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = user_level
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    printed = [marker for marker in TENSORFLOW_STARTUP if marker in run.stderr]
    assert run.stderr.startswith("before\n") and run.stderr.rstrip().endswith("after")  # the rest of stderr flows
    if user_level is None:
        assert printed == [], run.stderr
    else:
        assert "absl::InitializeLog" in printed, run.stderr  # the user's level wins: everything shows

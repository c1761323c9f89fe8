"""TensorFlow process environment: legacy Keras, logging, threads and devices. The only place that sets them.

Every process that imports TensorFlow for tfos_lib (the driver in the `local`
backend, each worker and task child process, Spark Python workers running
inference) must have ``TF_USE_LEGACY_KERAS=1`` in its environment *before* the
first ``import tensorflow``: with Keras 3, ``model.fit`` under
``MultiWorkerMirroredStrategy`` fails ("Attempt to convert a value
(PerReplica...)"), while tf-keras 2.x works. Importing ``tfos_lib`` sets the
variable for the current process; :func:`import_tensorflow` checks it held.

Threads: :func:`task_env` is the environment of a child process given N cores
(before TensorFlow starts), :func:`configure_threads` sizes the pools of a
TensorFlow already imported (a Spark Python worker, the ``local`` backend).

Quiet start: TensorFlow 2.21 writes its start-up lines (oneDNN, "Could not find
cuda drivers", and on a host without a GPU driver ``E ... failed call to cuInit``)
before its logger has read ``TF_CPP_MIN_LOG_LEVEL``, so the variable alone does
not silence them, and the cuInit line is logged as an error, which only level 3
(no errors at all) would hide. :func:`startup_noise_filter` applies the level to
those lines: in the output of the child processes tfos_lib starts (their parent
reads it), and, where TensorFlow starts in a process tfos_lib did not start (a
Spark Python worker running inference, the ``local`` backend), on the way out of
that process while :func:`import_tensorflow` imports it and probes its devices.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping

#: Environment every TensorFlow process started by tfos_lib gets.
TF_ENV = {
    "TF_USE_LEGACY_KERAS": "1",
    # TensorFlow's C++ INFO lines (oneDNN, CUDA stubs) drown the job's own log; warnings
    # and errors stay. A value the user exported wins (0 shows everything).
    "TF_CPP_MIN_LOG_LEVEL": "1",
}

#: Set in a child process that imported TensorFlow before its call arrived: when the import finished
#: (``time.time()``), for the worker's start-up timeline (:attr:`tfos_lib.context.WorkerContext.timeline`).
TENSORFLOW_READY_AT = "TFOS_TENSORFLOW_READY_AT"


def apply_tf_env(environ: dict | None = None) -> None:
    """Sets :data:`TF_ENV` in ``environ`` (default ``os.environ``), keeping values the user set.

    ``TF_USE_LEGACY_KERAS`` is forced to ``1``: nothing in tfos_lib works with Keras 3.
    """
    environ = os.environ if environ is None else environ
    for key, value in TF_ENV.items():
        environ.setdefault(key, value)
    environ["TF_USE_LEGACY_KERAS"] = "1"


def gpu_env(gpus) -> dict[str, str]:
    """Environment that shows a worker only the GPUs Spark assigned to its task.

    Args:
        gpus: the task's GPU addresses (from ``TaskContext.resources()``), or None
            when the task requested no GPUs (nothing is changed then).
    """
    if gpus is None:
        return {}
    return {
        "CUDA_VISIBLE_DEVICES": ",".join(gpus),
        # Workers sharing a host must not each grab all of its GPU memory up front.
        "TF_FORCE_GPU_ALLOW_GROWTH": "true",
    }


def task_gpus(task_context) -> tuple[str, ...] | None:
    """The GPU addresses Spark assigned to a task, or None if it has no GPU resource."""
    resources = task_context.resources() if task_context is not None else {}
    if "gpu" not in resources:
        return None
    return tuple(resources["gpu"].addresses)


def import_tensorflow(num_cpus: int | None = None):
    """Imports TensorFlow with legacy Keras in force and returns the module.

    Args:
        num_cpus: the CPUs Spark gave this task; when given, TensorFlow's thread pools
            are sized to it (:func:`configure_threads`). None leaves them alone.

    Raises:
        RuntimeError: if TensorFlow was already imported with Keras 3 as ``tf.keras``
            (some code imported it before tfos_lib could set ``TF_USE_LEGACY_KERAS=1``).
    """
    already_imported = "tensorflow" in sys.modules
    apply_tf_env()
    with _first_import:  # one thread starts TensorFlow (and redirects fd 2); the others wait for it
        if "tensorflow" in sys.modules:
            import tensorflow as tf
        else:
            with _startup_noise_dropped():
                import tensorflow as tf

                tf.config.list_physical_devices()  # the CUDA probe (cuInit) happens here, inside the window

    # Where Model comes from, not tf.keras.__name__: MLflow's TensorFlow flavour renames the module to tensorflow.keras.
    if not getattr(getattr(tf.keras, "Model", None), "__module__", "").startswith("tf_keras"):
        raise RuntimeError(
            "tf.keras is Keras 3, but tfos_lib needs legacy Keras (tf-keras 2.x): "
            "MultiWorkerMirroredStrategy training fails under Keras 3. "
            + (
                "TensorFlow was imported before tfos_lib set TF_USE_LEGACY_KERAS=1; "
                "import tfos_lib first or export TF_USE_LEGACY_KERAS=1."
                if already_imported
                else "Install tf-keras matching your TensorFlow (pip install 'tf-keras==2.21.*')."
            )
        )
    if num_cpus:
        configure_threads(tf, num_cpus)
    return tf


def _pool_sizes(num_cpus: int) -> tuple[int, int]:
    """(intra-op, inter-op) threads for ``num_cpus`` cores: both ``num_cpus``.

    A second inter-op thread on a 1-core task let two ops run at once, so a "1-core"
    worker used two cores (measured: the CNN ran 1.2-1.4x faster than 1-thread Keras)
    and two such workers oversubscribed a 2-core host. Input still overlaps compute:
    tf.data prefetches in its own threads (:func:`dataset_options`).
    """
    return max(1, num_cpus), max(1, num_cpus)


def dataset_options(tf, num_cpus: int | None):
    """``tf.data.Options`` whose thread pool is the task's ``num_cpus`` cores (None: TensorFlow's default,
    one thread per core of the host)."""
    options = tf.data.Options()
    if num_cpus:
        options.threading.private_threadpool_size = max(1, num_cpus)
    return options


def thread_settings(tf) -> dict[str, int | str | None]:
    """The thread settings in effect in this process (what a worker reports and the benchmarks print)."""
    return {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        **{name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")},
    }


def task_env(num_cpus: int, gpus: tuple[str, ...] | None = None, spark_task_cpus: int | None = None) -> dict[str, str]:
    """Environment of a child TensorFlow process given ``num_cpus`` cores and Spark's GPUs for its task.

    N tasks on one host must not each start one thread per core of the whole
    machine. Values the user exported win, except the GPU list Spark assigned
    (see :func:`gpu_env`) and PySpark's own default: its workers get
    ``OMP_NUM_THREADS=<spark_task_cpus>`` when the user set none, which gives way
    when ``num_cpus`` differs (a lone worker in local mode).
    """
    intra, inter = _pool_sizes(num_cpus)
    threads = {
        "TF_NUM_INTRAOP_THREADS": str(intra),
        "TF_NUM_INTEROP_THREADS": str(inter),
        "OMP_NUM_THREADS": str(intra),
        "OPENBLAS_NUM_THREADS": str(intra),
        "MKL_NUM_THREADS": str(intra),
    }
    exported = dict(os.environ)
    if spark_task_cpus is not None and exported.get("OMP_NUM_THREADS") == str(spark_task_cpus):
        del exported["OMP_NUM_THREADS"]  # PySpark's default, not the user's
    env = {name: exported.get(name, value) for name, value in threads.items()}
    env.update(gpu_env(gpus))
    return env


def configure_threads(tf, num_cpus: int | None) -> None:
    """Limits TensorFlow's thread pools to the CPUs Spark gave this task.

    Without this, every worker on a host starts one thread per core of the whole
    machine, and N workers on one host oversubscribe it N times.
    """
    if not num_cpus or num_cpus < 1:
        return
    intra, inter = _pool_sizes(num_cpus)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        # TensorFlow was already initialised in this process; the pools are fixed.
        pass


# The noise rule, kept as source because two processes run it: this module (for the output of the
# child processes tfos_lib starts, see tfos_lib.process) and the filter process of
# _startup_noise_dropped, which imports nothing but the standard library (an import error there
# would swallow TensorFlow's last words). TF_CPP_MIN_LOG_LEVEL 1 drops I lines, 2 W too, 3 E too.
_NOISE_RULE = r"""
import re

# A line of TensorFlow's C++ logger (absl format): "I0000 00:00:1796017265.400695   10045 port.cc:153] ...".
CPP_LOG_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [^\]\s]+\] ")
LOGGER_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def is_noise(line, level, given_gpus):
    if level < 1:
        return False
    if line.startswith(LOGGER_BANNER):
        return True
    match = CPP_LOG_LINE.match(line)
    if match is None:
        return False
    if "failed call to cuInit" in line and not given_gpus:
        return True
    return "IWEF".index(match.group(1)) < level
"""
_noise_rule: dict = {}
exec(_NOISE_RULE, _noise_rule)

# The filter process: stdin to stdout without the noise; argv carries the level and whether GPUs were given.
_FILTER_SCRIPT = _NOISE_RULE + r"""
import sys

level, given_gpus = int(sys.argv[1]), sys.argv[2] == "1"
out = sys.stdout.buffer
for raw in sys.stdin.buffer:
    if not is_noise(raw.decode("utf-8", "replace"), level, given_gpus):
        out.write(raw)
        out.flush()
"""


def _log_level(environ: Mapping[str, str]) -> int:
    """``TF_CPP_MIN_LOG_LEVEL`` as TensorFlow reads it (unset or not a number: 0, everything shown)."""
    try:
        return int(environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def _given_gpus(environ: Mapping[str, str]) -> bool:
    return environ.get("CUDA_VISIBLE_DEVICES", "").strip() not in ("", "-1")


def startup_noise_filter(environ: Mapping[str, str]) -> Callable[[str], bool]:
    """``is_noise(line)`` for the output of a TensorFlow process started with ``environ``.

    TensorFlow's C++ lines below the process's ``TF_CPP_MIN_LOG_LEVEL`` are noise
    (TensorFlow drops them itself once its logger is set up; the start-up ones come
    earlier), and so is the logger's banner about that. The ``failed call to
    cuInit`` error is noise in a process that was given no GPU (``CUDA_VISIBLE_DEVICES``
    unset, empty or ``-1``): TensorFlow probes for a CUDA driver the CPU-only host
    does not have. With ``TF_CPP_MIN_LOG_LEVEL=0`` nothing is noise.
    """
    level, given_gpus, rule = _log_level(environ), _given_gpus(environ), _noise_rule["is_noise"]
    return lambda line: rule(line, level, given_gpus)


_first_import = threading.Lock()


@contextlib.contextmanager
def _startup_noise_dropped() -> Iterator[None]:
    """Sends this process's stderr (fd 2) through a filter process that drops TensorFlow's start-up noise.

    TensorFlow's C++ code writes to fd 2 directly, so only a pipe can filter it. The
    reader is a separate process so that, should TensorFlow crash the interpreter
    during import, every line written until then still reaches the real stderr. It
    drops exactly what :func:`startup_noise_filter` would. Does nothing when nothing
    would be dropped (``TF_CPP_MIN_LOG_LEVEL=0``) or the pipe cannot be set up.
    Callers hold ``_first_import``: fd 2 is process-wide.
    """
    level = _log_level(os.environ)
    if level < 1:
        yield
        return
    real_stderr = read_end = write_end = None
    try:
        real_stderr = os.dup(2)
        read_end, write_end = os.pipe()
        reader = subprocess.Popen([sys.executable, "-S", "-c", _FILTER_SCRIPT, str(level), "1" if _given_gpus(os.environ) else "0"], stdin=read_end,
                                  stdout=real_stderr)  # close_fds (the default): the reader holds no write end
    except OSError:
        for fd in (real_stderr, read_end, write_end):
            if fd is not None:
                os.close(fd)
        yield
        return
    os.close(read_end)
    if sys.stderr is not None:
        sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        if sys.stderr is not None:
            sys.stderr.flush()
        os.dup2(real_stderr, 2)  # closes the pipe's last write end: the reader sees EOF and exits
        os.close(real_stderr)
        try:
            reader.wait(timeout=30)
        except subprocess.TimeoutExpired:
            reader.kill()

"""TensorFlow process environment: legacy Keras, threads and devices.

Every process that imports TensorFlow for tfos_lib (the driver in the `local`
backend, each worker subprocess) must have ``TF_USE_LEGACY_KERAS=1`` in its
environment *before* the first ``import tensorflow``: with Keras 3, ``model.fit``
under ``MultiWorkerMirroredStrategy`` fails ("Attempt to convert a value
(PerReplica...)"), while tf-keras 2.x works. Importing ``tfos_lib`` sets the
variable for the current process; :func:`import_tensorflow` checks it held.
"""

from __future__ import annotations

import os
import sys

#: Environment every TensorFlow process started by tfos_lib gets.
TF_ENV = {
    "TF_USE_LEGACY_KERAS": "1",
    # TensorFlow's C++ INFO lines (oneDNN, CUDA stubs) drown the job's own log.
    "TF_CPP_MIN_LOG_LEVEL": "1",
}


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


def import_tensorflow():
    """Imports TensorFlow with legacy Keras in force and returns the module.

    Raises:
        RuntimeError: if TensorFlow was already imported with Keras 3 as ``tf.keras``
            (some code imported it before tfos_lib could set ``TF_USE_LEGACY_KERAS=1``).
    """
    already_imported = "tensorflow" in sys.modules
    apply_tf_env()
    import tensorflow as tf

    if not getattr(tf.keras, "__name__", "").startswith("tf_keras"):
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
    return tf


def configure_threads(tf, num_cpus: int | None) -> None:
    """Limits TensorFlow's thread pools to the CPUs Spark gave this task.

    Without this, every worker on a host starts one thread per core of the whole
    machine, and N workers on one host oversubscribe it N times.
    """
    if not num_cpus or num_cpus < 1:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(num_cpus)
        tf.config.threading.set_inter_op_parallelism_threads(max(2, num_cpus))
    except RuntimeError:
        # TensorFlow was already initialised in this process; the pools are fixed.
        pass

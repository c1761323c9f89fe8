"""tfos_lib: data-parallel TensorFlow training on Spark executors.

The one entry point is :func:`run`::

    import tfos_lib

    def train_fn(ctx, config):
        tf = tfos_lib.import_tensorflow()           # TensorFlow only inside workers
        with ctx.strategy().scope():                # MultiWorkerMirroredStrategy
            model = ...
        model.fit(ctx.distributed_dataset("train", "features", "label", global_batch_size=128),
                  steps_per_epoch=ctx.data("train").steps_per_epoch(128), epochs=config.epochs)
        return {"loss": ...}                         # the chief's value reaches the driver

    result = tfos_lib.run(train_fn, config, num_workers=2, inputs={"train": df})

Importing tfos_lib sets ``TF_USE_LEGACY_KERAS=1`` in this process (before anything
imports TensorFlow) and imports neither TensorFlow nor Spark. The errors users
catch (:class:`WorkerError`, :class:`LauncherTimeout`, :class:`TaskFailures`) live
in :mod:`tfos_lib.errors` and are re-exported here.
"""

from tfos_lib.tfenv import apply_tf_env as _apply_tf_env

_apply_tf_env()

from tfos_lib.context import WorkerContext  # noqa: E402
from tfos_lib.errors import LauncherTimeout, TaskFailures, WorkerError  # noqa: E402
from tfos_lib.feed import Input  # noqa: E402
from tfos_lib.launcher import BACKENDS, run  # noqa: E402
from tfos_lib.monitor import Timeouts  # noqa: E402
from tfos_lib.tfenv import import_tensorflow  # noqa: E402
from tfos_lib.version import __version__  # noqa: E402

__all__ = [
    "BACKENDS",
    "Input",
    "LauncherTimeout",
    "TaskFailures",
    "Timeouts",
    "WorkerContext",
    "WorkerError",
    "__version__",
    "import_tensorflow",
    "run",
]

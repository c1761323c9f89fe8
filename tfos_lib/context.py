"""The object every ``train_fn`` receives (who am I, where do I write, what is my data), and how a worker calls it.

Every backend describes a worker with a :class:`WorkerSpec` and calls
:func:`run_worker` with it: in this process (``local``, ``tfos``) or in a child
process (``barrier``, through :mod:`tfos_lib.process`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field

from tfos_lib import runstate, storage
from tfos_lib.feed import InputPlan, ShardData
from tfos_lib.monitor import Reporter

log = logging.getLogger("tfos_lib")


@dataclass
class WorkerContext:
    """Runs on each worker. Handed to ``train_fn(ctx, *args)`` by :func:`tfos_lib.run`.

    Attributes:
        rank: this worker's index, 0 .. ``num_workers - 1``; rank 0 is the chief.
        num_workers: the number of workers training together.
        output_dir: where the job writes its results (the chief writes the model
            and checkpoints; other workers should write only under
            :meth:`worker_dir`). Always a local directory: when the run's output
            is a URI (:attr:`output_uri`), a temporary one whose content is copied
            there when ``train_fn`` returns (checkpoints: after every save).
        backend: ``"barrier"``, ``"tfos"`` or ``"local"``.
        num_cpus: CPU cores Spark gave this worker; TensorFlow's thread pools are
            sized to it.
        inputs: this worker's share of each input DataFrame, by name.
        attempt: 0 on the first launch, n on the n-th restart after a failure.
        reporter: sends progress to the driver (see :mod:`tfos_lib.monitor`).
        addresses: every worker's ``host:port`` by rank, as the rendezvous gathered them
            (barrier, tfos); empty on the local backend. TensorFlow's server binds the
            port only when :meth:`strategy` is created, so a worker that trains with
            something else (e.g. YDF's distributed workers, :mod:`tfos_lib.ml.forest`)
            may listen on its own port instead.
    """

    rank: int
    num_workers: int
    output_dir: str
    backend: str
    num_cpus: int = 1
    inputs: dict[str, ShardData] = field(default_factory=dict)
    attempt: int = 0
    #: GPU addresses Spark assigned to this worker (also its CUDA_VISIBLE_DEVICES); None without GPU scheduling.
    gpus: tuple[str, ...] | None = None
    reporter: Reporter = field(default_factory=lambda: Reporter(None, 0), repr=False)
    #: The run's output location as given (a local path or a URI such as ``s3a://bucket/dir``).
    output_uri: str | None = None
    #: The job's options that a checkpoint must match to be resumed (see :mod:`tfos_lib.runstate`).
    options: dict | None = None
    #: The epoch (0-based) the first ``fit`` with :meth:`callbacks` started at: > 0 after
    #: resuming from a checkpoint. None before ``fit``.
    resumed_from_epoch: int | None = None
    addresses: tuple[str, ...] = ()
    #: Training steps per TensorFlow call in :meth:`fit` (the job's ``--steps-per-execution``).
    steps_per_execution: int = 1
    #: ``"float16"``: gradients travel between workers as float16 (the job's ``--all-reduce-precision``).
    all_reduce_precision: str = "float32"
    #: When this worker passed each stage of its start (``time.time()`` by name, in order): what the
    #: backend recorded (e.g. ``task_started``, ``shard_spilled``, ``workers_met``), then
    #: ``tensorflow_imported`` and ``train_fn_called``. The benchmarks print it.
    timeline: dict[str, float] = field(default_factory=dict)
    _strategy: object = field(default=None, repr=False)

    @property
    def is_chief(self) -> bool:
        """True on rank 0, the worker that saves models and writes metrics."""
        return self.rank == 0

    @property
    def checkpoint_dir(self) -> str:
        """Where the chief keeps the state a restarted run resumes from."""
        return os.path.join(self.output_dir, "checkpoints")

    def tf(self):
        """The TensorFlow module (imported with legacy Keras, thread pools sized to :attr:`num_cpus`)."""
        from tfos_lib.tfenv import import_tensorflow

        return import_tensorflow(self.num_cpus)

    def callbacks(self, global_batch_size: int, checkpoint_every_steps: int | None = None, tensorboard: bool = True,
                  held_out=None):
        """Keras callbacks for ``model.fit``: checkpoint/resume, held-out scores, live progress, TensorBoard.

        See :func:`tfos_lib.callbacks.make_callbacks`.
        """
        from tfos_lib.callbacks import make_callbacks

        return make_callbacks(self, global_batch_size, checkpoint_every_steps, tensorboard, held_out)

    def progress_callback(self, global_batch_size: int):
        """Only the heartbeats (the driver's stall watch) and the chief's epoch lines, for a ``fit`` without
        :meth:`callbacks`' checkpoints and TensorBoard."""
        from tfos_lib.callbacks import _progress_callback

        return _progress_callback(self.tf(), self, global_batch_size)

    def fit(self, model, dataset, *, epochs: int, steps_per_epoch: int, callbacks) -> tuple[dict[str, list[float]], float]:
        """``model.fit`` set up as in :meth:`fitting`, without Keras' own progress bar (the callbacks report to
        the driver).

        Returns the ``History`` as plain lists per metric, and the seconds training took.
        """
        with self.fitting(model, steps_per_epoch) as first_callbacks:
            started = time.perf_counter()
            history = model.fit(dataset, epochs=epochs, steps_per_epoch=steps_per_epoch,
                                callbacks=[*first_callbacks, *callbacks], verbose=0)
            seconds = time.perf_counter() - started
        return {name: [float(v) for v in values] for name, values in history.history.items()}, seconds

    @contextlib.contextmanager
    def fitting(self, model, steps_per_epoch: int):
        """Sets ``model`` up for training as :meth:`fit` does; yields the callbacks ``fit`` must call first.

        * :attr:`steps_per_execution` steps per TensorFlow call: on a small model the
          per-step Python costs more than the step itself. Callbacks see every N-th step
          (:meth:`callbacks` accounts for it).
        * On several workers, no collective beyond the gradients' at each step: the
          logged values are the chief's (``distribute_reduction_method = "first"``; Keras'
          default sums them across workers once more), the training step reads each
          metric from this worker's own state, and the metrics are made global once, after
          each epoch's last step (:func:`metrics_global_once_per_epoch`). Keras makes them
          global at every step: two all-reduces per metric per step, more than the
          gradients' own on a small model.
        * The gradients travel as float16 when :attr:`all_reduce_precision` says so.

        Leaving the block gives the model back its own training step.
        """
        set_steps_per_execution(model, self.steps_per_execution)
        if self.num_workers == 1:
            yield []
            return
        model.distribute_reduction_method = "first"
        if self.all_reduce_precision == "float16":
            send_gradients_as_float16(self.tf(), model.optimizer)
        with metrics_global_once_per_epoch(self.tf(), model, steps_per_epoch) as callback:
            yield [callback]

    def strategy(self):
        """The ``tf.distribute`` strategy all workers train under (created once).

        ``MultiWorkerMirroredStrategy`` with two or more workers. One worker pays for no
        collectives: TensorFlow's default strategy (or ``MirroredStrategy`` over its GPUs
        when it has several). Job code is the same at any scale.
        """
        if self._strategy is None:
            tf = self.tf()
            if self.num_workers > 1:
                self._strategy = tf.distribute.MultiWorkerMirroredStrategy()
            elif len(tf.config.list_logical_devices("GPU")) > 1:
                self._strategy = tf.distribute.MirroredStrategy()
            else:
                self._strategy = tf.distribute.get_strategy()
        return self._strategy

    def data(self, name: str) -> ShardData:
        """This worker's rows of input ``name``."""
        if name not in self.inputs:
            raise KeyError(f"no input named {name!r}; run() was given inputs {sorted(self.inputs)}.")
        return self.inputs[name]

    def distributed_dataset(self, name: str, features, label=None, *, global_batch_size: int, **options):
        """:meth:`ShardData.dataset` wrapped for ``model.fit`` under :meth:`strategy`.

        Each worker feeds its own per-worker batches; TensorFlow does not re-split
        them (``distribute_datasets_from_function``), so a step consumes exactly
        ``global_batch_size`` rows across the cluster.
        """
        shard = self.data(name)
        return self.strategy().distribute_datasets_from_function(
            lambda _: shard.dataset(features, label, global_batch_size=global_batch_size, **options)
        )

    def worker_dir(self) -> str:
        """A directory for this worker's own files (non-chief workers must not write where the chief does)."""
        path = self.output_dir if self.is_chief else os.path.join(self.output_dir, "_workers", str(self.rank))
        os.makedirs(path, exist_ok=True)
        return path

    def phase(self, name: str) -> None:
        """Tells the driver this worker entered step ``name`` (e.g. ``"evaluate"``) outside ``fit``.

        Each report restarts the driver's clock for work outside ``fit``
        (:attr:`~tfos_lib.monitor.Timeouts.phase`).
        """
        self.reporter.send("phase", name=name)

    def log(self, message: str) -> None:
        """Prints one line tagged with this worker's rank (reaches the executor log)."""
        print(f"[tfos_lib rank {self.rank}/{self.num_workers}] {message}", file=sys.stderr, flush=True)


@dataclass
class WorkerSpec:
    """Everything a worker needs to build its :class:`WorkerContext` and call ``train_fn`` (picklable)."""

    rank: int
    num_workers: int
    output_dir: str
    backend: str
    num_cpus: int
    tf_config: str | None
    #: input name -> (its plan, this worker's Arrow file or None when it got no rows).
    inputs: dict[str, tuple[InputPlan, str | None]]
    payload: bytes  # cloudpickle of (train_fn, args), from tfos_lib.process.pickle_with_code
    monitor_address: str | None = None
    attempt: int = 0
    #: GPU addresses Spark assigned to this task (``TaskContext.resources()["gpu"]``);
    #: None when the task has no GPU resource (TensorFlow then sees what the host has).
    gpus: tuple[str, ...] | None = None
    #: Start-up stages the backend passed before the call (see :attr:`WorkerContext.timeline`).
    timeline: dict[str, float] = field(default_factory=dict)


def run_worker(spec: WorkerSpec):
    """Calls ``train_fn(ctx, *args)`` in this process and returns its value. Runs on the worker.

    ``TF_CONFIG`` must be in the environment before the strategy is created, so it is
    set here (or removed: a one-worker run must not inherit a stale cluster).
    """
    import cloudpickle

    from tfos_lib.tfenv import TENSORFLOW_READY_AT, apply_tf_env

    timeline = dict(spec.timeline)
    if TENSORFLOW_READY_AT in os.environ:
        timeline["tensorflow_imported"] = float(os.environ[TENSORFLOW_READY_AT])
    apply_tf_env()
    if spec.tf_config:
        os.environ["TF_CONFIG"] = spec.tf_config
    else:
        os.environ.pop("TF_CONFIG", None)
    train_fn, args = cloudpickle.loads(spec.payload)
    config = runstate.job_config(args)
    reporter = Reporter(spec.monitor_address, spec.rank, spec.attempt)
    reporter.send("started", host=socket.gethostname(), attempt=spec.attempt)
    remote = storage.is_remote(spec.output_dir)
    # TensorFlow 2.21 cannot write to object stores: it writes here and the files are copied (storage).
    output_dir = tempfile.mkdtemp(prefix=f"tfos-output-{spec.rank}-") if remote else spec.output_dir
    if remote:
        # Every worker restores from the chief's checkpoint (BackupAndRestore reads it on all of them).
        storage.download(storage.join(spec.output_dir, *CHIEF_CHECKPOINT), os.path.join(output_dir, *CHIEF_CHECKPOINT))
    ctx = WorkerContext(
        rank=spec.rank,
        num_workers=spec.num_workers,
        output_dir=output_dir,
        output_uri=spec.output_dir,
        options=runstate.resumable_options(args),
        backend=spec.backend,
        num_cpus=spec.num_cpus,
        inputs={
            name: ShardData(plan, path, spec.num_workers, spec.num_cpus, getattr(config, "shuffle_buffer", 0))
            for name, (plan, path) in spec.inputs.items()
        },
        steps_per_execution=getattr(config, "steps_per_execution", 1),
        all_reduce_precision=getattr(config, "all_reduce_precision", "float32"),
        timeline=timeline,
        attempt=spec.attempt,
        gpus=spec.gpus,
        reporter=reporter,
        addresses=cluster_addresses(spec.tf_config),
    )
    timeline["train_fn_called"] = time.time()
    try:
        value = train_fn(ctx, *args)
        if remote:
            storage.upload(output_dir, spec.output_dir, exclude=("checkpoints",))
        reporter.send("done")
        return value
    finally:
        reporter.close()
        if remote:
            shutil.rmtree(output_dir, ignore_errors=True)


def cluster_addresses(tf_config: str | None) -> tuple[str, ...]:
    """Every worker's ``host:port`` by rank from a ``TF_CONFIG``: the chief first when it has its own job
    (TensorFlowOnSpark's clusters have one), then the workers."""
    if not tf_config:
        return ()
    cluster = json.loads(tf_config)["cluster"]
    return tuple(cluster.get("chief", []) + cluster.get("worker", []))


def set_steps_per_execution(model, steps: int) -> None:
    """What ``model.compile(steps_per_execution=steps)`` sets, on a model already compiled (tf-keras 2.x)."""
    if steps < 1:
        raise ValueError(f"steps_per_execution must be >= 1; got {steps}.")
    current = getattr(model, "_steps_per_execution", None)
    if current is None or int(current.numpy()) == steps:
        return
    with model.distribute_strategy.scope():
        model._configure_steps_per_execution(steps)
    model.train_function = None  # rebuilt by fit() with the new loop


@contextlib.contextmanager
def metrics_global_once_per_epoch(tf, model, steps_per_epoch: int):
    """Within: ``model``'s training step logs this worker's own metrics; the yielded callback makes each epoch's
    logs global.

    tf-keras reads each metric's result through the strategy, which all-reduces the
    metric's state at every step. Here the training step (while ``fit`` traces it) reads
    the metric class's own ``result``, without Keras' cross-worker wrapper, so a step's
    logs (heartbeats, per-batch TensorBoard scalars) are the chief's own. After an
    epoch's last step, every worker computes the global results together (before any
    evaluation resets the metrics), and at the epoch's end the callback puts them in the
    logs, where later callbacks and the ``History`` read them: put it first in ``fit``'s
    list. Evaluation is left as Keras does it.
    """
    keras_results, keras_train_step = model.get_metrics_result, model.train_step
    tracing_train_step = False

    def get_metrics_result():
        if not tracing_train_step:
            return keras_results()
        results = {}
        for metric in model.metrics:
            value = type(metric).result(metric)  # the class's method: this worker's state, no collective
            results.update(value if isinstance(value, dict) else {metric.name: value})
        return results

    def train_step(data):
        nonlocal tracing_train_step
        tracing_train_step = True
        try:
            return keras_train_step(data)
        finally:
            tracing_train_step = False

    strategy = model.distribute_strategy

    @tf.function
    def global_results():
        return strategy.experimental_local_results(strategy.run(keras_results))[0]

    class GlobalEpochMetrics(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.results: dict[str, float] = {}

        def on_epoch_begin(self, epoch, logs=None):
            self.results = {}

        def on_train_batch_end(self, batch, logs=None):
            if batch == steps_per_epoch - 1:  # the epoch's last step: on every worker, as collectives need
                self.results = {name: float(value) for name, value in global_results().items()}

        def on_epoch_end(self, epoch, logs=None):
            if not self.results:  # the data ran out before the epoch's last step (Keras warns and stops)
                log.warning("epoch %d ended before its step %d: its logged metrics are this worker's own, not "
                            "global", epoch + 1, steps_per_epoch)
            elif logs is not None:
                logs.update({name: value for name, value in self.results.items() if name in logs})

    model.train_step, model.get_metrics_result = train_step, get_metrics_result
    model.train_function = None  # traced again, with the local reads
    try:
        yield GlobalEpochMetrics()
    finally:
        del model.train_step, model.get_metrics_result
        model.train_function = None


def send_gradients_as_float16(tf, optimizer) -> None:
    """Makes ``optimizer`` all-reduce its dense float32 gradients as float16: half the bytes between workers.

    tf-keras' optimizers aggregate through ``aggregate_gradients``, the method it names
    for custom aggregation. A gradient beyond float16's range (65504) would become inf:
    with loss scales as usual that does not happen, but it is why this is an option.
    """
    if getattr(optimizer, "_tfos_float16_all_reduce", False):
        return
    original = optimizer.aggregate_gradients  # for sparse (embedding) and non-float32 gradients

    def aggregate_gradients(grads_and_vars):
        pairs = list(grads_and_vars)
        dense = [i for i, (g, _) in enumerate(pairs) if isinstance(g, tf.Tensor) and g.dtype == tf.float32]
        others = [i for i, (g, _) in enumerate(pairs) if g is not None and i not in dense]
        out = list(pairs)
        if dense:
            reduced = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, [tf.cast(pairs[i][0], tf.float16) for i in dense])
            for i, g in zip(dense, reduced):
                out[i] = (tf.cast(g, tf.float32), pairs[i][1])
        if others:
            for i, pair in zip(others, original([pairs[i] for i in others])):
                out[i] = pair
        return out

    optimizer.aggregate_gradients = aggregate_gradients
    optimizer._tfos_float16_all_reduce = True


#: Where tf-keras' BackupAndRestore keeps the chief's checkpoint, under the output directory.
CHIEF_CHECKPOINT = ("checkpoints", "chief")

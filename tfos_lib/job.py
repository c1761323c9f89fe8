"""What every job shares: its options, config parsing, the Spark session, the metrics envelope.

A job's config is a frozen dataclass. It extends :class:`JobConfig` (the options
every job has) or, when the job starts TensorFlow workers through
:func:`launch`, :class:`LaunchConfig` or :class:`TrainingConfig`, so that
``--help`` lists only options the job uses. The command line is generated from
the fields (``num_workers`` -> ``--num-workers``) and the help shows each
default. Each field is declared with :func:`option`, whose bounds and choices
:meth:`JobConfig.__post_init__` checks for every field of every subclass.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import logging
import math
import operator
import os
import signal
import sys
import threading
import time
import types
import typing
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Sequence, TypeVar

from tfos_lib.launcher import BACKENDS

C = TypeVar("C", bound="JobConfig")

# The metadata keys option() writes; a subclass that redeclares a field inherits the ones it does not set.
_CHECKS = ("min", "max", "greater_than", "less_than", "choices")


def option(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    greater_than: float | None = None,
    less_than: float | None = None,
    choices: Sequence | None = None,
    command_line: bool = True,
):
    """A config field: its default, its ``--help`` text and the values it accepts.

    ``min``/``max`` are inclusive bounds, ``greater_than``/``less_than`` exclusive
    ones; ``choices`` lists the accepted values. ``None`` (for an optional field)
    passes every check. Beyond what is declared here, every float must be finite
    and every string non-empty. A subclass that redeclares a field (to change its
    default or help) keeps the bounds and choices of the base class unless it
    gives its own. ``command_line=False`` keeps an inherited field off the command
    line of a job that has no use for it (its default stays).
    """
    checks = {"min": min, "max": max, "greater_than": greater_than, "less_than": less_than,
              "choices": tuple(choices) if choices is not None else None}
    metadata = {"help": help, "command_line": command_line,
                **{key: value for key, value in checks.items() if value is not None}}
    return dataclasses.field(default=default, metadata=metadata)


def option_spec(config_cls: type, name: str) -> dict:
    """The merged metadata of field ``name``: the subclass's help and default wins, bounds it omits are inherited."""
    spec: dict = {}
    for cls in reversed(config_cls.__mro__):
        declared = vars(cls).get("__dataclass_fields__", {}).get(name)
        if declared is None:
            continue
        own = dict(declared.metadata)
        if any(key in own for key in _CHECKS):
            # A redeclaration with its own checks replaces the inherited ones.
            spec = {k: v for k, v in spec.items() if k not in _CHECKS}
        spec.update(own)
    return spec


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


_BOUNDS = (("min", ">=", operator.ge), ("greater_than", ">", operator.gt),
           ("max", "<=", operator.le), ("less_than", "<", operator.lt))


def check_option(name: str, value: Any, spec: dict) -> None:
    """Raises ``ValueError`` naming ``--name``, the accepted values and ``value`` when ``value`` is out of ``spec``."""
    if value is None:
        return
    flag = _flag(name)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{flag} must be a finite number; got {value}.")
    if isinstance(value, str) and not value:
        raise ValueError(f"{flag} must not be empty; got ''.")
    if "choices" in spec and value not in spec["choices"]:
        raise ValueError(f"{flag} must be one of {list(spec['choices'])}; got {value!r}.")
    bounds = [(sign, spec[key]) for key, sign, holds in _BOUNDS if key in spec]
    if all(holds(value, spec[key]) for key, _, holds in _BOUNDS if key in spec):
        return
    if len(bounds) == 2 and {bounds[0][0], bounds[1][0]} in ({">=", "<="}, {">", "<"}):
        kind = "inclusive" if bounds[0][0] == ">=" else "exclusive"
        valid = f"between {_number(bounds[0][1])} and {_number(bounds[1][1])} ({kind})"
    else:
        valid = " and ".join(f"{sign} {_number(bound)}" for sign, bound in bounds)
    raise ValueError(f"{flag} must be {valid}; got {_number(value)}.")


@dataclass(frozen=True)
class JobConfig:
    """Options every job has. Jobs subclass this (or :class:`LaunchConfig`) and may redeclare a default."""

    data_dir: str | None = option(None, "directory with the real dataset; omitted: the job's offline default data")
    output_dir: str = option("output", "where metrics.json, the model and plots go")
    # numpy's and TensorFlow's seeds are unsigned 32-bit: anything else fails later, on the workers.
    seed: int = option(0, "random seed for splits, shuffling and initialisation", min=0, max=2**32 - 1)
    overwrite: bool = option(
        False, "start over: move an earlier run in --output-dir aside (to <dir>.replaced-<time>) first"
    )
    time_limit: float = option(0.0, "seconds the whole job may run before it is stopped (0: no limit)", min=0)
    mlflow: bool = option(
        False, "log the run to MLflow (MLFLOW_TRACKING_URI; experiment: the job's name): params, per-epoch "
        "metrics, results, plots, metrics.json and the model; needs the mlflow extra"
    )
    tensorboard: bool = option(
        False, "serve <output-dir>/tensorboard (the chief's logs) with TensorBoard on the driver while the job runs "
        "(prints the URL)"
    )

    def __post_init__(self):
        # One generic check for every field of every subclass; cross-field rules follow in subclasses.
        for f in dataclasses.fields(self):
            check_option(f.name, getattr(self, f.name), option_spec(type(self), f.name))


@dataclass(frozen=True)
class LaunchConfig(JobConfig):
    """Options of a job whose TensorFlow workers :func:`launch` starts, sharing one global batch."""

    num_workers: int = option(1, "TensorFlow workers (one Spark task slot each)", min=1)
    backend: str = option("barrier", "how workers are launched", choices=BACKENDS)
    batch_size: int = option(32, "global batch size (summed over workers)", min=1)
    max_restarts: int = option(
        0, "relaunch the workers this many times after a failure, resuming from the checkpoint", min=0
    )
    stall_timeout: float = option(
        600.0, "seconds a worker may go without finishing a training step before the job fails", min=1
    )

    def __post_init__(self):
        super().__post_init__()
        check_batch_split(self.batch_size, self.num_workers)


def check_batch_split(batch_size: int, num_workers: int) -> None:
    """Refuses a global batch that the workers cannot share equally (on the driver, before any worker starts)."""
    if batch_size % num_workers:
        lower = batch_size // num_workers * num_workers
        nearest = " or ".join(str(size) for size in (lower, lower + num_workers) if size > 0)
        raise ValueError(
            f"--batch-size {batch_size} must be a multiple of --num-workers {num_workers} (every worker takes an "
            f"equal share of the global batch); use --batch-size {nearest}, or change --num-workers."
        )


@dataclass(frozen=True)
class TrainingConfig(LaunchConfig):
    """Options of a job that trains a Keras model for epochs on its workers (``ctx.callbacks`` checkpoints)."""

    epochs: int = option(1, "passes over the training data", min=1)
    checkpoint_every_steps: int = option(
        0, "also checkpoint every N steps (0: at the end of every epoch only)", min=0
    )
    steps_per_execution: int = option(
        1, "training steps per TensorFlow call: >1 saves per-step overhead on small models (progress every N steps)",
        min=1,
    )
    all_reduce_precision: str = option(
        "float32", "precision of the gradients workers exchange: float16 halves the bytes of each all-reduce",
        choices=("float32", "float16"),
    )
    shuffle_buffer: int = option(
        0, "rows in each worker's shuffle buffer, streamed from its shard on disk (0: the whole shard in memory)",
        min=0,
    )


def _field_type(annotation) -> type:
    """The scalar type behind ``int``, ``str | None`` and friends."""
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing), {})  # annotations are strings under `from __future__`
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    return annotation


def command_line_fields(config_cls: type) -> list[dataclasses.Field]:
    """The fields of ``config_cls`` that are options of its command line."""
    return [f for f in dataclasses.fields(config_cls) if option_spec(config_cls, f.name).get("command_line", True)]


def build_parser(config_cls: type[C], description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one option per field of ``config_cls``."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False
    )
    for f in command_line_fields(config_cls):
        kind = _field_type(f.type)
        spec = option_spec(config_cls, f.name)
        kwargs = {"dest": f.name, "default": f.default, "help": spec.get("help", " ")}
        if "choices" in spec:
            kwargs["choices"] = spec["choices"]
        if kind is bool:
            parser.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kwargs)
        else:
            parser.add_argument(_flag(f.name), type=kind, **kwargs)
    return parser


def parse_config(config_cls: type[C], argv: Sequence[str] | None = None, description: str | None = None) -> C:
    """Parses ``argv`` into a ``config_cls``; unknown options are an error that lists the valid ones.

    Exits with status 2 (argparse's convention) on bad options or values.
    """
    parser = build_parser(config_cls, description)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--"]:  # `spark-submit job.py -- --epochs 2`: spark-submit passes the `--` on
        argv = argv[1:]
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        valid = ", ".join(_flag(f.name) for f in command_line_fields(config_cls))
        parser.error(f"unknown option(s) {' '.join(unknown)}. Valid options: {valid}.")
    try:
        return config_cls(**vars(args))
    except ValueError as error:
        parser.error(str(error))


def spark_session(app_name: str):
    """The job's SparkSession: spark-submit's settings, or ``local[*]`` when run as a plain script."""
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if not SparkConf().contains("spark.master"):
        builder = builder.master(os.environ.get("MASTER", "local[*]"))
    return builder.getOrCreate()


def launch(train_fn, cfg: LaunchConfig, inputs: dict, spark, extra_args: tuple = ()):
    """``tfos_lib.run(train_fn, cfg, *extra_args, ...)`` with the launcher options of ``cfg`` (driver side)."""
    from tfos_lib.launcher import run
    from tfos_lib.monitor import Timeouts

    return run(
        train_fn,
        cfg,
        *extra_args,
        num_workers=cfg.num_workers,
        backend=cfg.backend,
        inputs=inputs,
        output_dir=cfg.output_dir,
        spark=spark,
        max_restarts=cfg.max_restarts,
        timeouts=Timeouts(stall=cfg.stall_timeout, deadline=_time_limit["deadline"]),
    )


# The running job's --time-limit: when it ends (time.monotonic()), and whether it has run out.
_time_limit: dict = {"deadline": None, "expired": None}


def _time_up(seconds: float) -> None:
    """Runs when --time-limit expires: cancels Spark's jobs and interrupts the driver's main thread."""
    import _thread

    _time_limit["expired"] = seconds
    logging.getLogger("tfos_lib.job").error("--time-limit %g s reached: stopping the job", seconds)
    from pyspark import SparkContext

    sc = SparkContext._active_spark_context
    if sc is not None:
        sc.cancelAllJobs()
    # A real SIGINT interrupts a blocking call (sleep, a socket read); interrupt_main alone waits for it to return.
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        os.kill(os.getpid(), signal.SIGINT)
    else:
        _thread.interrupt_main()


def setup_logging() -> logging.Logger:
    """INFO lines from tfos_lib and jobs on stderr, with a timestamp."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True
    )
    logging.getLogger("py4j").setLevel(logging.WARNING)
    return logging.getLogger("tfos_lib.job")


def config_dict(config) -> dict:
    """The resolved config as plain JSON-ready values, for metrics.json."""
    return dataclasses.asdict(config)


class JobRun:
    """One run of a job on the driver: notes when it started, and writes metrics.json in the common envelope.

    Every job's metrics.json has the same top-level keys: ``job``, ``tfos_lib_version``,
    ``started_at`` (ISO 8601, UTC), ``wall_seconds``, ``config``, ``data`` (source and
    sizes), ``book_reference``, ``results`` (the job's own figures) and, for a run that
    trained on tfos_lib workers, ``num_workers`` and ``backend``.

    Args:
        job: The job's name (``jobs/<job>.py``).
        cfg: The job's parsed config.
        training: Whether the run trains on tfos_lib workers; default: whether ``cfg``
            has the launcher options (is a :class:`LaunchConfig`).
    """

    def __init__(self, job: str, cfg: JobConfig, training: bool | None = None):
        from tfos_lib import runstate, storage

        self.job = job
        self.cfg = cfg
        self.training = isinstance(cfg, LaunchConfig) if training is None else training
        self.started_at = datetime.now(timezone.utc)
        self._started = time.perf_counter()
        # One run per output directory, from now until this process ends (the launcher re-enters it).
        output_dir = storage.normalize(cfg.output_dir)
        if getattr(cfg, "overwrite", False):
            with runstate.RunLock(output_dir):  # never move a directory another run is using
                pass
            runstate.move_aside(output_dir)
        elif storage.exists(storage.join(output_dir, "metrics.json")) and not runstate.has_checkpoint(output_dir):
            logging.getLogger("tfos_lib.job").warning(
                "%s holds the results of an earlier run; this run replaces them (--overwrite moves them aside instead)",
                output_dir,
            )
        self._lock = runstate.RunLock(output_dir).acquire()
        atexit.register(self._lock.release)
        self.tracker = None
        if getattr(cfg, "mlflow", False):
            from tfos_lib.tracking import MlflowRun

            self.tracker = MlflowRun(job, config_dict(cfg))
        self.tensorboard = None
        if getattr(cfg, "tensorboard", False):
            from tfos_lib.tracking import TensorBoardServer

            self.tensorboard = TensorBoardServer(storage.join(output_dir, "tensorboard"))
        if getattr(cfg, "time_limit", 0):
            _time_limit["deadline"] = time.monotonic() + cfg.time_limit
            timer = threading.Timer(cfg.time_limit, _time_up, (cfg.time_limit,))
            timer.daemon = True
            timer.start()

    @property
    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self._started

    def write_metrics(self, *, data: dict, results: dict, book_reference: Any, resolved: dict | None = None,
                      input_example: Any = None) -> dict:
        """Writes ``<output_dir>/metrics.json`` atomically and returns what it wrote.

        ``resolved``: config values the job derived from its options (e.g. a default
        learning rate that depends on the optimizer), recorded in ``config`` beside them.
        ``input_example``: a few rows of the exported model's input, MLflow's input example
        under ``--mlflow`` (default: zeros of the signature's shape).
        """
        from tfos_lib import report
        from tfos_lib.version import __version__

        metrics = {
            "job": self.job,
            "tfos_lib_version": __version__,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "wall_seconds": self.elapsed,
            "config": config_dict(self.cfg) | (resolved or {}),
            "data": data,
            "book_reference": book_reference,
            "results": results,
        }
        if self.training:
            metrics |= {"num_workers": self.cfg.num_workers, "backend": self.cfg.backend}
        tracker = self.tracker
        if tracker is not None:
            from tfos_lib.tracking import flatten_numbers

            tracker.log_params(resolved or {})
            tracker.log_results(flatten_numbers(report._to_json(results)) | {"wall_seconds": self.elapsed})
            models = tracker.log_models(self.cfg.output_dir, input_example)
            metrics["mlflow"] = {"run_id": tracker.run_id, "experiment": tracker.experiment,
                                 "tracking_uri": tracker.tracking_uri, "models": models}
        report.write_metrics(self.cfg.output_dir, metrics)
        if tracker is not None:
            tracker.log_artifacts(self.cfg.output_dir)
            tracker.end()
        self.release()
        return metrics

    def release(self) -> None:
        """Gives up the output directory's lock and stops ``--tensorboard`` (done by :meth:`write_metrics`, else when
        the process ends)."""
        if self.tensorboard is not None:
            self.tensorboard.stop()
        if self._lock is not None:
            self._lock.release()
            atexit.unregister(self._lock.release)
            self._lock = None


def run_main(main) -> None:
    """Runs a job's ``main()`` as a program: clean messages for expected failures, Spark stopped at the end.

    Bad input and worker failures print one ``error:`` paragraph and exit 1;
    anything else keeps its full traceback.
    """
    from tfos_lib.errors import LauncherTimeout, WorkerError
    from tfos_lib.runstate import OutputDirBusy

    code = 0
    try:
        main()
    except (FileNotFoundError, ValueError, WorkerError, LauncherTimeout, OutputDirBusy) as error:
        print(f"error: {error}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        if _time_limit["expired"] is None:
            raise
        print(f"error: the job ran longer than --time-limit {_time_limit['expired']:g} s and was stopped.",
              file=sys.stderr)
        code = 1
    finally:
        from pyspark.sql import SparkSession

        session = SparkSession.getActiveSession()
        if session is not None:
            # Stopping explicitly lets local-cluster executors exit cleanly instead of
            # being killed by the JVM's shutdown hooks.
            session.stop()
    sys.exit(code)

"""What every job shares: the common options, config parsing, the Spark session, timing.

A job's config is a frozen dataclass that extends :class:`JobConfig`; its command
line is generated from the fields (``num_workers`` -> ``--num-workers``), so every
job takes the same common options and the help shows each default.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from typing import Sequence, TypeVar

from tfos_lib.launcher import BACKENDS

C = TypeVar("C", bound="JobConfig")


@dataclass(frozen=True)
class JobConfig:
    """Options every job takes. Jobs subclass this and may override the defaults."""

    data_dir: str | None = field(
        default=None, metadata={"help": "directory with the real dataset; omitted: the job's offline default data"}
    )
    output_dir: str = field(default="output", metadata={"help": "where metrics.json, the model and plots go"})
    num_workers: int = field(default=1, metadata={"help": "TensorFlow workers (one Spark task slot each)"})
    backend: str = field(default="barrier", metadata={"help": "how workers are launched", "choices": BACKENDS})
    epochs: int = field(default=1, metadata={"help": "passes over the training data"})
    batch_size: int = field(default=32, metadata={"help": "global batch size (summed over workers)"})
    seed: int = field(default=0, metadata={"help": "random seed for splits, shuffling and initialisation"})
    max_restarts: int = field(
        default=0, metadata={"help": "relaunch the workers this many times after a failure, resuming from the checkpoint"}
    )
    checkpoint_every_steps: int = field(
        default=0, metadata={"help": "also checkpoint every N steps (0: at the end of every epoch only)"}
    )
    stall_timeout: float = field(
        default=600.0, metadata={"help": "seconds a worker may go without finishing a training step before the job fails"}
    )

    def __post_init__(self):
        for name, low in (("num_workers", 1), ("epochs", 1), ("batch_size", 1), ("max_restarts", 0),
                          ("checkpoint_every_steps", 0), ("stall_timeout", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"{_flag(name)} must be >= {low}; got {getattr(self, name)}.")
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {list(BACKENDS)}; got {self.backend!r}.")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _field_type(annotation) -> type:
    """The scalar type behind ``int``, ``str | None`` and friends."""
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing), {})  # annotations are strings under `from __future__`
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    return annotation


def build_parser(config_cls: type[C], description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one option per field of ``config_cls``."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False
    )
    for f in dataclasses.fields(config_cls):
        kind = _field_type(f.type)
        kwargs = {"dest": f.name, "default": f.default, "help": f.metadata.get("help", " ")}
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
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
    args, unknown = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    if unknown:
        valid = ", ".join(_flag(f.name) for f in dataclasses.fields(config_cls))
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


def launch(train_fn, cfg: JobConfig, inputs: dict, spark, extra_args: tuple = ()):
    """``tfos_lib.run(train_fn, cfg, *extra_args, ...)`` with the common options of ``cfg`` (driver side)."""
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
        timeouts=Timeouts(stall=cfg.stall_timeout),
    )


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


def run_main(main) -> None:
    """Runs a job's ``main()`` as a program: clean messages for expected failures, Spark stopped at the end.

    Bad input and worker failures print one ``error:`` paragraph and exit 1;
    anything else keeps its full traceback.
    """
    from tfos_lib.launcher import WorkerError
    from tfos_lib.monitor import LauncherTimeout

    code = 0
    try:
        main()
    except (FileNotFoundError, ValueError, WorkerError, LauncherTimeout) as error:
        print(f"error: {error}", file=sys.stderr)
        code = 1
    finally:
        from pyspark.sql import SparkSession

        session = SparkSession.getActiveSession()
        if session is not None:
            # Stopping explicitly lets local-cluster executors exit cleanly instead of
            # being killed by the JVM's shutdown hooks.
            session.stop()
    sys.exit(code)

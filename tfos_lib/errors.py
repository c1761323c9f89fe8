"""The exceptions tfos_lib raises to its users; every other module imports them from here.

This module imports nothing from tfos_lib, so any module (the launcher, a backend,
the process runner, ``parallel``) can import it without creating an import cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame

__all__ = ["LauncherTimeout", "NotEnoughSlots", "ProcessFailed", "TaskFailures", "WorkerError"]


class WorkerError(RuntimeError):
    """A worker's ``train_fn`` raised (or its process died). Raised on the driver by :func:`tfos_lib.run`.

    Attributes:
        rank: the failed worker's rank (None when Spark lost the task without a Python traceback).
        worker_traceback: the worker's own Python traceback (or last output lines).
    """

    def __init__(self, rank: int | None, worker_traceback: str):
        who = f"worker rank {rank}" if rank is not None else "a worker"
        super().__init__(f"{who} failed. Its traceback:\n{worker_traceback}")
        self.rank = rank
        self.worker_traceback = worker_traceback


class LauncherTimeout(TimeoutError):
    """A bounded wait of the launcher ran out; the message names the worker, what it was doing and the knob to raise."""


class NotEnoughSlots(ValueError, RuntimeError):
    """The cluster cannot run as many workers at the same time as asked (raised before the stage starts).

    A configuration error (a ValueError: jobs print it as one ``error:`` line); also a
    RuntimeError, what :func:`tfos_lib.run` raised for it before.
    """


class TaskFailures(RuntimeError):
    """Some tasks of :func:`tfos_lib.parallel.run_tasks` failed. Raised on the driver.

    Attributes:
        failures: key -> that task's traceback (or how its process ended).
        results: the full result DataFrame, successes included (None when not built).
    """

    def __init__(self, failures: dict, num_tasks: int, results: DataFrame | None = None):
        self.failures = dict(failures)
        self.results = results
        keys = ", ".join(repr(k) for k in self.failures)
        details = "\n".join(f"--- task {key!r} ---\n{error.rstrip()}" for key, error in self.failures.items())
        super().__init__(f"{len(self.failures)} of {num_tasks} task(s) failed: {keys}.\n{details}")


class ProcessFailed(RuntimeError):
    """A child process of :mod:`tfos_lib.process` raised, died, or ran out of time.

    Attributes:
        detail: the child's Python traceback, or how it ended and its last output lines.
        returncode: the child's exit status (negative: killed by that signal; None: unknown).
        timed_out: whether the parent killed it for exceeding its timeout.
    """

    def __init__(self, detail: str, returncode: int | None = None, timed_out: bool = False):
        super().__init__(detail)
        self.detail = detail
        self.returncode = returncode
        self.timed_out = timed_out

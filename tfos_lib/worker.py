"""Runs one worker's ``train_fn`` in a fresh Python process.

Why a subprocess and not the Spark Python worker itself:

* TensorFlow's collective runtime can be configured once per process, and
  Spark reuses Python workers across tasks; a second job in the same worker
  would fail.
* ``TF_USE_LEGACY_KERAS``, ``TF_CONFIG`` and (later) ``CUDA_VISIBLE_DEVICES`` must
  be in the environment before TensorFlow is imported.
* When the task is killed (another worker failed), the whole TensorFlow process
  must die with it instead of waiting in a collective; the child is tied to its
  parent's life (``PR_SET_PDEATHSIG``) and killed explicitly otherwise.

The parent streams the child's output to its own stderr (the executor log, or
the console in local mode) and keeps the last lines for the error message.
"""

from __future__ import annotations

import collections
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass

from tfos_lib.feed import InputPlan, ShardData
from tfos_lib.monitor import Reporter


@dataclass
class WorkerSpec:
    """Everything the child process needs (pickled to a file)."""

    rank: int
    num_workers: int
    output_dir: str
    backend: str
    num_cpus: int
    tf_config: str | None
    inputs: dict[str, tuple[InputPlan, str | None]]
    payload: bytes  # cloudpickle of (train_fn, args)
    result_path: str
    monitor_address: str | None = None
    attempt: int = 0
    #: GPU addresses Spark assigned to this task (``TaskContext.resources()["gpu"]``);
    #: None when the task has no GPU resource (TensorFlow then sees what the host has).
    gpus: tuple[str, ...] | None = None


class WorkerFailed(RuntimeError):
    """A worker process ended without a result. ``str()`` carries its traceback or last output."""

    def __init__(self, rank: int, detail: str):
        super().__init__(f"worker rank {rank} failed:\n{detail}")
        self.rank = rank
        self.detail = detail


def run_in_process(spec: WorkerSpec):
    """Calls ``train_fn`` in this process (the child's main, and the ``local`` backend)."""
    import cloudpickle

    from tfos_lib.context import WorkerContext
    from tfos_lib.tfenv import apply_tf_env

    apply_tf_env()
    if spec.tf_config:
        os.environ["TF_CONFIG"] = spec.tf_config
    else:
        os.environ.pop("TF_CONFIG", None)
    train_fn, args = cloudpickle.loads(spec.payload)
    reporter = Reporter(spec.monitor_address, spec.rank)
    reporter.send("started", host=socket.gethostname(), attempt=spec.attempt)
    ctx = WorkerContext(
        rank=spec.rank,
        num_workers=spec.num_workers,
        output_dir=spec.output_dir,
        backend=spec.backend,
        num_cpus=spec.num_cpus,
        inputs={name: ShardData(plan, path, spec.num_workers) for name, (plan, path) in spec.inputs.items()},
        attempt=spec.attempt,
        gpus=spec.gpus,
        reporter=reporter,
    )
    try:
        value = train_fn(ctx, *args)
        reporter.send("done")
        return value
    finally:
        reporter.close()


class WorkerProcess:
    """A worker's child Python process, started before its work is known.

    The child imports TensorFlow at once (several seconds) while the Spark task
    is still receiving its shard and meeting the other workers; :meth:`run` then
    hands it the :class:`WorkerSpec`. ``TF_CONFIG`` is read only when the strategy
    is created, so it can come later; the GPU environment must be known up front.
    """

    def __init__(self, workdir: str, rank: int, gpus: tuple[str, ...] | None = None, tail_lines: int = 100):
        from tfos_lib.tfenv import apply_tf_env, gpu_env

        self.rank = rank
        self.spec_path = os.path.join(workdir, f"worker-{rank}.spec")
        env = dict(os.environ)
        # The Spark Python worker found tfos_lib and the job's modules on sys.path
        # (possibly from --py-files zips); the child needs the same path.
        # Executors list --py-files as relative paths (./tfos_lib.zip), and the child
        # runs in another directory, so make every entry absolute.
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in sys.path if p)
        env["PYTHONUNBUFFERED"] = "1"
        apply_tf_env(env)
        env.update(gpu_env(gpus))
        self.child = subprocess.Popen(
            [sys.executable, "-m", "tfos_lib.worker_main", self.spec_path],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            cwd=workdir,
        )
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        for raw in self.child.stdout:
            line = raw.decode("utf-8", "replace")
            self.tail.append(line)
            sys.stderr.write(line)
        sys.stderr.flush()

    def run(self, spec: WorkerSpec):
        """Hands ``spec`` to the child and returns ``train_fn``'s result.

        Raises:
            WorkerFailed: with the child's Python traceback if it raised, or its exit
                status and last output lines if it died.
        """
        tmp = self.spec_path + ".tmp"
        with open(tmp, "wb") as f:
            pickle.dump(spec, f)
        os.replace(tmp, self.spec_path)  # the child waits for this name to appear
        try:
            returncode = self.child.wait()
        except BaseException:
            # The Spark task is being killed (e.g. another worker failed): take the
            # TensorFlow process down with it rather than leave it in a collective.
            self.kill()
            raise
        self._reader.join(timeout=10)
        outcome = _read_result(spec.result_path)
        if outcome is None:
            how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
            raise WorkerFailed(
                spec.rank, f"the worker process ended ({how}) without a result. Its last output:\n{''.join(self.tail)}"
            )
        if not outcome["ok"]:
            raise WorkerFailed(spec.rank, outcome["traceback"])
        return outcome["value"]

    def kill(self) -> None:
        """Ends the child if it still runs (the task failed before or while it worked)."""
        if self.child.poll() is None:
            self.child.kill()
            self.child.wait()


def _read_result(path: str):
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (FileNotFoundError, EOFError):
        return None


def _die_with_parent() -> None:
    """Asks Linux to SIGKILL this child when its parent (the Spark Python worker) dies."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except OSError:
        pass  # Not Linux: WorkerProcess.kill still applies.

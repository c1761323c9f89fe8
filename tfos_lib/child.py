"""Calls one Python function in a fresh child process and brings back its value or its traceback.

The generic form of what :mod:`tfos_lib.worker` does for a training worker, for
code that is not a ``train_fn(ctx, ...)`` (independent tasks, see
:mod:`tfos_lib.parallel`). Why a child process and not the Spark Python worker:

* Spark reuses Python workers across tasks, and TensorFlow's state (graphs,
  thread pools, the collective runtime, GPflow's compiled functions) lives for
  the whole process; a fresh process gives every task a clean TensorFlow.
* A crash (segfault, the kernel's OOM killer, ``os._exit``) takes down only the
  child; the Spark task survives and reports it.
* Environment variables that TensorFlow reads once at import
  (``TF_USE_LEGACY_KERAS``, thread counts) take effect.

The child is tied to its parent's life (``PR_SET_PDEATHSIG`` on Linux) and killed
explicitly when the parent is interrupted, so a cancelled Spark task never
leaves a TensorFlow process behind.
"""

from __future__ import annotations

import collections
import os
import pickle
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from tfos_lib.worker import _die_with_parent, _read_result


class ChildFailed(RuntimeError):
    """The child process raised, died, or ran out of time. ``detail`` is its traceback or last output.

    Attributes:
        detail: the child's Python traceback, or how it ended and its last output lines.
        returncode: the child's exit status (negative: killed by that signal).
        timed_out: whether the parent killed it for exceeding ``timeout``.
    """

    def __init__(self, detail: str, returncode: int | None = None, timed_out: bool = False):
        super().__init__(detail)
        self.detail = detail
        self.returncode = returncode
        self.timed_out = timed_out


def call_in_child(
    fn: Callable[..., Any],
    args: tuple = (),
    *,
    workdir: str,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    label: str = "",
    tail_lines: int = 100,
    stream: TextIO | None = None,
) -> Any:
    """Runs ``fn(*args)`` in a new Python process and returns what it returned.

    Runs wherever it is called (a Spark task, usually). ``fn`` and ``args`` travel
    by cloudpickle; the return value comes back by pickle.

    Args:
        fn: the function; must be picklable by cloudpickle.
        args: positional arguments for ``fn``.
        workdir: an existing directory for the call's files; the child's working directory.
        env: extra environment variables for the child (on top of this process's
            environment, ``sys.path`` as ``PYTHONPATH`` and tfos_lib's TensorFlow settings).
        timeout: seconds before the child is killed; ``None``: no limit.
        label: prefix of the child's output lines (``[label] ...``) in this process's stderr.
        tail_lines: how many of the child's last output lines a failure carries.
        stream: where the child's output goes; default ``sys.stderr`` (the executor log).

    Returns:
        ``fn``'s return value.

    Raises:
        ChildFailed: ``fn`` raised (``detail`` is the child's traceback), the child died
            without a result (exit status and last output), or the timeout passed.
    """
    import cloudpickle

    from tfos_lib.tfenv import apply_tf_env

    call_path = os.path.join(workdir, "call.pkl")
    result_path = os.path.join(workdir, "result.pkl")
    with open(call_path, "wb") as f:
        cloudpickle.dump((fn, tuple(args)), f)
    child_env = dict(os.environ)
    # The Spark Python worker found tfos_lib and the job's modules on sys.path
    # (possibly from --py-files zips); the child needs the same path. Executors list
    # --py-files relative to their working directory ("./tfos_lib.zip"), and the child
    # runs elsewhere, so every entry is made absolute.
    child_env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in sys.path if p)
    child_env["PYTHONUNBUFFERED"] = "1"
    child_env.update(env or {})
    apply_tf_env(child_env)
    out = stream or sys.stderr
    prefix = f"[{label}] " if label else ""
    child = subprocess.Popen(
        [sys.executable, "-m", "tfos_lib.child", call_path, result_path],
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
        cwd=workdir,
    )
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)

    def pump():
        for raw in child.stdout:
            line = raw.decode("utf-8", "replace")
            tail.append(line)
            out.write(prefix + line)
        out.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        returncode = child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        reader.join(timeout=10)
        raise ChildFailed(
            f"timed out after {timeout:g} s and was killed. Its last output:\n{''.join(tail)}",
            returncode=child.returncode,
            timed_out=True,
        ) from None
    except BaseException:
        # This task is being cancelled: take the child down with it.
        child.kill()
        child.wait()
        raise
    reader.join(timeout=10)
    outcome = _read_result(result_path)
    if outcome is None:
        how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
        raise ChildFailed(
            f"the process ended ({how}) without a result. Its last output:\n{''.join(tail)}", returncode=returncode
        )
    if not outcome["ok"]:
        raise ChildFailed(outcome["traceback"], returncode=returncode)
    return outcome["value"]


def main(call_path: str, result_path: str) -> int:
    """The child's entry point: load ``(fn, args)``, call it, write the outcome atomically."""
    import cloudpickle

    import tfos_lib  # noqa: F401  (legacy Keras before fn can import TensorFlow)

    try:
        with open(call_path, "rb") as f:
            fn, args = pickle.load(f)
        outcome = {"ok": True, "value": fn(*args)}
        code = 0
    except BaseException:
        outcome = {"ok": False, "traceback": traceback.format_exc()}
        code = 1
    try:
        data = cloudpickle.dumps(outcome)
    except Exception:
        data = pickle.dumps(
            {"ok": False, "traceback": "the function returned a value that cannot be pickled:\n" + traceback.format_exc()}
        )
        code = 1
    tmp = result_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, result_path)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

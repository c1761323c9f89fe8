"""The one runner of a clean Python child process: ``python -m tfos_lib.process CALL RESULT``.

The launcher's workers (:mod:`tfos_lib.backends.barrier`) and the tasks of
:mod:`tfos_lib.parallel` both run their TensorFlow code through it. Why a child
process and not the Spark Python worker itself:

* Spark reuses Python workers across tasks, and TensorFlow's state (the collective
  runtime, which can be configured once per process; graphs, thread pools,
  GPflow's compiled functions) lives as long as the process. A fresh process gives
  every worker and task a clean TensorFlow.
* Environment variables that TensorFlow reads once, at import (``TF_USE_LEGACY_KERAS``,
  thread counts, ``CUDA_VISIBLE_DEVICES``), take effect.
* A crash (segfault, the kernel's OOM killer, ``os._exit``) takes down only the
  child; the Spark task survives and reports it.
* When the Spark task is killed (another worker failed, the job was cancelled),
  the TensorFlow process must die with it instead of waiting in a collective: the
  child is tied to its parent's life (``PR_SET_PDEATHSIG`` on Linux) and killed
  explicitly when the parent is interrupted or its timeout passes.

The call ``(fn, args)`` goes in and the outcome (value or traceback) comes out
through files in a work directory, both with cloudpickle. The parent streams the
child's output to its own stderr (the executor log, or the console in local mode),
without TensorFlow's start-up noise (:func:`tfos_lib.tfenv.startup_noise_filter`),
and keeps the last lines for the error message.

This module is never imported by ``import tfos_lib``, so that ``-m`` does not run
a module that is already imported.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import os
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from tfos_lib.errors import ProcessFailed

__all__ = ["ChildProcess", "call_in_process", "pickle_with_code"]

_PRELOAD_TENSORFLOW = "--import-tensorflow"


class ChildProcess:
    """A fresh Python process that runs one call; started before the call is known.

    Starting early lets the child import TensorFlow (several seconds) while the
    parent still prepares the call (a Spark task receiving its shard and meeting
    the other workers). Use as a context manager: leaving it ends the child
    (:meth:`close`).

    Args:
        workdir: an existing directory for the call's files; the child's working directory.
        env: environment variables for the child on top of this process's environment
            (plus ``sys.path`` as ``PYTHONPATH`` and tfos_lib's TensorFlow settings),
            e.g. :func:`tfos_lib.tfenv.task_env`.
        label: prefix of the child's output lines (``[label] ...``) in ``stream``.
        tail_lines: how many of the child's last output lines a failure carries.
        stream: where the child's output goes; default ``sys.stderr`` (the executor log).
        import_tensorflow: import TensorFlow in the child while it waits for the call.
    """

    def __init__(
        self,
        workdir: str,
        *,
        env: Mapping[str, str] | None = None,
        label: str = "",
        tail_lines: int = 100,
        stream: TextIO | None = None,
        import_tensorflow: bool = False,
    ):
        from tfos_lib.tfenv import apply_tf_env, startup_noise_filter

        self.call_path = os.path.join(workdir, "call.pkl")
        self.result_path = os.path.join(workdir, "result.pkl")
        child_env = dict(os.environ)
        # The Spark Python worker found tfos_lib and the job's modules on sys.path
        # (possibly from --py-files zips); the child needs the same path. Executors list
        # --py-files relative to their working directory ("./tfos_lib.zip"), and the child
        # runs elsewhere, so every entry is made absolute.
        child_env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in sys.path if p)
        child_env["PYTHONUNBUFFERED"] = "1"
        child_env.update(env or {})
        apply_tf_env(child_env)
        self._is_noise = startup_noise_filter(child_env)
        self._stream = stream or sys.stderr
        self._prefix = f"[{label}] " if label else ""
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        command = [sys.executable, "-m", "tfos_lib.process", self.call_path, self.result_path]
        self.process = subprocess.Popen(
            command + ([_PRELOAD_TENSORFLOW] if import_tensorflow else []),
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            cwd=workdir,
        )
        self._reader = threading.Thread(target=self._pump, name="tfos-child-output", daemon=True)
        self._reader.start()

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _pump(self) -> None:
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace")
            if self._is_noise(line):
                continue
            self.tail.append(line)
            self._stream.write(self._prefix + line)
        self._stream.flush()

    def run(self, fn: Callable[..., Any], args: tuple = (), timeout: float | None = None) -> Any:
        """Hands ``fn(*args)`` to the child, waits for it and returns what ``fn`` returned.

        Args:
            fn: the function; picklable by cloudpickle (its module goes by value when it
                is the caller's own code, see :func:`pickle_with_code`).
            args: positional arguments for ``fn``.
            timeout: seconds before the child is killed; ``None``: no limit.

        Raises:
            ProcessFailed: ``fn`` raised (``detail`` is the child's traceback), the child
                died without a result (its exit status and last output), or the timeout passed.
        """
        _write_atomically(self.call_path, pickle_with_code((fn, tuple(args)), fn))
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            # The outcome file, not the exit, ends the wait: a process that imported TensorFlow takes most of a
            # second to shut its interpreter down (measured: 0.75 s on a fast host), and it finishes that on
            # its own (see close).
            while self.process.poll() is None and not os.path.exists(self.result_path):
                if deadline is not None and time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(self.process.args, timeout)
                time.sleep(0.02)
        except subprocess.TimeoutExpired:
            self.kill()
            self._reader.join(timeout=10)
            raise ProcessFailed(
                f"timed out after {timeout:g} s and was killed. Its last output:\n{''.join(self.tail)}",
                returncode=self.process.returncode,
                timed_out=True,
            ) from None
        except BaseException:
            # The Spark task is being killed (e.g. another worker failed): take the
            # TensorFlow process down with it rather than leave it in a collective.
            self.kill()
            raise
        returncode = self.process.poll()
        if returncode is not None:
            self._reader.join(timeout=10)
        outcome = _read_outcome(self.result_path)
        if outcome is None:
            how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
            raise ProcessFailed(
                f"the process ended ({how}) without a result. Its last output:\n{''.join(self.tail)}",
                returncode=returncode,
            )
        if not outcome["ok"]:
            if returncode is None:  # a failure is no hurry: its exit status and last output go with it
                try:
                    returncode = self.process.wait(timeout=30)
                    self._reader.join(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            raise ProcessFailed(outcome["traceback"], returncode=returncode)
        return outcome["value"]

    def close(self, grace: float = 60.0) -> None:
        """Ends the child: one that delivered its outcome gets ``grace`` seconds to finish exiting (its exit
        handlers flush what it wrote) before it is killed, in a background thread; any other is killed now."""
        if self.process.poll() is not None:
            return
        if not os.path.exists(self.result_path):
            self.kill()
            return

        def reap():
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()

        threading.Thread(target=reap, name="tfos-child-exit", daemon=True).start()

    def kill(self) -> None:
        """Ends the child if it still runs."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# ---------------------------------------------------------------------------------------------
# A warm spare: the next worker in this Python process starts with TensorFlow already imported.

#: This process's spare child: ``(child, its workdir, environment_key)``; at most one.
_spare: list[tuple[ChildProcess, str, str]] = []


def environment_key(env: Mapping[str, str]) -> str:
    """What a spare child shares with the call that takes it: the interpreter, the environment, the code.

    A spare started before ``pip install``, an edit of tfos_lib or a changed variable
    would run stale code, so all of them change the key: the interpreter, this
    process's environment plus ``env``, and for every ``sys.path`` entry its
    modification time (a directory's changes when a package is installed or removed)
    and the newest file of tfos_lib itself.
    """
    def stamp(path: str):
        try:
            status = os.stat(path)
            return [status.st_mtime_ns, status.st_size]
        except OSError:
            return None

    package = os.path.dirname(os.path.abspath(__file__))
    # A zip on the path (--py-files) has no files to walk: its own entry in sys.path is stamped.
    newest = max(((stamp(os.path.join(root, f)) or [0, 0])[0]
                  for root, _, files in os.walk(package) for f in files if f.endswith(".py")), default=0)
    parts = [sys.executable, sorted({**os.environ, **env}.items()), [(p, stamp(p)) for p in sys.path], newest]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def take_spare(env: Mapping[str, str]) -> tuple[ChildProcess, str] | None:
    """This process's spare child and its workdir, if it is alive and its environment is still ``env``'s.

    A spare that does not match is killed (it would run stale code).
    """
    if not _spare:
        return None
    child, workdir, key = _spare.pop()
    if child.process.poll() is None and key == environment_key(env):
        return child, workdir
    discard(child, workdir)
    return None


def start_spare(env: Mapping[str, str]) -> None:
    """Starts a child that imports TensorFlow and waits, for the next call in this process (replacing any spare)."""
    drop_spare()
    workdir = tempfile.mkdtemp(prefix="tfos-spare-")
    _spare.append((ChildProcess(workdir, env=env, import_tensorflow=True), workdir, environment_key(env)))


def drop_spare() -> bool:
    """Ends this process's spare child, if any (frees its memory); True if there was one."""
    had_one = bool(_spare)
    while _spare:
        child, workdir, _ = _spare.pop()
        discard(child, workdir)
    return had_one


def discard(child: ChildProcess, workdir: str) -> None:
    """Kills ``child`` and removes its workdir."""
    child.kill()
    shutil.rmtree(workdir, ignore_errors=True)


def call_in_process(
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

    Runs wherever it is called (a Spark task, usually). The arguments are those of
    :class:`ChildProcess` and :meth:`ChildProcess.run`.

    Raises:
        ProcessFailed: ``fn`` raised, the child died without a result, or the timeout passed.
    """
    with ChildProcess(workdir, env=env, label=label, tail_lines=tail_lines, stream=stream) as child:
        return child.run(fn, args, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# Shipping the caller's code.


def pickle_with_code(obj: Any, fn: Callable | None = None) -> bytes:
    """Cloudpickles ``obj`` so that the code of ``fn`` (default: ``obj`` itself) travels by value.

    Executors and child processes can import tfos_lib and installed packages, but
    not the caller's own files (a job under ``jobs/``, a test module, a notebook's
    helper module). The rule: the top-level package of ``fn``'s module (after
    unwrapping ``functools.partial``) goes by value when it is neither tfos_lib nor
    installed (the standard library, site-packages); everything else goes by
    reference. ``__main__`` needs nothing: cloudpickle ships it by value anyway.
    The registration lasts only for this call.
    """
    import cloudpickle

    package = _callers_package(obj if fn is None else fn)
    register = package is not None and package.__name__ not in cloudpickle.list_registry_pickle_by_value()
    if register:
        cloudpickle.register_pickle_by_value(package)
    try:
        return cloudpickle.dumps(obj)
    finally:
        if register:
            cloudpickle.unregister_pickle_by_value(package)


def _callers_package(fn: Any):
    """The top-level module of ``fn``'s code if it has to go by value, else None."""
    while isinstance(fn, functools.partial):  # the code that matters is the wrapped function's
        fn = fn.func
    name = getattr(fn, "__module__", None) or ""
    top = name.split(".")[0]
    if not name or name == "__main__" or top == "tfos_lib" or name not in sys.modules:
        return None
    package = sys.modules.get(top)
    if getattr(package, "__file__", None) is None:  # a namespace package (no __init__): ship the module itself
        package = sys.modules[name]
    path = getattr(package, "__file__", None)
    if path is None:  # built-in
        return None
    path = os.path.realpath(path)
    if any(path.startswith(prefix + os.sep) for prefix in _installed_prefixes()):
        return None
    return package


def _installed_prefixes() -> set[str]:
    paths = sysconfig.get_paths()
    prefixes = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    prefixes.update(site.getsitepackages())
    prefixes.add(site.getusersitepackages())
    return {os.path.realpath(p) for p in prefixes}


# ---------------------------------------------------------------------------------------------
# Files and the child's side.


def _write_atomically(path: str, data: bytes) -> None:
    """Writes ``data`` under a temporary name first: the reader waits for ``path`` to appear."""
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)


def _read_outcome(path: str) -> dict | None:
    import cloudpickle

    try:
        with open(path, "rb") as f:
            return cloudpickle.load(f)
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
        pass  # Not Linux: ChildProcess.kill still applies.


def main(argv: list[str]) -> int:
    """The child's entry point: wait for the call, run it, write the outcome atomically."""
    import cloudpickle

    call_path, result_path = argv[0], argv[1]
    if _PRELOAD_TENSORFLOW in argv[2:] and not os.path.exists(call_path):
        from tfos_lib.tfenv import TENSORFLOW_READY_AT, import_tensorflow

        import_tensorflow()
        os.environ[TENSORFLOW_READY_AT] = repr(time.time())  # for the worker's start-up timeline
    # If the parent dies, so do we (PR_SET_PDEATHSIG), so the wait needs no timeout of its own.
    while not os.path.exists(call_path):
        time.sleep(0.05)
    try:
        with open(call_path, "rb") as f:
            fn, args = cloudpickle.load(f)
        outcome = {"ok": True, "value": fn(*args)}
    except BaseException:
        outcome = {"ok": False, "traceback": traceback.format_exc()}
    try:
        data = cloudpickle.dumps(outcome)
    except Exception:
        outcome = {"ok": False, "traceback": "the function returned a value that cannot be pickled:\n" + traceback.format_exc()}
        data = cloudpickle.dumps(outcome)
    _write_atomically(result_path, data)
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

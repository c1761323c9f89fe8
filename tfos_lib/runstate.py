"""One run per output directory, and resuming only what belongs to this run.

* :class:`RunLock`: ``<output_dir>/.tfos-run.lock`` (host, pid, start time) taken
  when a run starts and removed when it ends. A second run on the same directory
  is refused; a lock whose process is gone (same host, pid no longer alive) is
  stale and replaced with a warning.
* A checkpoint's fingerprint: ``checkpoints/chief/fingerprint.json`` records the
  model's structure (layer types, weight shapes, optimizer) and the job's options
  that shape the training state. Resuming with a different one is refused with both
  fingerprints and the options that differ, before anything is restored.
* :func:`move_aside`: ``--overwrite`` moves an earlier run to ``<dir>.replaced-<time>``
  rather than deleting it.

Driver and workers; no TensorFlow at import.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import socket
from datetime import datetime, timezone

from tfos_lib import storage

log = logging.getLogger("tfos_lib")

LOCK_FILE = ".tfos-run.lock"
FINGERPRINT_FILE = "fingerprint.json"
#: Options that may change between a run and its resume: how long, where, how many workers, how watched.
RESUMABLE_CHANGES = frozenset({
    "epochs", "output_dir", "data_dir", "max_restarts", "stall_timeout", "backend", "num_workers", "overwrite",
    "time_limit", "checkpoint_every_steps", "rendezvous_timeout", "steps_per_execution", "shuffle_buffer",
    "all_reduce_precision",
})


class OutputDirBusy(RuntimeError):
    """Another run holds the output directory, or its checkpoint belongs to a different model/config."""


# ---------------------------------------------------------------------------------------------
# The lock.


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """The lock of one output directory, held by this process (re-entrant within it)."""

    _held: dict[str, int] = {}  # normalized output dir -> how many times this process took it

    def __init__(self, output_dir: str):
        self.output_dir = storage.normalize(output_dir)
        self.path = storage.join(self.output_dir, LOCK_FILE)

    def acquire(self) -> "RunLock":
        """Takes the lock, or raises :class:`OutputDirBusy` naming the run that holds it and what to do."""
        if self._held.get(self.output_dir):
            self._held[self.output_dir] += 1
            return self
        me = {"host": socket.gethostname(), "pid": os.getpid(),
              "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        storage.makedirs(self.output_dir)
        for _ in range(2):
            try:
                storage.write_bytes(self.path, json.dumps(me).encode(), exclusive=True)
                self._held[self.output_dir] = 1
                return self
            except FileExistsError:
                holder = self.holder()
                if holder is None or not self._stale(holder):
                    if holder is None:
                        continue  # it went away in between
                    raise OutputDirBusy(
                        f"another run is using {self.output_dir}: pid {holder.get('pid')} on host {holder.get('host')}, "
                        f"started {holder.get('started_at')} (lock file {self.path}). Wait for it to finish, or choose "
                        "another --output-dir. If that run is gone (its host is down), delete the lock file."
                    ) from None
                log.warning("removing the stale lock %s of pid %s (no longer running on %s)",
                            self.path, holder.get("pid"), holder.get("host"))
                storage.delete(self.path)
        raise OutputDirBusy(f"could not take the lock {self.path}; another run keeps taking it.")

    def holder(self) -> dict | None:
        try:
            return json.loads(storage.read_bytes(self.path))
        except FileNotFoundError:
            return None
        except ValueError:
            return {"host": "?", "pid": "?", "started_at": "? (unreadable lock file)"}

    @staticmethod
    def _stale(holder: dict) -> bool:
        """Only a lock of this host can be proven stale (its pid is not running)."""
        return holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) and (
            not _pid_alive(holder["pid"])
        )

    def release(self) -> None:
        count = self._held.get(self.output_dir, 0)
        if count > 1:
            self._held[self.output_dir] = count - 1
            return
        self._held.pop(self.output_dir, None)
        holder = self.holder()
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            storage.delete(self.path)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def move_aside(output_dir: str) -> str | None:
    """Moves an existing, non-empty ``output_dir`` to ``<output_dir>.replaced-<UTC time>``; returns where, or None."""
    output_dir = storage.normalize(output_dir)
    if not storage.list_files(output_dir):
        return None
    target = f"{output_dir}.replaced-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    storage.move(output_dir, target)
    log.info("--overwrite: moved the earlier run in %s to %s", output_dir, target)
    return target


# ---------------------------------------------------------------------------------------------
# Fingerprints.


def job_config(args: tuple):
    """The job's config among ``train_fn``'s arguments (the first dataclass instance), or None."""
    return next((a for a in args if dataclasses.is_dataclass(a) and not isinstance(a, type)), None)


def resumable_options(args: tuple) -> dict | None:
    """The options of the job config in ``args`` (its first dataclass) that a checkpoint must match."""
    config = job_config(args)
    if config is None:
        return None
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in RESUMABLE_CHANGES}
    return json.loads(json.dumps(values, default=repr, sort_keys=True))


def model_structure(model) -> dict:
    """What a checkpoint of ``model`` depends on: layer types, weight shapes and dtypes, optimizer class."""
    optimizer = getattr(model, "optimizer", None)
    return {
        "layers": [type(layer).__name__ for layer in model.layers],
        "weights": [[list(w.shape), w.dtype.name] for w in model.weights],
        "optimizer": type(optimizer).__name__ if optimizer is not None else None,
    }


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def make_fingerprint(model_structure_: dict | None, options: dict | None) -> dict:
    return {
        "fingerprint": digest([model_structure_, options]),
        "model": digest(model_structure_) if model_structure_ is not None else None,
        "options": options,
    }


def fingerprint_path(output_dir: str) -> str:
    return storage.join(output_dir, "checkpoints", "chief", FINGERPRINT_FILE)


def has_checkpoint(output_dir: str) -> bool:
    """Whether ``output_dir`` holds a resumable tf-keras BackupAndRestore checkpoint."""
    return storage.exists(storage.join(output_dir, "checkpoints", "chief", "checkpoint"))


def recorded_fingerprint(output_dir: str) -> dict | None:
    try:
        return json.loads(storage.read_bytes(fingerprint_path(output_dir)))
    except (FileNotFoundError, ValueError):
        return None


def check_resume(recorded: dict | None, current: dict, where: str, compare_model: bool = True) -> None:
    """Raises :class:`OutputDirBusy` when a checkpoint recorded ``recorded`` and this run is ``current``.

    Lists the options that differ (``compare_model=False``: options only, as the driver
    knows no model).
    """
    if recorded is None:
        return
    old, new = recorded.get("options") or {}, current.get("options") or {}
    differing = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
    model_differs = compare_model and recorded.get("model") != current.get("model")
    if not differing and not model_differs:
        return
    lines = [f"  --{k.replace('_', '-')}: checkpoint {a!r}, this run {b!r}" for k, (a, b) in differing.items()]
    if model_differs:
        lines.append(f"  the model's structure: checkpoint {recorded.get('model')}, this run {current.get('model')}")
    raise OutputDirBusy(
        f"the checkpoint in {where} belongs to a different run (fingerprint {recorded.get('fingerprint')}, this run "
        f"{current.get('fingerprint') if compare_model else 'differs'}); resuming would mix them:\n" + "\n".join(lines)
        + "\nRun with the checkpoint's options to resume it, pass --overwrite to move that run aside and start over, "
        "or choose another --output-dir."
    )


"""The DQN learners' checkpoint: networks, optimizer, progress and every rank's replay position, under one manifest.

A save writes a new version directory, and only then publishes it by replacing
``MANIFEST.json`` (one atomic rename); a resume reads only what the manifest
names. So a crash at any point of a save leaves the previous manifest, and the
state it names, whole::

    checkpoints/learner/MANIFEST.json             {"version": ..., "round": ..., "checkpoint": ..., ...}
                        r000004-<run>-a0/model.index, model.data-*   (tf.train.Checkpoint.write)
                                         learner.json                (rounds, env steps, updates, history)
                                         replay-0.json, replay-1.json (each rank's replay position)

Version names carry the round, the launch's token and the attempt, so a save
never writes into a directory an earlier, crashed save left behind. The chief
publishes once every rank's replay position is in the version directory, then
removes older versions. The replay arrays themselves are too large to copy at
every save; they stay in place (:class:`~tfos_lib.rl.replay.ReplayMemory`) and the
manifest's positions say which of their entries count. Works on a local or mounted
filesystem (the DQN job requires one).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from typing import Callable

__all__ = ["MANIFEST", "LearnerCheckpoint", "read_manifest"]

MANIFEST = "MANIFEST.json"
_VERSION = re.compile(r"r(\d{6,})-[0-9a-z]+-a\d+")


def _write_json(path: str, value) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)


def read_manifest(directory: str) -> dict | None:
    """The published manifest in ``directory`` (``checkpoints/learner``), or None before the first save."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


class LearnerCheckpoint:
    """One rank's view of the learner checkpoint directory. Runs in the learners (and the driver, to read).

    Args:
        directory: ``<output_dir>/checkpoints/learner`` (shared by every rank).
        rank, num_workers: this learner's rank and how many there are.
        token: the same short string on every rank of one launch (e.g. from the driver).
        attempt: the launch's restart count (``ctx.attempt``).
    """

    def __init__(self, directory: str, rank: int, num_workers: int, token: str, attempt: int = 0):
        if not re.fullmatch(r"[0-9a-z]+", token):
            raise ValueError(f"token must be lowercase letters and digits; got {token!r}.")
        self.directory, self.rank, self.num_workers = directory, rank, num_workers
        self.token, self.attempt = token, attempt
        os.makedirs(directory, exist_ok=True)

    def manifest(self) -> dict | None:
        return read_manifest(self.directory)

    def version(self, round_index: int) -> str:
        return f"r{round_index:06d}-{self.token}-a{self.attempt}"

    def path(self, relative: str) -> str:
        return os.path.join(self.directory, relative)

    # -- reading (every rank, at start) -----------------------------------------------------------

    def restore(self) -> tuple[str, dict, dict] | None:
        """``(checkpoint prefix, learner state, this rank's replay position)`` of the manifest, or None.

        Raises:
            ValueError: the manifest was written by a run with another number of learners.
        """
        manifest = self.manifest()
        if manifest is None:
            return None
        if manifest["num_workers"] != self.num_workers:
            raise ValueError(
                f"the checkpoint in {self.directory} was written by {manifest['num_workers']} learners; this run has "
                f"{self.num_workers}. Use the same --num-workers to resume, or --overwrite to start over."
            )
        with open(self.path(manifest["state"])) as f:
            state = json.load(f)
        with open(self.path(manifest["replay"][str(self.rank)])) as f:
            replay = json.load(f)
        return self.path(manifest["checkpoint"]), state, replay

    # -- saving -----------------------------------------------------------------------------------

    def save(self, round_index: int, replay_meta: dict, write_checkpoint: Callable[[str], None], state: dict,
             *, wait: Callable[[], None] = lambda: None, timeout: float = 600.0) -> str | None:
        """One rank's part of a save at ``round_index``; returns the published version (chief) or None.

        Every rank writes its replay position into the version directory. The chief
        also writes the networks and optimizer (``write_checkpoint(prefix)``, e.g.
        ``tf.train.Checkpoint.write``) and the learner state, waits until every rank's
        replay position is there (calling ``wait`` between looks: a heartbeat), and
        then publishes the manifest.

        Raises:
            TimeoutError: a rank's replay position did not appear within ``timeout`` seconds.
        """
        version = self.version(round_index)
        folder = self.path(version)
        os.makedirs(folder, exist_ok=True)
        _write_json(os.path.join(folder, f"replay-{self.rank}.json"), replay_meta)
        if self.rank != 0:
            return None
        write_checkpoint(os.path.join(folder, "model"))
        _write_json(os.path.join(folder, "learner.json"), state)
        replay = {str(r): f"{version}/replay-{r}.json" for r in range(self.num_workers)}
        deadline = time.monotonic() + timeout
        while not all(os.path.exists(self.path(p)) for p in replay.values()):
            if time.monotonic() > deadline:
                missing = sorted(r for r, p in replay.items() if not os.path.exists(self.path(p)))
                raise TimeoutError(f"learner ranks {missing} did not save their replay position for round "
                                   f"{round_index} within {timeout:.0f} s; the previous checkpoint stays in use.")
            wait()
            time.sleep(0.05)
        self.publish({"version": version, "round": round_index, "num_workers": self.num_workers,
                      "checkpoint": f"{version}/model", "state": f"{version}/learner.json", "replay": replay})
        return version

    def publish(self, manifest: dict) -> None:
        """Makes ``manifest`` the checkpoint (one rename), then removes the versions of earlier rounds."""
        _write_json(self.path(MANIFEST), manifest)
        for entry in os.listdir(self.directory):
            match = _VERSION.fullmatch(entry)
            if match and entry != manifest["version"] and int(match.group(1)) <= manifest["round"]:
                shutil.rmtree(self.path(entry), ignore_errors=True)

"""The files through which a driver hands experience to learners and learners hand back their policy.

Reinforcement learning on Spark here has two sides running at once: the driver
runs *rounds* of actor tasks (Spark jobs that play episodes with the latest
policy weights) and writes each round's episodes here, one file per learner
rank; the learners (long-running workers under :func:`tfos_lib.run`) consume
the rounds in order, train, and publish their weights here. Everything lives
under the job's ``output_dir``, which every executor and the driver can reach
(see :func:`tfos_lib.run`). Files are written to a temporary name and renamed,
so a reader never sees half a file; a round's ``.json`` manifest is written
last and marks the round complete.
"""

from __future__ import annotations

import glob
import io
import json
import os
import pickle
import time
from typing import Callable

import numpy as np

from tfos_lib.rl.atari import Episode


class ExperienceAborted(RuntimeError):
    """The driver gave up (an actor failed or the job was stopped); learners stop too."""


def _atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class ExperienceChannel:
    def __init__(self, output_dir: str):
        self.root = os.path.join(output_dir, "experience")
        self.policy_dir = os.path.join(output_dir, "policy")
        os.makedirs(self.root, exist_ok=True)
        os.makedirs(self.policy_dir, exist_ok=True)

    # -- file names -------------------------------------------------------------------------
    def _manifest(self, round_index: int) -> str:
        return os.path.join(self.root, f"round-{round_index:06d}.json")

    def _episodes(self, round_index: int, rank: int) -> str:
        return os.path.join(self.root, f"round-{round_index:06d}-rank{rank}.pkl")

    # -- driver side ------------------------------------------------------------------------
    def reset_after(self, rounds_kept: int) -> None:
        """Removes rounds ``>= rounds_kept`` and end/abort markers (a resumed run replays from there)."""
        for path in glob.glob(os.path.join(self.root, "round-*")):
            index = int(os.path.basename(path)[6:12])
            if index >= rounds_kept:
                os.remove(path)
        for path in (os.path.join(self.root, "end.json"), os.path.join(self.root, "abort.json"),
                     os.path.join(self.policy_dir, "progress.json")):  # a later run's progress, past the checkpoint
            if os.path.exists(path):
                os.remove(path)

    def write_round(self, round_index: int, per_rank: list[list[bytes]], info: dict) -> None:
        """Publishes round ``round_index``: the serialized episodes for each learner rank, then its manifest."""
        for rank, episodes in enumerate(per_rank):
            _atomic_write(self._episodes(round_index, rank), pickle.dumps(episodes, protocol=4))
        _atomic_write(self._manifest(round_index), json.dumps(info).encode())

    def manifests(self, rounds: int) -> list[dict]:
        """The manifests of rounds ``0 .. rounds-1`` that still exist (a resumed run's history)."""
        found = []
        for index in range(rounds):
            path = self._manifest(index)
            if os.path.exists(path):
                with open(path) as f:
                    found.append(json.load(f))
        return found

    def finish(self, rounds: int) -> None:
        """No more rounds after ``rounds``: learners finish once they have consumed them."""
        _atomic_write(os.path.join(self.root, "end.json"), json.dumps({"rounds": rounds}).encode())

    def abort(self, reason: str) -> None:
        _atomic_write(os.path.join(self.root, "abort.json"), json.dumps({"reason": reason}).encode())

    def latest_policy(self) -> tuple[int, list[np.ndarray]] | None:
        """``(rounds the learner had consumed, weights)`` of the newest published policy, or None."""
        path = os.path.join(self.policy_dir, "weights.npz")
        if not os.path.exists(path):
            return None
        with np.load(path) as z:
            return int(z["version"]), [z[f"w{i}"] for i in range(int(z["count"]))]

    def progress(self) -> dict:
        """The learners' last reported progress (``rounds_consumed`` 0 before the first)."""
        path = os.path.join(self.policy_dir, "progress.json")
        if not os.path.exists(path):
            return {"rounds_consumed": 0}
        with open(path) as f:
            return json.load(f)

    # -- learner side -----------------------------------------------------------------------
    def wait_round(self, round_index: int, heartbeat: Callable[[], None], timeout: float) -> dict | None:
        """The manifest of ``round_index`` once it exists; None when the driver finished before it.

        Raises:
            ExperienceAborted: the driver wrote an abort marker.
            TimeoutError: nothing arrived for ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        end_path, abort_path = os.path.join(self.root, "end.json"), os.path.join(self.root, "abort.json")
        while True:
            if os.path.exists(abort_path):
                with open(abort_path) as f:
                    raise ExperienceAborted(f"the driver stopped the run: {json.load(f)['reason']}")
            path = self._manifest(round_index)
            if os.path.exists(path):
                with open(path) as f:
                    return json.load(f)
            if os.path.exists(end_path):
                with open(end_path) as f:
                    if json.load(f)["rounds"] <= round_index:
                        return None
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no experience round {round_index} in {self.root} after {timeout:.0f} s: the actors are "
                    "stuck or the output directory is not shared between the driver and this executor."
                )
            heartbeat()
            time.sleep(0.2)

    def read_episodes(self, round_index: int, rank: int) -> list[Episode]:
        with open(self._episodes(round_index, rank), "rb") as f:
            return [Episode.from_bytes(b) for b in pickle.load(f)]

    def delete_episodes_before(self, rounds: int, rank: int) -> None:
        """Frees the disk of rounds a checkpoint already holds (their manifests stay as history)."""
        for path in glob.glob(os.path.join(self.root, f"round-*-rank{rank}.pkl")):
            if int(os.path.basename(path)[6:12]) < rounds:
                os.remove(path)

    def publish(self, version: int, weights: list[np.ndarray], progress: dict) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, version=version, count=len(weights), **{f"w{i}": w for i, w in enumerate(weights)})
        _atomic_write(os.path.join(self.policy_dir, "weights.npz"), buffer.getvalue())
        _atomic_write(os.path.join(self.policy_dir, "progress.json"), json.dumps(progress).encode())

"""Replay memory for DQN learners: a ring buffer of single frames kept in memory-mapped files.

Each stored step ``i`` holds the frame seen, the action taken, the reward got
and whether the game ended. A state is the frame stack ending at ``i`` (frames
of the same episode only; at an episode's start the first frame is repeated),
so one frame is stored once instead of ``STACK`` times. Whole episodes are
appended, each ending with its final frame (which has no action and is never
sampled as a start).

The arrays live in ``directory`` as ``np.memmap`` files: a checkpoint records
only the small position metadata (:meth:`ReplayMemory.save`, kept in the learner
checkpoint's manifest, :mod:`tfos_lib.rl.checkpoint`), and a restarted learner
reopens the same files with that metadata and continues where the checkpoint
left off.
"""

from __future__ import annotations

import os

import numpy as np

from tfos_lib.rl.atari import STACK, Episode

_ARRAYS = {  # name -> (dtype, per-step shape is (frame_shape) for frames, () otherwise)
    "frames": np.uint8,
    "actions": np.uint8,
    "rewards": np.float32,
    "terminal": np.bool_,  # the step ended the game: no bootstrapping past it
    "has_action": np.bool_,  # False on an episode's final frame
    "step": np.int32,  # position within its episode (recognises overwritten neighbours)
}


class ReplayMemory:
    """``meta``: what :meth:`save` returned at a checkpoint, to reopen the files there; None starts empty."""

    def __init__(self, directory: str, capacity: int, frame_shape: tuple[int, int], meta: dict | None = None):
        if capacity < 2 * STACK:
            raise ValueError(f"replay capacity must be at least {2 * STACK} steps; got {capacity}.")
        self.directory = directory
        self.capacity = capacity
        self.frame_shape = tuple(frame_shape)
        os.makedirs(directory, exist_ok=True)
        self.position = 0  # next index written
        self.size = 0  # valid entries
        self.steps_added = 0  # agent steps ever added (not counting final frames)
        if meta is not None:
            if meta["capacity"] != capacity or tuple(meta["frame_shape"]) != self.frame_shape:
                raise ValueError(
                    f"the replay memory in {directory} has capacity {meta['capacity']} and frames "
                    f"{tuple(meta['frame_shape'])}; this run asks for {capacity} and {self.frame_shape}. "
                    "Use the same --replay-capacity to resume, or a new --output-dir to start over."
                )
            self.position, self.size, self.steps_added = meta["position"], meta["size"], meta["steps_added"]
        mode = "r+" if meta is not None else "w+"
        self._arrays = {}
        for name, dtype in _ARRAYS.items():
            shape = (capacity, *self.frame_shape) if name == "frames" else (capacity,)
            path = os.path.join(directory, f"{name}.npy")
            self._arrays[name] = np.lib.format.open_memmap(path, mode=mode, dtype=dtype, shape=shape)

    def save(self) -> dict:
        """Flushes the arrays; returns the position metadata (the replay part of a checkpoint)."""
        for array in self._arrays.values():
            array.flush()
        return {"capacity": self.capacity, "frame_shape": list(self.frame_shape), "position": self.position,
                "size": self.size, "steps_added": self.steps_added}

    def add(self, episode: Episode) -> None:
        """Appends one whole episode (T steps + its final frame)."""
        n = episode.length + 1
        if n > self.capacity:
            raise ValueError(f"an episode of {n} frames does not fit a replay memory of {self.capacity} steps.")
        index = (self.position + np.arange(n)) % self.capacity
        a = self._arrays
        a["frames"][index] = episode.frames
        a["actions"][index] = np.append(episode.actions, 0)
        a["rewards"][index] = np.append(episode.rewards, 0)
        terminal = np.zeros(n, bool)
        terminal[n - 2] = episode.terminated
        a["terminal"][index] = terminal
        has_action = np.ones(n, bool)
        has_action[-1] = False
        a["has_action"][index] = has_action
        a["step"][index] = np.arange(n)
        self.position = int((self.position + n) % self.capacity)
        self.size = min(self.capacity, self.size + n)
        self.steps_added += episode.length

    def _stack(self, index: np.ndarray) -> np.ndarray:
        """(B, H, W, STACK) frames ending at ``index``; earlier frames of other episodes are replaced
        by the episode's earliest frame available."""
        step = self._arrays["step"][index]
        offsets = np.arange(STACK - 1, -1, -1)  # oldest first
        back = np.minimum(offsets[None, :], step[:, None])
        rows = (index[:, None] - back) % self.capacity
        # An older neighbour overwritten by a newer episode no longer has the expected step number.
        ok = self._arrays["step"][rows] == (step[:, None] - back)
        for k in range(STACK - 2, -1, -1):  # fall back to the next newer frame, which is ok by induction
            rows[:, k] = np.where(ok[:, k], rows[:, k], rows[:, k + 1])
            ok[:, k] = ok[:, k] | ok[:, k + 1]
        frames = self._arrays["frames"][rows.ravel()].reshape(len(index), STACK, *self.frame_shape)
        return np.moveaxis(frames, 1, -1)

    def sample(self, batch_size: int, rng: np.random.Generator, n_step: int, gamma: float, clip_rewards: bool = True):
        """A uniform batch of n-step transitions.

        Returns ``(states, actions, returns, next_states, discounts)``: ``returns`` is
        the discounted sum of the (sign-clipped) rewards over up to ``n_step`` steps
        (fewer when the episode ends), ``discounts`` is ``gamma**k`` for bootstrapping
        from ``next_states``, or 0 when the game ended inside the window.
        """
        if self.size < 2:
            raise ValueError("the replay memory is empty: add episodes before sampling.")
        a = self._arrays
        index = rng.integers(0, self.size, size=batch_size * 2)
        index = index[a["has_action"][index]]
        while len(index) < batch_size:  # final frames (about 1 in 700 steps) are redrawn
            more = rng.integers(0, self.size, size=batch_size)
            index = np.concatenate([index, more[a["has_action"][more]]])
        index = index[:batch_size]
        returns = np.zeros(batch_size, np.float32)
        discount = np.ones(batch_size, np.float32)
        alive = np.ones(batch_size, bool)  # still accumulating rewards
        next_index = index.copy()
        for k in range(n_step):
            row = (index + k) % self.capacity
            live = alive & a["has_action"][row]
            reward = a["rewards"][row]
            if clip_rewards:
                reward = np.sign(reward)
            returns += np.where(live, discount * reward, 0.0)
            discount = np.where(live, discount * gamma, discount)
            next_index = np.where(live, (row + 1) % self.capacity, next_index)
            ended = live & a["terminal"][row]
            discount = np.where(ended, 0.0, discount)
            alive = live & ~a["terminal"][row]
        return self._stack(index), a["actions"][index].astype(np.int32), returns, self._stack(next_index), discount

"""Atari environments for Spark executors: creation, frame preprocessing, episodes under a policy.

Everything here runs where the episodes run (a Spark task or a test), so it
imports gymnasium and ale-py lazily; the ROMs ship inside the ale-py wheel, so
nothing is downloaded. Observations are grayscale frames from the emulator,
cropped to the playfield and averaged over 2x2 pixel blocks (210x160 -> 86x80
for Ms. Pac-Man, whose score and lives sit below row 172); a policy sees the
last :data:`STACK` of them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import numpy as np

STACK = 4  # frames a policy sees: one frame cannot show which way a ghost moves
PLAYFIELD_ROWS = 172  # Ms. Pac-Man: rows 172-209 hold the score and the lives left
FRAME_SHAPE = (PLAYFIELD_ROWS // 2, 80)


@dataclass(frozen=True)
class EnvSpec:
    """How to build an environment; picklable, so it travels to executors."""

    env_id: str = "ALE/MsPacman-v5"
    frame_skip: int = 4  # emulator frames per agent step
    sticky_actions: float = 0.25  # probability the emulator repeats the previous action (Machado et al. 2018)
    max_episode_steps: int = 27_000  # agent steps: 108,000 frames at frame skip 4, the ALE's usual cap

    def make(self, render: bool = False):
        """A gymnasium environment giving grayscale frames (and RGB renders when ``render``)."""
        import ale_py
        import gymnasium as gym

        gym.register_envs(ale_py)
        if self.env_id not in gym.envs.registry:
            atari = sorted(k for k in gym.envs.registry if k.startswith("ALE/"))
            raise ValueError(
                f"--env-id {self.env_id!r} is not a registered environment; expected an Atari id such as "
                f"'ALE/MsPacman-v5' (ale-py {ale_py.__version__} registers {len(atari)}, e.g. {atari[:3]})."
            )
        return gym.make(
            self.env_id,
            obs_type="grayscale",
            frameskip=self.frame_skip,
            repeat_action_probability=self.sticky_actions,
            max_episode_steps=self.max_episode_steps,
            render_mode="rgb_array" if render else None,
        )

    def num_actions(self) -> int:
        env = self.make()
        try:
            return int(env.action_space.n)
        finally:
            env.close()


def preprocess(frame: np.ndarray) -> np.ndarray:
    """A 210x160 grayscale frame -> the 86x80 playfield, 2x2 blocks averaged (uint8)."""
    playfield = frame[:PLAYFIELD_ROWS].reshape(FRAME_SHAPE[0], 2, FRAME_SHAPE[1], 2)
    return playfield.mean(axis=(1, 3), dtype=np.float32).astype(np.uint8)


@dataclass
class Episode:
    """One played episode: frames ``0..T`` (preprocessed), actions/rewards ``0..T-1``.

    ``terminated`` is True when the game ended (no bootstrapping from the last
    frame); False when the step cap cut it short.
    """

    seed: int
    frames: np.ndarray  # (T+1, 86, 80) uint8
    actions: np.ndarray  # (T,) uint8
    rewards: np.ndarray  # (T,) float32, the game's raw score increments
    terminated: bool
    render: list | None = None  # RGB frames when recorded

    @property
    def length(self) -> int:
        return len(self.actions)

    @property
    def score(self) -> float:
        return float(self.rewards.sum())

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, seed=self.seed, frames=self.frames, actions=self.actions, rewards=self.rewards,
                 terminated=self.terminated)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Episode:
        with np.load(io.BytesIO(data)) as z:
            return cls(int(z["seed"]), z["frames"], z["actions"], z["rewards"], bool(z["terminated"]))


def play(
    spec: EnvSpec,
    seed: int,
    choose_action: Callable[[np.ndarray, np.random.Generator], int],
    *,
    record: bool = False,
    render_every: int = 2,
    max_render_frames: int = 2000,
) -> Episode:
    """Plays one episode from ``env.reset(seed=seed)``.

    ``choose_action(stacked_frames (86, 80, STACK) uint8, rng)`` picks each action;
    ``rng`` is seeded from ``seed`` too, so an episode is reproducible given the
    policy. ``record`` keeps the RGB screens for a video.
    """
    env = spec.make(render=record)
    rng = np.random.default_rng(seed)
    env.action_space.seed(seed)
    try:
        observation, _ = env.reset(seed=seed)
        frames = [preprocess(observation)]
        actions, rewards, render = [], [], [] if record else None
        stack = np.repeat(frames[0][:, :, None], STACK, axis=2)
        terminated = False
        while True:
            if record and len(actions) % render_every == 0 and len(render) < max_render_frames:
                render.append(env.render())
            action = int(choose_action(stack, rng))
            observation, reward, terminated, truncated, _ = env.step(action)
            frame = preprocess(observation)
            frames.append(frame)
            actions.append(action)
            rewards.append(reward)
            stack = np.concatenate([stack[:, :, 1:], frame[:, :, None]], axis=2)
            if terminated or truncated:
                break
        return Episode(seed, np.stack(frames), np.asarray(actions, np.uint8), np.asarray(rewards, np.float32),
                       bool(terminated), render)
    finally:
        env.close()


def random_policy(num_actions: int) -> Callable[[np.ndarray, np.random.Generator], int]:
    return lambda stack, rng: int(rng.integers(num_actions))


def epsilon_greedy(q_values: Callable[[np.ndarray], np.ndarray], num_actions: int, epsilon: float):
    """Random action with probability ``epsilon``, else argmax of ``q_values(stack)``."""

    def choose(stack: np.ndarray, rng: np.random.Generator) -> int:
        if rng.random() < epsilon:
            return int(rng.integers(num_actions))
        return int(np.argmax(q_values(stack)))

    return choose


def save_gif(frames: list, path: str, fps: int = 15) -> None:
    """Writes RGB screens as an animated GIF played at ``fps``."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    if not images:
        raise ValueError("no frames to write to the GIF: record the episode with record=True")
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0, optimize=True)

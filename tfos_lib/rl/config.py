"""The options of a DQN run: environment, schedule, network training, replay, evaluation, resuming.

:class:`DQNConfig` extends the options every job takes (:class:`tfos_lib.job.JobConfig`:
``--num-workers`` learners, ``--backend``, ``--seed``, ``--output-dir``, restarts),
so a DQN job's command line is generated from it, and it holds the two schedules
every part of a run must agree on: the exploration rate after ``n`` agent steps and
the number of gradient updates owed after ``n`` agent steps. Actors, learners and
the driver loop (:mod:`tfos_lib.rl.actors`, :mod:`tfos_lib.rl.learner`,
:mod:`tfos_lib.rl.dqn`) all read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tfos_lib import job
from tfos_lib.rl.atari import EnvSpec

__all__ = ["DQNConfig"]


@dataclass(frozen=True)
class DQNConfig(job.JobConfig):
    """Options of a DQN job (the common --epochs does not apply: training is measured in environment steps)."""

    env_id: str = field(default="ALE/MsPacman-v5", metadata={"help": "gymnasium Atari environment id"})
    frame_skip: int = field(default=4, metadata={"help": "emulator frames per agent step"})
    sticky_actions: float = field(default=0.25, metadata={"help": "probability the emulator repeats the last action"})
    max_episode_steps: int = field(default=27_000, metadata={"help": "agent steps after which an episode is cut"})
    env_steps: int = field(default=200_000, metadata={"help": "agent steps to train for (all actors together)"})
    steps_per_round: int = field(default=4_000, metadata={"help": "agent steps per actor round (whole episodes)"})
    num_actors: int = field(default=0, metadata={"help": "actor tasks per round; 0: the task slots the learners leave free"})
    batch_size: int = field(default=32, metadata={"help": "global minibatch size (summed over learner workers)"})
    learning_rate: float = field(default=1e-4, metadata={"help": "Adam learning rate"})
    gamma: float = field(default=0.99, metadata={"help": "discount factor"})
    n_step: int = field(default=3, metadata={"help": "steps of real reward before bootstrapping"})
    double_dqn: bool = field(default=True, metadata={"help": "Double-DQN targets (online net picks, target net scores)"})
    replay_capacity: int = field(default=100_000, metadata={"help": "replay memory size in agent steps (all learners)"})
    learning_starts: int = field(default=20_000, metadata={"help": "agent steps collected before the first update"})
    updates_per_step: float = field(default=0.25, metadata={"help": "gradient updates per agent step collected"})
    target_update: int = field(default=2_000, metadata={"help": "updates between target-network syncs"})
    epsilon_start: float = field(default=1.0, metadata={"help": "exploration rate at the start"})
    epsilon_end: float = field(default=0.05, metadata={"help": "exploration rate after the decay"})
    epsilon_decay_steps: int = field(default=100_000, metadata={"help": "agent steps of linear epsilon decay"})
    eval_epsilon: float = field(default=0.05, metadata={"help": "exploration rate during evaluation"})
    eval_episodes: int = field(default=100, metadata={"help": "evaluation episodes for the agent and the random policy"})
    eval_seed: int = field(default=10_000, metadata={"help": "first reset seed of the evaluation episodes"})
    checkpoint_every_rounds: int = field(default=5, metadata={"help": "learner checkpoint period, in rounds"})
    round_timeout: float = field(default=1800.0, metadata={"help": "seconds a learner waits for the next round"})

    def __post_init__(self):
        super().__post_init__()
        for name, low in (("frame_skip", 1), ("env_steps", 1), ("steps_per_round", 1), ("num_actors", 0),
                          ("n_step", 1), ("learning_starts", 0), ("target_update", 1), ("eval_episodes", 1),
                          ("checkpoint_every_rounds", 1), ("max_episode_steps", 1), ("epsilon_decay_steps", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"{job._flag(name)} must be >= {low}; got {getattr(self, name)}.")
        for name in ("sticky_actions", "gamma", "epsilon_start", "epsilon_end", "eval_epsilon"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{job._flag(name)} must be between 0 and 1; got {getattr(self, name)}.")
        if self.batch_size % self.num_workers:
            raise ValueError(
                f"--batch-size {self.batch_size} must be a multiple of --num-workers {self.num_workers} "
                "(each learner samples an equal share of the minibatch from its own replay memory)."
            )
        if self.replay_capacity // self.num_workers < self.max_episode_steps + 1:
            raise ValueError(
                f"--replay-capacity {self.replay_capacity} is split over {self.num_workers} learner(s), and each "
                f"share must hold the longest episode ({self.max_episode_steps + 1} frames, --max-episode-steps + 1): "
                f"raise --replay-capacity to {self.num_workers * (self.max_episode_steps + 1)} or lower --max-episode-steps."
            )

    @property
    def env(self) -> EnvSpec:
        return EnvSpec(self.env_id, self.frame_skip, self.sticky_actions, self.max_episode_steps)

    def epsilon(self, env_steps: int) -> float:
        """Linear decay from ``epsilon_start`` to ``epsilon_end`` over ``epsilon_decay_steps``."""
        fraction = min(1.0, env_steps / self.epsilon_decay_steps)
        return self.epsilon_start + fraction * (self.epsilon_end - self.epsilon_start)

    def updates_due(self, env_steps: int) -> int:
        """Gradient updates the learners owe after ``env_steps`` agent steps (the same on every rank)."""
        if env_steps < self.learning_starts:
            return 0
        return int((env_steps - self.learning_starts) * self.updates_per_step)

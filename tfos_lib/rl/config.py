"""The options of a DQN run: environment, schedule, network training, replay, evaluation, resuming.

:class:`DQNConfig` extends the options of a job whose workers the launcher starts
(:class:`tfos_lib.job.LaunchConfig`: ``--num-workers`` learners, ``--backend``,
``--batch-size`` shared by the learners, restarts, ``--seed``, ``--output-dir``; no
``--epochs``: training is measured in agent steps), so a DQN job's command line is
generated from it, and it holds the two schedules
every part of a run must agree on: the exploration rate after ``n`` agent steps and
the number of gradient updates owed after ``n`` agent steps. Actors, learners and
the driver loop (:mod:`tfos_lib.rl.actors`, :mod:`tfos_lib.rl.learner`,
:mod:`tfos_lib.rl.dqn`) all read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tfos_lib import job
from tfos_lib.rl.atari import EnvSpec

__all__ = ["DQNConfig"]


@dataclass(frozen=True)
class DQNConfig(job.LaunchConfig):
    """Options of a DQN job; the bounds of each are declared with it and checked by :class:`~tfos_lib.job.JobConfig`."""

    env_id: str = job.option("ALE/MsPacman-v5", "gymnasium Atari environment id")
    frame_skip: int = job.option(4, "emulator frames per agent step", min=1)
    sticky_actions: float = job.option(0.25, "probability the emulator repeats the last action", min=0.0, max=1.0)
    max_episode_steps: int = job.option(27_000, "agent steps after which an episode is cut", min=1)
    env_steps: int = job.option(200_000, "agent steps to train for (all actors together)", min=1)
    steps_per_round: int = job.option(4_000, "agent steps per actor round (whole episodes)", min=1)
    num_actors: int = job.option(0, "actor tasks per round; 0: the task slots the learners leave free", min=0)
    batch_size: int = job.option(32, "global minibatch size (summed over learner workers)", min=1)
    learning_rate: float = job.option(1e-4, "Adam learning rate", greater_than=0.0)
    gamma: float = job.option(0.99, "discount factor", min=0.0, max=1.0)
    n_step: int = job.option(3, "steps of real reward before bootstrapping", min=1)
    double_dqn: bool = job.option(True, "Double-DQN targets (online net picks, target net scores)")
    replay_capacity: int = job.option(100_000, "replay memory size in agent steps (all learners)", min=1)
    learning_starts: int = job.option(20_000, "agent steps collected before the first update", min=0)
    updates_per_step: float = job.option(0.25, "gradient updates per agent step collected", greater_than=0.0)
    target_update: int = job.option(2_000, "updates between target-network syncs", min=1)
    epsilon_start: float = job.option(1.0, "exploration rate at the start", min=0.0, max=1.0)
    epsilon_end: float = job.option(0.05, "exploration rate after the decay", min=0.0, max=1.0)
    epsilon_decay_steps: int = job.option(100_000, "agent steps of linear epsilon decay", min=1)
    eval_epsilon: float = job.option(0.05, "exploration rate during evaluation", min=0.0, max=1.0)
    eval_episodes: int = job.option(100, "evaluation episodes for the agent and the random policy", min=1)
    eval_seed: int = job.option(10_000, "first reset seed of the evaluation episodes")
    checkpoint_every_rounds: int = job.option(5, "learner checkpoint period, in rounds", min=1)
    round_timeout: float = job.option(1800.0, "seconds a learner waits for the next round", greater_than=0.0)

    def __post_init__(self):
        super().__post_init__()
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

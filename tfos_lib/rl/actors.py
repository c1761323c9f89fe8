"""DQN actors on Spark: each round of episodes is one Spark job, its tasks play with the newest policy.

A task (one per actor) plays whole episodes from its own reset seeds under an
epsilon-greedy policy of the broadcast weights (or uniformly random actions)
until it has its share of the round's agent steps, and returns them as rows. The
same machinery plays seeded evaluation episodes (:func:`tfos_lib.rl.dqn.evaluate`).
Everything here runs on the driver, except the task functions and
:func:`play_episodes`, which run in the executors' Python workers (TensorFlow
imported there, one thread, the network cached per worker).
"""

from __future__ import annotations

import os

import numpy as np

from tfos_lib.rl.atari import EnvSpec
from tfos_lib.rl.config import DQNConfig
from tfos_lib.rl.network import build_q_network

__all__ = ["actor_slots", "collect_round", "executor_label", "play_episodes", "run_episodes_job"]

_POLICY_CACHE: dict = {}  # per Python worker: (num_actions,) -> Keras model, reused across tasks


def _q_function(num_actions: int, weights: list[np.ndarray]):
    """``stack -> Q-values`` for the given weights, on a network cached in this Python worker."""
    from tfos_lib.tfenv import import_tensorflow

    tf = import_tensorflow(num_cpus=1)  # an actor task has one core
    model = _POLICY_CACHE.get(num_actions)
    if model is None:
        model = _POLICY_CACHE[num_actions] = build_q_network(tf, num_actions)
        model.predict_step = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    model.set_weights(weights)
    return lambda stack: model.predict_step(stack[None]).numpy()[0]


def play_episodes(spec: EnvSpec, num_actions: int, weights, epsilon: float, seeds, min_steps: int | None = None,
                  record_seed: int | None = None):
    """Plays one episode per seed (stopping once ``min_steps`` steps are played, if given) with the
    epsilon-greedy policy of ``weights``, or uniformly random actions when ``weights`` is None.

    Yields :class:`~tfos_lib.rl.atari.Episode`; the one of ``record_seed`` carries its RGB screens.
    """
    from tfos_lib.rl import atari

    if weights is None:
        choose = atari.random_policy(num_actions)
    else:
        choose = atari.epsilon_greedy(_q_function(num_actions, weights), num_actions, epsilon)
    steps = 0
    for seed in seeds:
        episode = atari.play(spec, seed, choose, record=seed == record_seed)
        steps += episode.length
        yield episode
        if min_steps is not None and steps >= min_steps:
            return


def executor_label() -> str:
    """``host:directory`` of the running Spark task: executors get their own working directory
    (local-cluster, standalone, YARN), so this tells apart the executors of one host."""
    import socket

    return f"{socket.gethostname()}:{os.path.basename(os.getcwd())}"


def run_episodes_job(spark, description: str, items: list, slices: int, weights, make_task) -> list:
    """Runs ``items`` through ``make_task(weights_broadcast)`` as one Spark job and collects the rows.

    The weights travel as one broadcast (None: the random policy), destroyed afterwards.
    """
    sc = spark.sparkContext
    broadcast = sc.broadcast(weights) if weights is not None else None
    sc.setJobDescription(description)
    try:
        return sc.parallelize(items, slices).mapPartitions(make_task(broadcast)).collect()
    finally:
        sc.setJobDescription(None)
        if broadcast is not None:
            broadcast.destroy()


def collect_round(spark, cfg: DQNConfig, num_actions: int, round_index: int, num_actors: int, weights, epsilon: float):
    """One actor round as a Spark job: ``(actor_id, seed, length, score, executor, episode bytes)`` rows, collected.

    Actor ``a`` of round ``r`` plays reset seeds ``seed*10^9 + r*10^6 + a*10^4 + i`` (distinct everywhere;
    evaluation seeds are small numbers, so training never replays an evaluation episode).
    """
    spec, min_steps = cfg.env, -(-cfg.steps_per_round // num_actors)

    def make_task(broadcast):
        def task(partition):
            for actor_id, first_seed in partition:
                value = broadcast.value if broadcast is not None else None
                seeds = iter(range(first_seed, first_seed + 1_000_000))
                where = executor_label()
                for episode in play_episodes(spec, num_actions, value, epsilon, seeds, min_steps):
                    yield actor_id, episode.seed, episode.length, episode.score, where, episode.to_bytes()

        return task

    starts = [(a, cfg.seed * 10**9 + (round_index + 1) * 10**6 + a * 10**4) for a in range(num_actors)]
    description = f"DQN actor round {round_index + 1}: {num_actors} actors, epsilon {epsilon:.3f}"
    return run_episodes_job(spark, description, starts, num_actors, weights, make_task)


def actor_slots(spark, cfg: DQNConfig) -> int:
    """Actor tasks per round: ``--num-actors``, or the task slots left once the learners hold theirs."""
    from tfos_lib.launcher import expected_slots

    slots = expected_slots(dict(spark.sparkContext.getConf().getAll())) or spark.sparkContext.defaultParallelism
    actors = cfg.num_actors or slots - cfg.num_workers
    if cfg.backend != "local" and slots < cfg.num_workers + 1:
        raise ValueError(
            f"--num-workers {cfg.num_workers} learner(s) plus at least one actor need {cfg.num_workers + 1} task "
            f"slots at once, but the Spark configuration provides {slots}. Use fewer learners or more executor cores."
        )
    return max(1, actors)

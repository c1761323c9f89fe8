"""Deep Q-learning on Spark, the driver's side: train (actors and learners at once) and evaluate.

Training runs two things at once:

* **Actors** (:mod:`tfos_lib.rl.actors`): each *round* is one Spark job of
  ``num_actors`` tasks. Every task plays whole episodes (own seeds) with the
  newest published policy weights (a broadcast) under the round's epsilon, and
  returns them; :func:`train` writes the round to an
  :class:`~tfos_lib.rl.experience.ExperienceChannel`, its episodes dealt out over
  the learner ranks.
* **Learners** (:func:`tfos_lib.rl.learner.learner_fn` under :func:`tfos_lib.run`,
  started once in a driver thread): each rank adds its share of every round to
  its own replay memory and trains; the chief publishes the weights after every
  round.

Actors run at most one round ahead of the learners. :func:`evaluate` plays seeded
episodes with a trained policy (or the random one) spread over the executors.

The agent is the DQN of Mnih et al. (2015) with Double-DQN targets (van Hasselt
et al. 2016) and n-step returns: 4 stacked 86x80 grayscale frames, sign-clipped
rewards, Huber loss, a target network synced every ``target_update`` updates,
an epsilon schedule, uniform replay. Its options are :class:`~tfos_lib.rl.config.DQNConfig`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid

import numpy as np

from tfos_lib import job, storage
from tfos_lib.rl import actors
from tfos_lib.rl.checkpoint import read_manifest
from tfos_lib.rl.config import DQNConfig
from tfos_lib.rl.experience import ExperienceChannel
from tfos_lib.rl.learner import learner_fn

__all__ = ["evaluate", "train"]

log = logging.getLogger("tfos_lib.rl.dqn")


class _LearnerThread(threading.Thread):
    """Runs the learners (``tfos_lib.run``) beside the actor loop; keeps their result or error."""

    def __init__(self, launch):
        super().__init__(name="tfos-dqn-learners", daemon=True)
        self._launch = launch
        self.result = None
        self.error: BaseException | None = None

    def run(self):
        try:
            self.result = self._launch()
        except BaseException as error:  # handed to the driver loop, which re-raises it
            self.error = error



def _watched_round(spark, cfg: DQNConfig, learners: _LearnerThread, collect, round_index: int):
    """``collect()`` (one actor round's Spark job) cancelled after ``cfg.round_timeout`` s or when the learners fail."""
    group = f"tfos-dqn-actors-{round_index}"
    box: dict = {}

    def work():
        spark.sparkContext.setJobGroup(group, f"DQN actor round {round_index}", interruptOnCancel=True)
        try:
            box["rows"] = collect()
        except BaseException as error:  # re-raised on the driver loop below
            box["error"] = error

    thread = threading.Thread(target=work, name=group, daemon=True)
    started = time.monotonic()
    thread.start()
    while thread.is_alive():
        thread.join(0.5)
        learners_failed = learners.error is not None or not learners.is_alive()
        if thread.is_alive() and (learners_failed or time.monotonic() - started > cfg.round_timeout):
            spark.sparkContext.cancelJobGroup(group)
            thread.join(30)
            if learners_failed and learners.error is not None:
                raise learners.error
            raise TimeoutError(
                f"actor round {round_index} took longer than {cfg.round_timeout:.0f} s (--round-timeout)"
                if not learners_failed else f"the learners stopped during actor round {round_index}"
            )
    if "error" in box:
        raise box["error"]
    return box["rows"]


def train(spark, cfg: DQNConfig, num_actions: int) -> dict:
    """Actor rounds until ``env_steps`` agent steps are played, learners training alongside.

    Resumes where the last learner checkpoint in ``output_dir`` left off. Returns the
    learners' summary plus the training episodes and timings.
    """
    storage.require_mounted(cfg.output_dir, "the DQN actors and learners exchange experience through files under it")
    channel = ExperienceChannel(cfg.output_dir)
    checkpoint_dir = os.path.join(storage.normalize(cfg.output_dir), "checkpoints", "learner")
    manifest = read_manifest(checkpoint_dir)
    done_rounds, env_steps = 0, 0
    if manifest is not None:  # only what the published manifest names (a crashed save left it unchanged)
        state_path = os.path.join(checkpoint_dir, manifest["state"])
        with open(state_path) as f:
            saved = json.load(f)
        done_rounds, env_steps = saved["rounds_consumed"], saved["env_steps"]
        log.info("resuming after round %d (%s env steps) from %s", done_rounds, f"{env_steps:,}", state_path)
    channel.reset_after(done_rounds)
    history = channel.manifests(done_rounds)
    num_actors = actors.actor_slots(spark, cfg)
    token = uuid.uuid4().hex[:8]  # names this launch's checkpoint versions (tfos_lib.rl.checkpoint)
    learners = _LearnerThread(lambda: job.launch(learner_fn, cfg, {}, spark, extra_args=(num_actions, token)))
    learners.start()
    started = time.perf_counter()
    round_index, actor_seconds = done_rounds, 0.0
    try:
        while env_steps < cfg.env_steps:
            # Stay at most one round ahead of the learners (they train on round r while actors play r + 1).
            waiting_since = time.monotonic()
            while max(done_rounds, channel.progress()["rounds_consumed"]) < round_index - 1 and learners.is_alive():
                if time.monotonic() - waiting_since > cfg.round_timeout:
                    raise TimeoutError(
                        f"the learners consumed no experience round for {cfg.round_timeout:.0f} s (they are at round "
                        f"{channel.progress()['rounds_consumed']}, the actors at {round_index}); see the executor logs."
                    )
                time.sleep(0.2)
            if learners.error is not None or not learners.is_alive():
                break
            policy = channel.latest_policy()
            epsilon = cfg.epsilon(env_steps)
            weights = policy[1] if policy is not None and epsilon < 1.0 else None
            t0 = time.perf_counter()
            rows = _watched_round(spark, cfg, learners, lambda: actors.collect_round(
                spark, cfg, num_actions, round_index, num_actors, weights, epsilon), round_index)
            actor_seconds += time.perf_counter() - t0
            per_rank = [[] for _ in range(cfg.num_workers)]
            rank_steps = [0] * cfg.num_workers
            for i, (_, _, length, _, _, data) in enumerate(sorted(rows, key=lambda r: (r[0], r[1]))):
                rank = int(np.argmin(rank_steps)) if i >= cfg.num_workers else i  # balance steps over ranks
                per_rank[rank].append(data)
                rank_steps[rank] += length
            steps = sum(rank_steps)
            info = {
                "round": round_index, "env_steps": steps, "rank_steps": rank_steps, "epsilon": epsilon,
                "policy_version": policy[0] if policy is not None else None, "env_steps_before": env_steps,
                "episodes": [{"actor": r[0], "seed": r[1], "length": r[2], "score": r[3], "executor": r[4]}
                             for r in rows],
            }
            channel.write_round(round_index, per_rank, info)
            history.append(info)
            env_steps += steps
            round_index += 1
            scores = [r[3] for r in rows]
            log.info("actor round %d: %d episodes, %s steps (total %s of %s), epsilon %.3f, policy of round %s, "
                     "mean score %.1f", round_index, len(rows), f"{steps:,}", f"{env_steps:,}", f"{cfg.env_steps:,}",
                     epsilon, info["policy_version"], float(np.mean(scores)))
        if learners.error is None and learners.is_alive():
            channel.finish(round_index)
    except BaseException as error:
        channel.abort(f"{type(error).__name__}: {error}")
        learners.join(timeout=120)
        raise
    learners.join(timeout=cfg.round_timeout)
    if learners.is_alive():
        raise TimeoutError(
            f"the learners did not finish within {cfg.round_timeout:.0f} s (--round-timeout) after the last actor "
            "round; see the executor logs."
        )
    if learners.error is not None:
        raise learners.error
    if learners.result is None:
        raise RuntimeError("the learners stopped without a result")
    return {**learners.result, "episodes": [e | {"env_steps_before": h["env_steps_before"], "round": h["round"]}
                                            for h in history for e in h["episodes"]],
            "actors": num_actors, "actor_seconds": actor_seconds, "train_seconds": time.perf_counter() - started}


def evaluate(spark, cfg: DQNConfig, num_actions: int, weights, record_seed: int | None = None) -> dict:
    """Plays ``eval_episodes`` episodes from reset seeds ``eval_seed ..`` spread over the executors.

    ``weights`` None is the uniformly random policy. Returns the scores, lengths and
    (when ``record_seed`` is one of the seeds) that episode's RGB screens.
    """
    seeds = list(range(cfg.eval_seed, cfg.eval_seed + cfg.eval_episodes))
    spec, epsilon = cfg.env, cfg.eval_epsilon

    def make_task(broadcast):
        def task(partition):
            value = broadcast.value if broadcast is not None else None
            episodes = actors.play_episodes(spec, num_actions, value, epsilon, list(partition), record_seed=record_seed)
            for episode in episodes:
                yield episode.seed, episode.length, episode.score, episode.render

        return task

    slices = min(len(seeds), max(1, spark.sparkContext.defaultParallelism) * 4)
    label = "random policy" if weights is None else f"agent (epsilon {epsilon})"
    description = f"DQN evaluation: {len(seeds)} episodes of the {label}"
    rows = sorted(actors.run_episodes_job(spark, description, seeds, slices, weights, make_task))
    scores = np.array([r[2] for r in rows], np.float64)
    render = next((r[3] for r in rows if r[3]), None)
    return {
        "episodes": len(rows), "epsilon": None if weights is None else epsilon,
        "mean": float(scores.mean()), "std": float(scores.std(ddof=1)) if len(scores) > 1 else 0.0,
        "min": float(scores.min()), "max": float(scores.max()), "median": float(np.median(scores)),
        "mean_length": float(np.mean([r[1] for r in rows])), "scores": scores.tolist(),
        "episode_seeds": [r[0] for r in rows], "lengths": [r[1] for r in rows], "_render": render,
    }

"""Ms. Pac-Man with deep Q-learning: actors in Spark executors, learners through the launcher.

Book: "TensorFlow Machine Learning Projects" (Packt, 2018), chapter 14. The
book plays gym's ``MsPacman-v0`` on raw 210x160x3 frames with a one-hidden-layer
"DQN" that has no target network, no exploration schedule and a softmax output
trained with cross-entropy on Bellman targets; it reports a random policy at
219.46 on average over 500 episodes (max 1070, min 70) and its agent at 270.5
over 100 episodes (max 580, min 70).

This job trains a real DQN (``tfos_lib.rl.dqn``): 4 stacked 86x80 grayscale
frames, sign-clipped rewards, n-step Double-DQN targets from a target network,
Huber loss, uniform replay, a linear epsilon schedule. Actors play whole
episodes in Spark tasks with the newest weights; the learners (``--num-workers``
of them, data-parallel) train alongside. Then the trained agent and the random
policy play the same ``--eval-episodes`` seeded episodes, spread over the
executors. Rerunning with the same ``--output-dir`` continues training from the
last learner checkpoint (weights, optimizer, replay memory).

Run::

    ./spark-submit.sh pacman_dqn                                  # 200k agent steps (800k frames)
    ./spark-submit.sh pacman_dqn -- --env-steps 20000 --learning-starts 5000 --eval-episodes 10   # a quick look
    ./spark-submit.sh pacman_dqn --master 'local-cluster[3,1,3072]' -- --num-workers 2

Writes to ``--output-dir``: metrics.json (random policy vs agent: mean, std,
min, max over the evaluation episodes; env steps, frames, updates, wall time),
episodes.csv (every training and evaluation episode), training_curves.png (training
curve and evaluation distributions), episode.gif (one evaluation episode),
models/pacman_dqn/<version>/ (the online Q-network, a SavedModel in the TF Serving layout:
input ``inputs``, uint8 ``(84, 84, 4)`` frame stacks; output ``outputs``, one Q-value
per action), and checkpoints/ (the learners' networks, optimizer, progress and replay
positions under one manifest, :mod:`tfos_lib.rl.checkpoint`).
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass

import numpy as np

from tfos_lib import job, report
from tfos_lib.rl import atari, dqn

BOOK_REFERENCE = {
    "random_policy": {"episodes": 500, "mean": 219.46, "max": 1070.0, "min": 70.0},
    "book_dqn": {"episodes": 100, "mean": 270.5, "max": 580.0, "min": 70.0},
    "environment": "gym 0.10.5 MsPacman-v0 (frame skip 2-4 at random, sticky actions 0.25), raw score",
    "source": "chapter 14, L7852 and L8090-8095 of the seed text",
}


@dataclass(frozen=True)
class Config(dqn.DQNConfig):
    # No dataset to read: the game's ROM ships inside the ale-py wheel.
    data_dir: str | None = job.option(None, "not used: the ROM ships in the ale-py wheel", command_line=False)
    output_dir: str = job.option("output/pacman_dqn", "where results go")


def write_episodes_csv(path: str, training: list[dict], evaluations: dict[str, dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["phase", "round", "env_steps_before", "actor", "executor", "seed", "length", "score"])
        for e in training:
            writer.writerow(["train", e["round"], e["env_steps_before"], e["actor"], e["executor"], e["seed"],
                             e["length"], e["score"]])
        for phase, result in evaluations.items():
            for seed, length, score in zip(result["episode_seeds"], result["lengths"], result["scores"]):
                writer.writerow([f"eval-{phase}", "", "", "", "", seed, length, score])


def plot_rewards(path: str, training: list[dict], evaluations: dict[str, dict]) -> None:
    fig = report.new_figure((13, 4.8))
    curve, box = fig.subplots(1, 2, width_ratios=[2, 1])
    if training:
        x = np.array([e["env_steps_before"] for e in training])
        y = np.array([e["score"] for e in training])
        curve.scatter(x, y, s=6, alpha=0.3, label="training episode (epsilon-greedy)")
        window = max(1, min(50, len(y) // 10))
        curve.plot(x[window - 1:], np.convolve(y, np.ones(window) / window, mode="valid"), color="C1",
                   label=f"moving average of {window}")
    for name, result, color in (("random", evaluations["random"], "C7"), ("agent", evaluations["agent"], "C2")):
        curve.axhline(result["mean"], color=color, linestyle="--", label=f"evaluation mean, {name}: {result['mean']:.0f}")
    curve.axhline(BOOK_REFERENCE["book_dqn"]["mean"], color="C3", linestyle=":", label="book's DQN: 270.5")
    curve.set_xlabel("agent steps played")
    curve.set_ylabel("episode score")
    curve.set_title("Ms. Pac-Man: training episodes")
    curve.legend(fontsize=8, loc="upper left")
    box.boxplot([evaluations["random"]["scores"], evaluations["agent"]["scores"]], showmeans=True)
    box.set_xticks([1, 2], ["random policy", f"agent (eps {evaluations['agent']['epsilon']})"])
    box.set_title(f"{evaluations['agent']['episodes']} evaluation episodes, same seeds")
    report.save_figure(fig, path)


def main(argv=None) -> dict:
    log = job.setup_logging()
    cfg = job.parse_config(Config, argv, __doc__)
    run = job.JobRun("pacman_dqn", cfg)
    os.makedirs(cfg.output_dir, exist_ok=True)
    spark = job.spark_session("pacman_dqn")
    num_actions = cfg.env.num_actions()
    log.info("%s: %d actions; training for %s agent steps with %d learner(s)", cfg.env_id, num_actions,
             f"{cfg.env_steps:,}", cfg.num_workers)
    result = dqn.train(spark, cfg, num_actions)

    _, weights = dqn.ExperienceChannel(cfg.output_dir).latest_policy()
    t0 = time.perf_counter()
    evaluations = {
        "random": dqn.evaluate(spark, cfg, num_actions, None),
        "agent": dqn.evaluate(spark, cfg, num_actions, weights, record_seed=cfg.eval_seed),
    }
    eval_seconds = time.perf_counter() - t0
    render = evaluations["agent"].pop("_render")
    evaluations["random"].pop("_render")
    if render:
        atari.save_gif(render, os.path.join(cfg.output_dir, "episode.gif"))
    for name, e in evaluations.items():
        log.info("evaluation, %s: mean %.1f +- %.1f (std), min %.0f, max %.0f over %d episodes", name, e["mean"],
                 e["std"], e["min"], e["max"], e["episodes"])

    random_, agent = evaluations["random"], evaluations["agent"]
    # Welch's standard error of the difference of the two means.
    stderr = float(np.hypot(random_["std"] / np.sqrt(random_["episodes"]), agent["std"] / np.sqrt(agent["episodes"])))
    metrics = run.write_metrics(
        data={"source": f"gymnasium {cfg.env_id}, played by the actors (no dataset)",
              "environment": {"env_id": cfg.env_id, "frame_skip": cfg.frame_skip, "sticky_actions": cfg.sticky_actions,
                              "max_episode_steps": cfg.max_episode_steps, "actions": num_actions},
              "training_episodes": len(result["episodes"]), "env_steps": result["env_steps"],
              "evaluation_episodes": agent["episodes"] + random_["episodes"]},
        results={
            "evaluation": evaluations,
            "agent_minus_random": {"mean": agent["mean"] - random_["mean"], "standard_error": stderr},
            "training": {
                "env_steps": result["env_steps"], "frames": result["env_steps"] * cfg.frame_skip,
                "updates": result["updates"], "transitions_trained_on": result["updates"] * cfg.batch_size,
                "rounds": result["rounds"], "episodes": len(result["episodes"]), "learners": cfg.num_workers,
                "actors": result["actors"], "train_seconds": result["train_seconds"],
                "actor_seconds": result["actor_seconds"], "eval_seconds": eval_seconds,
                "learner_rounds": result["history"],
            },
        },
        book_reference=BOOK_REFERENCE,
    )
    write_episodes_csv(os.path.join(cfg.output_dir, "episodes.csv"), result["episodes"], evaluations)
    plot_rewards(os.path.join(cfg.output_dir, "training_curves.png"), result["episodes"], evaluations)
    log.info("agent %.1f vs random %.1f (difference %.1f +- %.1f standard error); book: random 219.46, DQN 270.5. "
             "Wrote %s", agent["mean"], random_["mean"], agent["mean"] - random_["mean"], stderr, cfg.output_dir)
    return metrics


if __name__ == "__main__":
    job.run_main(main)

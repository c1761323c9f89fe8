# %% [markdown]
# # Ms. Pac-Man with deep Q-learning (chapter 14)
#
# Chapter 14 plays gym's `MsPacman-v0` on raw frames with a one-hidden-layer "DQN" (no target network, no
# exploration schedule, a softmax output trained with cross-entropy on Bellman targets) and reports a random
# policy at 219.46 points on average over 500 episodes and its agent at 270.5 over 100. The `pacman_dqn` job
# (`jobs/pacman_dqn.py`, the agent in `tfos_lib.rl`) trains a real DQN: 4 stacked 86x80 grey frames, n-step
# Double-DQN targets from a target network, Huber loss, replay memory and a linear exploration schedule. Actors
# play whole episodes in Spark tasks with the newest weights while the learners (`num_workers`, data-parallel
# through `tfos_lib`) train on what they played. Then the agent and the random policy play the same seeded
# evaluation episodes, spread over the executors.
#
# **Data**: none to read: the game's ROM ships in the `ale-py` wheel (offline). What the network sees is made
# here from the emulator's frames: cropped to the playfield, 2x2 blocks averaged, the last 4 stacked.
# %% [parameters]
env_steps = 200000  # agent steps to train for, all actors together (4 frames each)
learning_starts = 20000  # agent steps collected before the first update
steps_per_round = 4000  # agent steps per actor round (whole episodes)
replay_capacity = 100000  # replay memory size in agent steps (all learners)
updates_per_step = 0.25  # gradient updates per agent step collected
target_update = 2000  # updates between target-network syncs
batch_size = 32  # global minibatch size (summed over learners)
max_episode_steps = 27000  # agent steps after which an episode is cut
eval_episodes = 100  # evaluation episodes for the agent and for the random policy
num_workers = 1  # learners, one Spark task each
output_dir = "output/notebooks/pacman_dqn"  # metrics.json, episodes.csv, the Q-network, the plots
mlflow = False  # log the run to MLflow (MLFLOW_TRACKING_URI)
# %% [ci]
env_steps, learning_starts, steps_per_round, replay_capacity = 600, 200, 300, 6000
updates_per_step, target_update, batch_size, max_episode_steps, eval_episodes = 0.1, 20, 8, 150, 2
# %% [pip]
rl
# %% [markdown]
# ## The game, as the actors in Spark play it
# Four random-policy episodes played in Spark tasks (each task builds its own emulator, as the actors do), and
# frames of one of them as the Q-network receives them.
# %%
import dataclasses

import numpy as np
import pandas as pd

from jobs import pacman_dqn
from tfos_lib import job, notebook, report
from tfos_lib.rl import atari

args = notebook.argv(env_steps=env_steps, learning_starts=learning_starts, steps_per_round=steps_per_round,
                     replay_capacity=replay_capacity, updates_per_step=updates_per_step, target_update=target_update,
                     batch_size=batch_size, max_episode_steps=max_episode_steps, eval_episodes=eval_episodes,
                     num_workers=num_workers, output_dir=output_dir, mlflow=mlflow, overwrite=True)
cfg = job.parse_config(pacman_dqn.Config, args)  # the job's own options and checks
env = dataclasses.replace(cfg.env, max_episode_steps=min(cfg.max_episode_steps, 400))  # short look
num_actions = env.num_actions()


def random_episode(seed):
    episode = atari.play(env, seed, atari.random_policy(num_actions))
    return {"seed": seed, "length": episode.length, "score": episode.score, "game over": episode.terminated}


played = spark.sparkContext.parallelize(range(4), 2).map(random_episode).collect()
print(f"{cfg.env_id}: {num_actions} actions; frame skip {cfg.frame_skip}, sticky actions {cfg.sticky_actions}")
display(pd.DataFrame(played).set_index("seed"))
episode = atari.play(env, 0, atari.random_policy(num_actions))
shown = np.linspace(0, episode.length, 8).astype(int)
grid = report.plot_image_grid(f"{ROOT}/build/notebooks/pacman_dqn_frames.png", episode.frames[shown],
                              [f"step {i}, {episode.rewards[:i].sum():.0f} points" for i in shown], ncols=8)
notebook.show_plots(str(grid.parent), [grid.name]);
# %% [markdown]
# ## Training: actors in Spark tasks, learners through `tfos_lib`
# `pacman_dqn.main` is the job itself: rounds of `steps_per_round` agent steps played by the actors with the
# newest weights and the current exploration rate, handed to the learners, which owe `updates_per_step`
# gradient updates per step played (a log line per round). Then both policies play the same seeded
# evaluation episodes in the executors.
# %%
metrics = pacman_dqn.main(args)
# %% [markdown]
# ## Results beside the book's
# A few hundred agent steps teach nothing; the README has the default run's 200,000-step figures.
# %%
evaluation = metrics["results"]["evaluation"]
display(pd.DataFrame({name: {k: evaluation[name][k] for k in ("episodes", "mean", "std", "min", "max")}
                      for name in ("random", "agent")}).T)
notebook.book_vs_ours(metrics, {"agent minus random (mean)": "agent_minus_random.mean",
                                "its standard error": "agent_minus_random.standard_error",
                                "agent steps trained": "training.env_steps", "gradient updates": "training.updates"})
# %%
notebook.show_plots(cfg.output_dir, ["training_curves.png"]);

# Databricks notebook source
# MAGIC %pip install --quiet "..[rl]"

# COMMAND ----------

# MAGIC %md
# MAGIC # Ms. Pac-Man with deep Q-learning (chapter 14)
# MAGIC
# MAGIC Chapter 14 plays gym's `MsPacman-v0` on raw frames with a one-hidden-layer "DQN" (no target network, no
# MAGIC exploration schedule, a softmax output trained with cross-entropy on Bellman targets) and reports a random
# MAGIC policy at 219.46 points on average over 500 episodes and its agent at 270.5 over 100. The `pacman_dqn` job
# MAGIC (`jobs/pacman_dqn.py`, the agent in `tfos_lib.rl`) trains a real DQN: 4 stacked 86x80 grey frames, n-step
# MAGIC Double-DQN targets from a target network, Huber loss, replay memory and a linear exploration schedule. Actors
# MAGIC play whole episodes in Spark tasks with the newest weights while the learners (`num_workers`, data-parallel
# MAGIC through `tfos_lib`) train on what they played. Then the agent and the random policy play the same seeded
# MAGIC evaluation episodes, spread over the executors.
# MAGIC
# MAGIC **Data**: none to read: the game's ROM ships in the `ale-py` wheel (offline). What the network sees is made
# MAGIC here from the emulator's frames: cropped to the playfield, 2x2 blocks averaged, the last 4 stacked.

# COMMAND ----------

from tfos_lib import notebook  # installed by `pip install -e .` (Jupyter) or the %pip cell (Databricks)

ROOT = notebook.use_repository_root()  # the clone's root: working directory and on sys.path (`import jobs`)
spark = notebook.spark_session()  # Databricks' session, else local[2]

# COMMAND ----------

# Parameters: one widget each (the Jupyter form's `parameters` cell).
dbutils.widgets.text('env_steps', "200000", "env_steps: agent steps to train for, all actors together (4 frames each)")
dbutils.widgets.text('learning_starts', "20000", "learning_starts: agent steps collected before the first update")
dbutils.widgets.text('steps_per_round', "4000", "steps_per_round: agent steps per actor round (whole episodes)")
dbutils.widgets.text('replay_capacity', "100000", "replay_capacity: replay memory size in agent steps (all learners)")
dbutils.widgets.text('updates_per_step', "0.25", "updates_per_step: gradient updates per agent step collected")
dbutils.widgets.text('target_update', "2000", "target_update: updates between target-network syncs")
dbutils.widgets.text('batch_size', "32", "batch_size: global minibatch size (summed over learners)")
dbutils.widgets.text('max_episode_steps', "27000", "max_episode_steps: agent steps after which an episode is cut")
dbutils.widgets.text('eval_episodes', "100", "eval_episodes: evaluation episodes for the agent and for the random policy")
dbutils.widgets.text('num_workers', "1", "num_workers: learners, one Spark task each")
dbutils.widgets.text('output_dir', "output/notebooks/pacman_dqn", "output_dir: metrics.json, episodes.csv, the Q-network, the plots")
dbutils.widgets.dropdown('mlflow', "false", ["true", "false"], "mlflow: log the run to MLflow (MLFLOW_TRACKING_URI)")

env_steps = int(dbutils.widgets.get('env_steps'))
learning_starts = int(dbutils.widgets.get('learning_starts'))
steps_per_round = int(dbutils.widgets.get('steps_per_round'))
replay_capacity = int(dbutils.widgets.get('replay_capacity'))
updates_per_step = float(dbutils.widgets.get('updates_per_step'))
target_update = int(dbutils.widgets.get('target_update'))
batch_size = int(dbutils.widgets.get('batch_size'))
max_episode_steps = int(dbutils.widgets.get('max_episode_steps'))
eval_episodes = int(dbutils.widgets.get('eval_episodes'))
num_workers = int(dbutils.widgets.get('num_workers'))
output_dir = dbutils.widgets.get('output_dir')
mlflow = dbutils.widgets.get('mlflow') == "true"

# COMMAND ----------

# MAGIC %md
# MAGIC ## The game, as the actors in Spark play it
# MAGIC Four random-policy episodes played in Spark tasks (each task builds its own emulator, as the actors do), and
# MAGIC frames of one of them as the Q-network receives them.

# COMMAND ----------

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

# COMMAND ----------

# MAGIC %md
# MAGIC ## Training: actors in Spark tasks, learners through `tfos_lib`
# MAGIC `pacman_dqn.main` is the job itself: rounds of `steps_per_round` agent steps played by the actors with the
# MAGIC newest weights and the current exploration rate, handed to the learners, which owe `updates_per_step`
# MAGIC gradient updates per step played (a log line per round). Then both policies play the same seeded
# MAGIC evaluation episodes in the executors.

# COMMAND ----------

metrics = pacman_dqn.main(args)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Results beside the book's
# MAGIC A few hundred agent steps teach nothing; the README has the default run's 200,000-step figures.

# COMMAND ----------

evaluation = metrics["results"]["evaluation"]
display(pd.DataFrame({name: {k: evaluation[name][k] for k in ("episodes", "mean", "std", "min", "max")}
                      for name in ("random", "agent")}).T)
notebook.book_vs_ours(metrics, {"agent minus random (mean)": "agent_minus_random.mean",
                                "its standard error": "agent_minus_random.standard_error",
                                "agent steps trained": "training.env_steps", "gradient updates": "training.updates"})

# COMMAND ----------

notebook.show_plots(cfg.output_dir, ["training_curves.png"]);

"""Deep Q-learning on Spark: actors play in executors, learners train data-parallel, the driver keeps time.

Training runs two things at once:

* **Actors** (driver loop, :func:`train`): each *round* is one Spark job of
  ``num_actors`` tasks. Every task plays whole episodes (own seeds) with the
  newest published policy weights (a broadcast) under the round's epsilon, and
  returns them; the driver writes the round to an
  :class:`~tfos_lib.rl.experience.ExperienceChannel`, its episodes dealt out over
  the learner ranks.
* **Learners** (:func:`learner_fn` under :func:`tfos_lib.run`, started once in
  a driver thread): each rank adds its share of every round to its own replay
  memory, then all ranks take the same number of gradient steps on minibatches
  sampled from their own memories; ``MultiWorkerMirroredStrategy`` sums the
  gradients, so ranks hold identical networks. The chief publishes the weights
  after every round.

The number of updates after a round is a pure function of the environment
steps collected so far (``updates_per_step``), identical on every rank, so the
collectives line up. Actors run at most one round ahead of the learners.

The agent is the DQN of Mnih et al. (2015) with Double-DQN targets (van Hasselt
et al. 2016) and n-step returns: 4 stacked 86x80 grayscale frames, sign-clipped
rewards, Huber loss, a target network synced every ``target_update`` updates,
an epsilon schedule, uniform replay.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from tfos_lib import job
from tfos_lib.rl.atari import FRAME_SHAPE, STACK, EnvSpec, Episode
from tfos_lib.rl.experience import ExperienceChannel

log = logging.getLogger("tfos_lib.rl.dqn")
LEARNER_STATE = "learner.json"


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


def build_q_network(tf, num_actions: int, frame_shape=FRAME_SHAPE):
    """The Nature-DQN convolutional network: stacked uint8 frames in, one Q-value per action out."""
    layers = tf.keras.layers
    return tf.keras.Sequential(
        [
            layers.Input(shape=(*frame_shape, STACK), dtype="uint8"),
            layers.Rescaling(1.0 / 255),
            layers.Conv2D(32, 8, strides=4, activation="relu"),
            layers.Conv2D(64, 4, strides=2, activation="relu"),
            layers.Conv2D(64, 3, strides=1, activation="relu"),
            layers.Flatten(),
            layers.Dense(512, activation="relu"),
            layers.Dense(num_actions, name="q_values"),  # linear: Q-values are returns, not probabilities
        ],
        name="q_network",
    )


# ---------------------------------------------------------------------------------------------
# Learners
# ---------------------------------------------------------------------------------------------


class Learner:
    """One learner rank's networks, optimizer and (jitted) update step."""

    def __init__(self, ctx, cfg: DQNConfig, num_actions: int):
        tf = self.tf = ctx.tf()
        self.cfg = cfg
        self.strategy = ctx.strategy()
        with self.strategy.scope():
            self.online = build_q_network(tf, num_actions)
            self.target = build_q_network(tf, num_actions)
            self.optimizer = tf.keras.optimizers.Adam(cfg.learning_rate, epsilon=1.5e-4)
            self.optimizer.build(self.online.trainable_variables)
            self.updates = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.target.set_weights(self.online.get_weights())
        self.checkpoint = tf.train.Checkpoint(online=self.online, target=self.target, optimizer=self.optimizer,
                                              updates=self.updates)
        self._step = tf.function(self._distributed_step)

    def _replica_step(self, states, actions, returns, next_states, discounts):
        tf = self.tf
        q_next_target = self.target(next_states, training=False)
        if self.cfg.double_dqn:
            best = tf.argmax(self.online(next_states, training=False), axis=1, output_type=tf.int32)
            q_next = tf.gather(q_next_target, best, batch_dims=1)
        else:
            q_next = tf.reduce_max(q_next_target, axis=1)
        targets = tf.stop_gradient(returns + discounts * q_next)
        with tf.GradientTape() as tape:
            q = tf.gather(self.online(states, training=True), actions, batch_dims=1)
            error = targets - q
            huber = tf.where(tf.abs(error) <= 1.0, 0.5 * tf.square(error), tf.abs(error) - 0.5)
            loss = tf.nn.compute_average_loss(huber, global_batch_size=self.cfg.batch_size)
        grads = tape.gradient(loss, self.online.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.online.trainable_variables))  # all-reduced across workers
        self.updates.assign_add(1)
        return loss, tf.reduce_mean(q)

    def _distributed_step(self, *batch):
        loss, q = self.strategy.run(self._replica_step, args=batch)
        sum_ = self.tf.distribute.ReduceOp.SUM
        return self.strategy.reduce(sum_, loss, axis=None), self.strategy.reduce(sum_, q, axis=None)

    def update(self, batch) -> tuple[float, float]:
        """One gradient step on this rank's share of the minibatch; returns (loss, mean Q) summed over ranks."""
        loss, q = self._step(*batch)
        if int(self.updates.numpy()) % self.cfg.target_update == 0:
            self.target.set_weights(self.online.get_weights())
        return float(loss), float(q) / self.strategy.num_replicas_in_sync


def learner_fn(ctx, cfg: DQNConfig, num_actions: int):
    """Runs on every learner rank until the driver's last round is consumed; returns a summary (chief)."""
    from tfos_lib.rl.replay import ReplayMemory

    tf = ctx.tf()
    channel = ExperienceChannel(ctx.output_dir)
    learner = Learner(ctx, cfg, num_actions)
    ckpt_dir = os.path.join(ctx.checkpoint_dir, "learner")
    state = {"rounds_consumed": 0, "env_steps": 0, "rank_steps": [0] * ctx.num_workers, "updates": 0, "history": []}
    state_path = os.path.join(ctx.checkpoint_dir, LEARNER_STATE)
    latest = tf.train.latest_checkpoint(ckpt_dir)
    if latest and os.path.exists(state_path):
        learner.checkpoint.restore(latest).expect_partial()
        with open(state_path) as f:
            state = json.load(f)
        ctx.reporter.send("message", text=f"learner resumed from {latest}: round {state['rounds_consumed']}, "
                                          f"{state['env_steps']:,} env steps, {state['updates']:,} updates")
    replay = ReplayMemory(os.path.join(ctx.checkpoint_dir, "replay", f"rank-{ctx.rank}"),
                          cfg.replay_capacity // ctx.num_workers, FRAME_SHAPE)
    rng = np.random.default_rng([cfg.seed, ctx.rank, state["updates"]])
    local_batch = cfg.batch_size // ctx.num_workers
    last_beat = [0.0]

    def heartbeat(force=False):
        now = time.monotonic()
        if force or now - last_beat[0] >= 1.0:
            last_beat[0] = now
            ctx.reporter.send("heartbeat", epoch=state["rounds_consumed"] + 1, step=max(1, state["updates"]))

    def save_checkpoint():
        replay.save()
        # Every rank writes (the variables may be synchronised collectively); only the chief's copy is kept.
        target_dir = ckpt_dir if ctx.is_chief else os.path.join(ctx.worker_dir(), "discarded-checkpoint")
        manager = tf.train.CheckpointManager(learner.checkpoint, target_dir, max_to_keep=1)
        manager.save(checkpoint_number=state["updates"])
        if ctx.is_chief:
            tmp = state_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(state, f)
            os.replace(tmp, state_path)
        channel.delete_episodes_before(state["rounds_consumed"], ctx.rank)

    heartbeat(force=True)
    started = time.perf_counter()
    while True:
        info = channel.wait_round(state["rounds_consumed"], heartbeat, cfg.round_timeout)
        if info is None:
            break
        round_index = state["rounds_consumed"]
        for episode in channel.read_episodes(round_index, ctx.rank):
            replay.add(episode)
        state["env_steps"] += info["env_steps"]
        state["rank_steps"] = [a + b for a, b in zip(state["rank_steps"], info["rank_steps"])]
        round_losses, round_q = [], []
        if min(state["rank_steps"]) >= local_batch + STACK:  # every rank can sample
            while state["updates"] < cfg.updates_due(state["env_steps"]):
                loss, q = learner.update(replay.sample(local_batch, rng, cfg.n_step, cfg.gamma))
                state["updates"] += 1
                round_losses.append(loss)
                round_q.append(q)
                heartbeat()
        state["rounds_consumed"] = round_index + 1
        summary = {
            "rounds_consumed": state["rounds_consumed"], "env_steps": state["env_steps"], "updates": state["updates"],
            "loss": float(np.mean(round_losses)) if round_losses else None,
            "mean_q": float(np.mean(round_q)) if round_q else None,
            "replay_size": replay.size, "seconds": time.perf_counter() - started,
        }
        state["history"].append(summary)
        if ctx.is_chief:
            channel.publish(state["rounds_consumed"], learner.online.get_weights(), summary)
            if round_losses:
                ctx.reporter.send("message", text=(
                    f"learner round {state['rounds_consumed']}: {state['env_steps']:,} env steps, "
                    f"{state['updates']:,} updates, loss {summary['loss']:.4f}, mean Q {summary['mean_q']:.3f}"))
        if state["rounds_consumed"] % cfg.checkpoint_every_rounds == 0:
            save_checkpoint()
    save_checkpoint()
    ctx.reporter.send("idle")
    if ctx.is_chief:
        learner.online.save(os.path.join(ctx.output_dir, "q_network.keras"))
        return {"updates": state["updates"], "env_steps": state["env_steps"], "rounds": state["rounds_consumed"],
                "history": state["history"]}
    return None


# ---------------------------------------------------------------------------------------------
# Actors (Spark tasks) and evaluation
# ---------------------------------------------------------------------------------------------

_POLICY_CACHE: dict = {}  # per Python worker: (num_actions,) -> Keras model, reused across tasks


def _q_function(num_actions: int, weights: list[np.ndarray]):
    """``stack -> Q-values`` for the given weights, on a network cached in this Python worker."""
    from tfos_lib.tfenv import configure_threads, import_tensorflow

    tf = import_tensorflow()
    model = _POLICY_CACHE.get(num_actions)
    if model is None:
        configure_threads(tf, 1)
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


def _episodes_job(spark, description: str, items: list, slices: int, weights, make_task) -> list:
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
    return _episodes_job(spark, description, starts, num_actors, weights, make_task)


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
            for episode in play_episodes(spec, num_actions, value, epsilon, list(partition), record_seed=record_seed):
                yield episode.seed, episode.length, episode.score, episode.render

        return task

    slices = min(len(seeds), max(1, spark.sparkContext.defaultParallelism) * 4)
    label = "random policy" if weights is None else f"agent (epsilon {epsilon})"
    rows = sorted(_episodes_job(spark, f"DQN evaluation: {len(seeds)} episodes of the {label}", seeds, slices,
                                weights, make_task))
    scores = np.array([r[2] for r in rows], np.float64)
    render = next((r[3] for r in rows if r[3]), None)
    return {
        "episodes": len(rows), "epsilon": None if weights is None else epsilon,
        "mean": float(scores.mean()), "std": float(scores.std(ddof=1)) if len(scores) > 1 else 0.0,
        "min": float(scores.min()), "max": float(scores.max()), "median": float(np.median(scores)),
        "mean_length": float(np.mean([r[1] for r in rows])), "scores": scores.tolist(),
        "episode_seeds": [r[0] for r in rows], "lengths": [r[1] for r in rows], "_render": render,
    }


# ---------------------------------------------------------------------------------------------
# Driver loop
# ---------------------------------------------------------------------------------------------


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


def train(spark, cfg: DQNConfig, num_actions: int) -> dict:
    """Actor rounds until ``env_steps`` agent steps are played, learners training alongside.

    Resumes where the last learner checkpoint in ``output_dir`` left off. Returns the
    learners' summary plus the training episodes and timings.
    """
    channel = ExperienceChannel(cfg.output_dir)
    state_path = os.path.join(cfg.output_dir, "checkpoints", LEARNER_STATE)
    done_rounds, env_steps = 0, 0
    if os.path.exists(state_path):
        with open(state_path) as f:
            saved = json.load(f)
        done_rounds, env_steps = saved["rounds_consumed"], saved["env_steps"]
        log.info("resuming after round %d (%s env steps) from %s", done_rounds, f"{env_steps:,}", state_path)
    channel.reset_after(done_rounds)
    history = channel.manifests(done_rounds)
    num_actors = actor_slots(spark, cfg)
    learners = _LearnerThread(lambda: job.launch(learner_fn, cfg, {}, spark, extra_args=(num_actions,)))
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
            rows = collect_round(spark, cfg, num_actions, round_index, num_actors, weights, epsilon)
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
    learners.join()
    if learners.error is not None:
        raise learners.error
    if learners.result is None:
        raise RuntimeError("the learners stopped without a result")
    return {**learners.result, "episodes": [e | {"env_steps_before": h["env_steps_before"], "round": h["round"]}
                                            for h in history for e in h["episodes"]],
            "actors": num_actors, "actor_seconds": actor_seconds, "train_seconds": time.perf_counter() - started}

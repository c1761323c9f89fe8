"""DQN learners: data-parallel workers that fill their replay memories from the driver's rounds and train.

:func:`learner_fn` runs on every learner rank under :func:`tfos_lib.run` (started
once, kept running beside the actor rounds). Each rank adds its share of every
round (read from an :class:`~tfos_lib.rl.experience.ExperienceChannel`) to its own
:class:`~tfos_lib.rl.replay.ReplayMemory`, then all ranks take the same number of
gradient steps (:meth:`DQNConfig.updates_due`, a function of the agent steps
collected so far, so the collectives line up) on minibatches sampled from their
own memories. ``MultiWorkerMirroredStrategy`` sums the gradients, so every rank
holds the same network; the chief publishes its weights after every round.

:class:`Learner` is one rank's online and target networks, optimizer and update
step: Double-DQN targets over n-step returns, Huber loss, a target network synced
every ``target_update`` updates (Mnih et al. 2015; van Hasselt et al. 2016).
"""

from __future__ import annotations

import os
import time

import numpy as np

from tfos_lib.rl.atari import FRAME_SHAPE, STACK
from tfos_lib.rl.config import DQNConfig
from tfos_lib.rl.experience import ExperienceChannel
from tfos_lib.rl.network import build_q_network

__all__ = ["MODEL_NAME", "Learner", "learner_fn"]

#: The online network's export, ``<output_dir>/models/pacman_dqn/<version>/`` (TF Serving layout).
MODEL_NAME = "pacman_dqn"



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


def learner_fn(ctx, cfg: DQNConfig, num_actions: int, token: str = "run"):
    """Runs on every learner rank until the driver's last round is consumed; returns a summary (chief).

    ``token``: the same on every rank of one launch (names its checkpoint versions, see
    :mod:`tfos_lib.rl.checkpoint`).
    """
    from tfos_lib.rl.checkpoint import LearnerCheckpoint
    from tfos_lib.rl.replay import ReplayMemory

    tf = ctx.tf()
    channel = ExperienceChannel(ctx.output_dir)
    learner = Learner(ctx, cfg, num_actions)
    store = LearnerCheckpoint(os.path.join(ctx.checkpoint_dir, "learner"), ctx.rank, ctx.num_workers, token,
                              ctx.attempt)
    state = {"rounds_consumed": 0, "env_steps": 0, "rank_steps": [0] * ctx.num_workers, "updates": 0, "history": []}
    restored = store.restore()
    replay_meta = None
    if restored is not None:
        prefix, state, replay_meta = restored
        learner.checkpoint.read(prefix).expect_partial()
        ctx.reporter.send("message", text=f"learner resumed from {prefix}: round {state['rounds_consumed']}, "
                                          f"{state['env_steps']:,} env steps, {state['updates']:,} updates")
    replay = ReplayMemory(os.path.join(ctx.checkpoint_dir, "replay", f"rank-{ctx.rank}"),
                          cfg.replay_capacity // ctx.num_workers, FRAME_SHAPE, meta=replay_meta)
    rng = np.random.default_rng([cfg.seed, ctx.rank, state["updates"]])
    local_batch = cfg.batch_size // ctx.num_workers
    last_beat = [0.0]

    def heartbeat(force=False):
        now = time.monotonic()
        if force or now - last_beat[0] >= 1.0:
            last_beat[0] = now
            ctx.reporter.send("heartbeat", epoch=state["rounds_consumed"] + 1, step=max(1, state["updates"]))

    saved_round = [state["rounds_consumed"] if restored is not None else None]

    def save_checkpoint():
        if saved_round[0] == state["rounds_consumed"]:
            return  # nothing changed since the last save
        meta = replay.save()
        if not ctx.is_chief:  # the variables may be synchronised collectively: every rank writes, one copy is kept
            learner.checkpoint.write(os.path.join(ctx.worker_dir(), "discarded-checkpoint", "model"))
        store.save(state["rounds_consumed"], meta, learner.checkpoint.write, state,
                   wait=heartbeat, timeout=cfg.round_timeout)
        saved_round[0] = state["rounds_consumed"]
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
        from tfos_lib.export.saved_model import export_saved_model

        served = build_q_network(tf, num_actions)  # a plain copy: the chief alone writes it, no collectives
        served.set_weights(learner.online.get_weights())
        export_saved_model(served, f"{ctx.output_dir}/models", MODEL_NAME,
                           preprocessing=f"inputs: the last {STACK} preprocessed 84x84 frames, uint8 (scaled in the "
                                         "graph); outputs: one Q-value per action")
        return {"updates": state["updates"], "env_steps": state["env_steps"], "rounds": state["rounds_consumed"],
                "history": state["history"]}
    return None

"""Keras callbacks every job gets from ``ctx.callbacks(...)``: resume, held-out scores, progress, TensorBoard.

Runs on the workers. Built lazily because TensorFlow is imported only there.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping

from tfos_lib import runstate, storage


def make_callbacks(ctx, global_batch_size: int, checkpoint_every_steps: int | None = None, tensorboard: bool = True,
                   held_out: Callable[[], Mapping[str, float]] | None = None):
    """The callbacks for ``model.fit`` under ``ctx.strategy()``.

    * ``BackupAndRestore`` under ``<output_dir>/checkpoints``: the chief saves the
      training state every epoch (and every ``checkpoint_every_steps`` steps if
      given); a restarted run (a retry within the job, or the same command run
      again) continues from it instead of starting over. Deleted once training
      completes.
    * Progress: heartbeats to the driver (its stall watchdog) and, on the chief,
      one line per epoch with the metrics and examples/s in the driver's log.
    * ``TensorBoard`` logs under ``<output_dir>/tensorboard`` (chief only).
    * ``held_out`` (chief only; give None on the other workers): called after every
      epoch, its figures join that epoch's logs as ``heldout_<name>``, so they reach
      the progress lines, ``History`` and the training-curve plot beside the
      training ones. It must not run anything under the strategy (the other workers
      are not waiting for it): score a plain copy of the model.
    """
    tf = ctx.tf()
    # Keras calls batch hooks once per TensorFlow call, i.e. every ctx.steps_per_execution steps.
    save_freq = -(-checkpoint_every_steps // ctx.steps_per_execution) if checkpoint_every_steps else "epoch"
    callbacks = [
        # First: refuses a checkpoint of another model/config before BackupAndRestore restores it.
        _fingerprint_callback(tf, ctx),
        # All workers must take part (saving is collective); non-chief workers write to
        # throw-away directories, which tf-keras derives from backup_dir itself.
        tf.keras.callbacks.BackupAndRestore(backup_dir=ctx.checkpoint_dir, save_freq=save_freq, delete_checkpoint=True),
        _progress_callback(tf, ctx, global_batch_size),
    ]
    if ctx.is_chief and ctx.output_uri and storage.is_remote(ctx.output_uri):
        callbacks.insert(2, _checkpoint_sync_callback(tf, ctx, save_freq))  # right after BackupAndRestore saved
    if held_out is not None:
        callbacks.insert(1, _held_out_callback(tf, held_out))  # before Progress, which reports the logs
    if tensorboard and ctx.is_chief:
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=os.path.join(ctx.output_dir, "tensorboard")))
    return callbacks


def _fingerprint_callback(tf, ctx):
    class Fingerprint(tf.keras.callbacks.Callback):
        """Checks (all workers) and records (chief) the fingerprint of the checkpoint this run resumes or writes."""

        def on_train_begin(self, logs=None):
            current = runstate.make_fingerprint(runstate.model_structure(self.model), ctx.options)
            path = os.path.join(ctx.checkpoint_dir, "chief", runstate.FINGERPRINT_FILE)
            if os.path.exists(os.path.join(ctx.checkpoint_dir, "chief", "checkpoint")) and os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    runstate.check_resume(json.load(f), current, ctx.output_uri or ctx.output_dir)
            elif ctx.is_chief:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w", encoding="utf-8") as f:
                    json.dump(current, f, indent=1, sort_keys=True)

    return Fingerprint()


def _checkpoint_sync_callback(tf, ctx, save_freq):
    """Chief only: copies each new checkpoint to the output URI (index last), and removes it there at the end."""
    local = os.path.join(ctx.checkpoint_dir, "chief")
    remote = storage.join(ctx.output_uri, "checkpoints", "chief")

    def sync():
        if os.path.isdir(local):
            storage.upload(local, remote, last=("checkpoint",), prune=True)

    class CheckpointSync(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self._steps = 0

        def on_train_batch_end(self, batch, logs=None):
            self._steps += 1
            if save_freq != "epoch" and self._steps % save_freq == 0:
                sync()

        def on_epoch_end(self, epoch, logs=None):
            sync()

        def on_train_end(self, logs=None):
            # BackupAndRestore deleted the local checkpoint: training completed.
            if not os.path.exists(os.path.join(local, "checkpoint")):
                storage.delete(remote)

    return CheckpointSync()


def _held_out_callback(tf, held_out: Callable[[], Mapping[str, float]]):
    def add_scores(epoch, logs):
        # Mutating logs is how Keras lets a callback add to History and to the callbacks after it.
        logs.update({f"heldout_{name}": float(value) for name, value in held_out().items()})

    return tf.keras.callbacks.LambdaCallback(on_epoch_end=add_scores)


def _progress_callback(tf, ctx, global_batch_size: int):
    class Progress(tf.keras.callbacks.Callback):
        """Heartbeats (throttled to one a second) and the chief's per-epoch line."""

        def __init__(self):
            super().__init__()
            self._last_beat = 0.0
            self._epoch_started = 0.0
            self._first_step = None  # of this epoch: > 0 when it resumed mid-epoch
            self._steps = 0
            self._epoch = 0

        def on_train_begin(self, logs=None):
            self._beat(force=True)

        def on_epoch_begin(self, epoch, logs=None):
            if ctx.resumed_from_epoch is None:
                ctx.resumed_from_epoch = epoch
                if epoch > 0:
                    ctx.log(f"resuming from the checkpoint in {ctx.checkpoint_dir} at epoch {epoch + 1}")
                    ctx.reporter.send("message", text=f"resumed from checkpoint at epoch {epoch + 1}")
            self._epoch, self._steps, self._first_step = epoch, 0, None
            self._epoch_started = time.perf_counter()
            self._beat(force=True)

        def on_train_batch_begin(self, batch, logs=None):
            if self._first_step is None:
                self._first_step = batch

        def on_train_batch_end(self, batch, logs=None):
            # `batch` is the last step of the TensorFlow call (ctx.steps_per_execution steps each).
            first = self._steps == 0
            self._steps = batch + 1 - self._first_step
            self._beat(force=first)  # the driver logs when the first step is done

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self._epoch_started
            if ctx.is_chief:
                ctx.reporter.send(
                    "epoch",
                    epoch=epoch + 1,
                    epochs=self.params.get("epochs"),
                    seconds=seconds,
                    examples_per_second=self._steps * global_batch_size / seconds if seconds > 0 else None,
                    **{k: float(v) for k, v in (logs or {}).items()},
                )

        def on_train_end(self, logs=None):
            ctx.reporter.send("idle")

        def _beat(self, force: bool = False):
            now = time.monotonic()
            if force or now - self._last_beat >= 1.0:
                self._last_beat = now
                ctx.reporter.send("heartbeat", epoch=self._epoch + 1, step=self._steps)

    return Progress()

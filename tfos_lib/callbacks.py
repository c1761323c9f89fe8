"""Keras callbacks every job gets from ``ctx.callbacks(...)``: resume, held-out scores, progress, TensorBoard.

Runs on the workers. Built lazily because TensorFlow is imported only there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping


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
    save_freq = checkpoint_every_steps if checkpoint_every_steps else "epoch"
    callbacks = [
        # All workers must take part (saving is collective); non-chief workers write to
        # throw-away directories, which tf-keras derives from backup_dir itself.
        tf.keras.callbacks.BackupAndRestore(backup_dir=ctx.checkpoint_dir, save_freq=save_freq, delete_checkpoint=True),
        _progress_callback(tf, ctx, global_batch_size),
    ]
    if held_out is not None:
        callbacks.insert(1, _held_out_callback(tf, held_out))  # before Progress, which reports the logs
    if tensorboard and ctx.is_chief:
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=os.path.join(ctx.output_dir, "tensorboard")))
    return callbacks


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
            self._epoch, self._steps = epoch, 0
            self._epoch_started = time.perf_counter()
            self._beat(force=True)

        def on_train_batch_end(self, batch, logs=None):
            self._steps += 1
            self._beat(force=self._steps == 1)  # the driver logs when the first step is done

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

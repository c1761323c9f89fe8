"""Fail fast, resume, time out: the launcher's behaviour when workers fail or hang."""

from __future__ import annotations

import os
import signal
import time

import pytest

import tfos_lib
from tfos_lib.monitor import Timeouts

EPOCHS = 4


def _frame(spark, rows=240):
    from pyspark.sql import functions as F

    x = (F.col("id") % 13) / 13.0
    return spark.range(0, rows, 1, 2).select(F.array(x.cast("float")).alias("x"), (3 * x + 1).cast("float").alias("y"))


def train_with_fault(ctx, fault: str, at_epoch: int, on_rank: int, every_steps: int | None = None):
    """Trains EPOCHS epochs with checkpoints; on the first attempt, `on_rank` misbehaves at `at_epoch` (0-based).

    every_steps: also checkpoint every that many steps (``--checkpoint-every-steps``).

    fault: "raise" (an exception at step 3 of that epoch), "kill" (SIGKILL of its own
    process at the start of that epoch) or "hang" (sleeps inside a step).
    """
    tf = ctx.tf()
    tf.keras.utils.set_random_seed(0)

    class Fault(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch = 0
            self.batches_run = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            if fault == "kill" and self._armed(epoch):
                # Workers do not wait for each other's checkpoint saves: die once the chief's save of the epoch
                # before is complete, or on a slow host the kill can take the chief down mid-save (the run then
                # rightly resumes an epoch earlier than this fault means to test).
                _wait_for_chief_checkpoint(tf, ctx.checkpoint_dir, saves=epoch)
                os.kill(os.getpid(), signal.SIGKILL)

        def on_train_batch_end(self, batch, logs=None):
            self.batches_run += 1
            if self._armed(self.epoch) and batch == 2:
                if fault == "raise":
                    raise ValueError(f"injected failure on rank {ctx.rank} at epoch {self.epoch} step {batch}")
                if fault == "hang":
                    time.sleep(3600)

        def _armed(self, epoch):
            return ctx.attempt == 0 and ctx.rank == on_rank and epoch == at_epoch

    with ctx.strategy().scope():
        model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(1,))])
        model.compile(tf.keras.optimizers.SGD(0.1), "mse")
    steps = ctx.data("train").steps_per_epoch(20)
    fault_callback = Fault()
    model.fit(
        ctx.distributed_dataset("train", "x", "y", global_batch_size=20),
        steps_per_epoch=steps,
        epochs=EPOCHS,
        callbacks=[*ctx.callbacks(20, checkpoint_every_steps=every_steps), fault_callback],
        verbose=0,
    )
    return {"resumed_from_epoch": ctx.resumed_from_epoch, "attempt": ctx.attempt, "w": float(model.get_weights()[0][0, 0]),
            "steps_per_epoch": steps, "batches_run": fault_callback.batches_run}


def _wait_for_chief_checkpoint(tf, checkpoint_dir: str, saves: int, seconds: float = 120) -> None:
    """Until the chief's latest checkpoint (``BackupAndRestore``'s, one per epoch) is its ``saves``-th."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = tf.train.get_checkpoint_state(os.path.join(checkpoint_dir, "chief"))
        if state is not None and state.model_checkpoint_path.endswith(f"ckpt-{saves}"):
            return
        time.sleep(0.05)


def _run(spark, tmp_path, *args, **kwargs):
    return tfos_lib.run(
        train_with_fault, *args, num_workers=2, inputs={"train": _frame(spark)}, output_dir=str(tmp_path), spark=spark,
        **kwargs,
    )


@pytest.fixture(scope="module")
def clean_run_seconds(spark, tmp_path_factory):
    """Wall time of the same 2-worker run without a fault: the yardstick for this machine's start-up and speed.

    Deadlines below are relative to it, so a loaded machine slows the yardstick too instead of failing tests.
    """
    started = time.monotonic()
    _run(spark, tmp_path_factory.mktemp("clean"), "raise", 99, 0)
    return time.monotonic() - started


def test_worker_raising_mid_training_fails_the_job_fast(spark, tmp_path, clean_run_seconds):
    started = time.monotonic()
    with pytest.raises(tfos_lib.WorkerError) as caught:
        _run(spark, tmp_path, "raise", 1, 1)
    elapsed = time.monotonic() - started
    assert caught.value.rank == 1
    assert "ValueError: injected failure on rank 1 at epoch 1 step 2" in str(caught.value)
    # Failing at epoch 1 of 4 costs no more than a whole clean run plus the teardown's grace (no hang).
    assert elapsed < clean_run_seconds + 30, (elapsed, clean_run_seconds)


def test_killed_worker_is_relaunched_and_resumes_from_checkpoint(spark, tmp_path):
    result = _run(spark, tmp_path, "kill", 2, 1, max_restarts=1)
    # Epochs 0 and 1 were checkpointed before rank 1 died at the start of epoch 2.
    assert result["attempt"] == 1
    assert result["resumed_from_epoch"] == 2
    # Training completed, so the resume state was cleared.
    assert not (tmp_path / "checkpoints").exists() or not os.listdir(tmp_path / "checkpoints")


def test_rerunning_after_a_failure_resumes_instead_of_starting_over(spark, tmp_path):
    with pytest.raises(tfos_lib.WorkerError):
        _run(spark, tmp_path, "raise", 2, 0)
    assert (tmp_path / "checkpoints").exists()
    # Same command again: attempt 0 again, so make the fault unreachable (epoch 99).
    result = _run(spark, tmp_path, "raise", 99, 0)
    assert result["resumed_from_epoch"] == 2


def test_checkpoint_every_steps_resumes_inside_the_epoch(spark, tmp_path):
    with pytest.raises(tfos_lib.WorkerError):
        _run(spark, tmp_path, "raise", 1, 0, 2)  # fails after step 3 of epoch 1; steps 1-2 were saved
    result = _run(spark, tmp_path, "raise", 99, 0, 2)
    # Epoch-level checkpoints would rerun all of epoch 1; step checkpoints skip its first 2 steps.
    assert result["resumed_from_epoch"] == 1
    assert result["batches_run"] == (EPOCHS - 1) * result["steps_per_epoch"] - 2, result


def test_stalled_worker_times_out_with_a_message_naming_it(spark, tmp_path, clean_run_seconds):
    # Longer than any honest gap between two steps here (a whole clean run), so only the injected hang trips it.
    stall = max(8, round(clean_run_seconds))
    with pytest.raises(tfos_lib.LauncherTimeout) as caught:
        _run(spark, tmp_path, "hang", 1, 1, timeouts=Timeouts(stall=stall))
    message = str(caught.value)
    assert f"made no progress for {stall} s while training (epoch 2" in message
    assert "--stall-timeout" in message


def test_monitor_rendezvous_timeout_names_missing_workers():
    from tfos_lib.errors import LauncherTimeout
    from tfos_lib.monitor import Monitor

    with Monitor(3, Timeouts(rendezvous=0.0)) as monitor:
        monitor.stage_started()
        monitor._receive({"kind": "started", "rank": 1, "host": "h1"})
        time.sleep(0.01)
        with pytest.raises(LauncherTimeout, match=r"worker\(s\) \[0, 2\] did not start"):
            monitor.check()


def test_every_epoch_reaches_the_driver_log_during_a_real_launch(spark, tmp_path, caplog):
    caplog.set_level("INFO", logger="tfos_lib")
    _run(spark, tmp_path, "raise", 99, 0)  # no fault
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == [f"epoch {e}/{EPOCHS}" for e in range(1, EPOCHS + 1)], epochs
    assert all("loss=" in line and "examples/s" in line for line in epochs)


def test_epoch_line_format():
    from tfos_lib.monitor import format_epoch

    line = format_epoch({"kind": "epoch", "rank": 0, "epoch": 3, "epochs": 10, "loss": 0.5, "accuracy": 0.875,
                         "examples_per_second": 1234.5, "seconds": 2.0})
    assert line == "epoch 3/10: loss=0.5000 accuracy=0.8750 - 1,234 examples/s (2.0 s)"

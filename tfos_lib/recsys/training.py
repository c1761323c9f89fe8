"""Training recommender models data-parallel on the workers of :func:`tfos_lib.run` (worker side).

* :func:`fit_replicated` trains one Keras model under the worker's
  ``MultiWorkerMirroredStrategy``, with its own checkpoint folder (so several
  models trained in one run never load each other's state), and gives the chief a
  plain copy outside the strategy to evaluate and save.
* :func:`labelled_pairs_dataset` feeds ``(visitor, item) -> label`` rows (a
  regression on event codes, the book's setup); :func:`implicit_feedback_dataset`
  feeds implicit feedback: every ``(visitor, item)`` interaction is a positive and
  each batch adds uniformly drawn items for the same visitors as negatives.
* :func:`mean_squared_error` and :func:`embedding_gradient_type` evaluate a trained
  model on the chief.

The models take ``{"visitor": (batch, 1) int32, "item": (batch, 1) int32}``
inputs (:func:`tfos_lib.recsys.models.build_model`). TensorFlow is imported inside
the functions.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np

from tfos_lib.context import WorkerContext
from tfos_lib.tfenv import import_tensorflow

__all__ = [
    "embedding_gradient_type", "fit_replicated", "implicit_feedback_dataset", "labelled_pairs_dataset",
    "mean_squared_error",
]


def fit_replicated(ctx: WorkerContext, build: Callable, dataset, *, name: str, epochs: int, steps: int,
                   global_batch_size: int, checkpoint_every_steps: int, seed: int):
    """Trains ``build()``'s compiled model on ``dataset`` on every worker; returns ``(losses, model, seconds)``.

    Every worker seeds its initial weights with ``seed``, so all replicas start alike.
    Checkpoints go to ``<output_dir>/runs/<name>``. ``losses`` is the training loss per
    epoch; ``model`` is, on the chief, a plain copy of the trained model built outside
    the strategy (only the chief evaluates and saves), and None on the other workers.
    """
    tf = import_tensorflow()
    tf.keras.utils.set_random_seed(seed)  # same initial weights on every worker
    with ctx.strategy().scope():  # tfos: variables mirrored; sparse gradients all-gathered
        model = build()
    # Each model checkpoints in its own folder, so a resumed run never loads another model's state.
    run_ctx = dataclasses.replace(ctx, output_dir=os.path.join(ctx.output_dir, "runs", name), resumed_from_epoch=None)
    history, seconds = run_ctx.fit(model, dataset, epochs=epochs, steps_per_epoch=steps,
                                   callbacks=run_ctx.callbacks(global_batch_size, checkpoint_every_steps, tensorboard=False))
    losses = history["loss"]
    if not ctx.is_chief:
        return losses, None, seconds
    local = build()
    local.set_weights(model.get_weights())
    return losses, local, seconds


def labelled_pairs_dataset(ctx: WorkerContext, input_name: str, global_batch_size: int, seed: int):
    """This worker's shard of ``input_name`` (``visitor``, ``item``, ``label`` columns) as model batches.

    Returns a distributed dataset of ``({"visitor": (b, 1), "item": (b, 1)}, label (b, 1))``,
    shuffled with ``seed + rank``.
    """
    tf = import_tensorflow()
    data = ctx.data(input_name)

    @tf.autograph.experimental.do_not_convert  # plain graph code: nothing for AutoGraph to convert
    def as_model_inputs(features, label):
        return {k: tf.expand_dims(tf.cast(v, tf.int32), -1) for k, v in features.items()}, tf.expand_dims(label, -1)

    def make(_):
        return data.dataset(["visitor", "item"], "label", global_batch_size=global_batch_size,
                            seed=seed + ctx.rank).map(as_model_inputs)

    return ctx.strategy().distribute_datasets_from_function(make)


def implicit_feedback_dataset(ctx: WorkerContext, input_name: str, global_batch_size: int, negatives: int,
                              num_items: int, seed: int):
    """Positives from ``input_name`` (``visitor``, ``item``) plus ``negatives`` sampled items each, labelled 1 and 0.

    ``global_batch_size`` counts positives; each batch holds ``1 + negatives`` times as
    many rows. Negatives are drawn uniformly from ``0..num_items-1`` (an item the
    visitor did interact with may be drawn: rare with many items, and the usual
    convention). Returns a distributed dataset like :func:`labelled_pairs_dataset`'s.
    """
    tf = import_tensorflow()
    positives = ctx.data(input_name)
    seed_base = tf.constant(seed * 1000 + ctx.rank, tf.int64)

    @tf.autograph.experimental.do_not_convert
    def with_negatives(step, features):
        # Seeded by (seed, rank, step): workers share the global seed, so stateful random ops would
        # draw the same negatives on every worker.
        visitor, item = tf.cast(features["visitor"], tf.int32), tf.cast(features["item"], tf.int32)
        size = tf.shape(visitor)[0]
        sampled = tf.random.stateless_uniform([size * negatives], seed=tf.stack([seed_base, step]),
                                              minval=0, maxval=num_items, dtype=tf.int32)
        visitors = tf.concat([visitor, tf.repeat(visitor, negatives)], 0)
        items = tf.concat([item, sampled], 0)
        labels = tf.concat([tf.ones([size]), tf.zeros([size * negatives])], 0)
        return {"visitor": visitors[:, None], "item": items[:, None]}, labels[:, None]

    def make(_):
        return positives.dataset(["visitor", "item"], global_batch_size=global_batch_size,
                                 seed=seed + ctx.rank).enumerate().map(with_negatives)

    return ctx.strategy().distribute_datasets_from_function(make)


def mean_squared_error(model, data, batch_size: int = 8192) -> float:
    """The model's MSE on a worker's data (``visitor``, ``item``, ``label`` columns), in float64."""
    x = {"visitor": data.column("visitor")[:, None], "item": data.column("item")[:, None]}
    predicted = model.predict(x, batch_size=batch_size, verbose=0)[:, 0]
    return float(np.mean((predicted - data.column("label").astype(np.float64)) ** 2))


def embedding_gradient_type(model) -> str:
    """The type of the visitor embedding's gradient (``IndexedSlices`` when it is sparse, as it should be)."""
    tf = import_tensorflow()
    with tf.GradientTape() as tape:
        logits = model({"visitor": np.zeros((2, 1), np.int32), "item": np.ones((2, 1), np.int32)})
    return type(tape.gradient(logits, model.get_layer("VisitorsEmbedding").embeddings)).__name__

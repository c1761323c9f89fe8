"""Training recommender models data-parallel on the workers of :func:`tfos_lib.run` (worker side).

* :func:`fit_replicated` trains one Keras model under the worker's
  ``MultiWorkerMirroredStrategy``, with its own checkpoint folder (so several
  models trained in one run never load each other's state), and gives the chief a
  plain copy outside the strategy to evaluate and save.
* :func:`labelled_pairs_dataset` feeds ``(visitor, item) -> label`` rows (a
  regression on event codes, the book's setup); :func:`implicit_feedback_dataset`
  feeds implicit feedback: every ``(visitor, item)`` interaction is a positive and
  each batch adds uniformly drawn items for the same visitors as negatives.
* :func:`retrieval_dataset` feeds the retrieval model: positives only (every other
  row's item is a row's negative), each weighted by its recency.
  :class:`ValidationRanking` scores a model's NDCG@k on a validation split after
  every epoch (numpy, identical on every worker) and stops training when it stops
  improving; :func:`ndcg_at_k` is that metric.
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
    "ValidationRanking", "embedding_gradient_type", "fit_replicated", "implicit_feedback_dataset",
    "labelled_pairs_dataset", "mean_squared_error", "ndcg_at_k", "retrieval_dataset",
]


def fit_replicated(ctx: WorkerContext, build: Callable, dataset, *, name: str, epochs: int, steps: int,
                   global_batch_size: int, checkpoint_every_steps: int, seed: int, extra_callbacks=()):
    """Trains ``build()``'s compiled model on ``dataset`` on every worker; returns ``(losses, model, seconds)``.

    Every worker seeds its initial weights with ``seed``, so all replicas start alike.
    Checkpoints go to ``<output_dir>/runs/<name>``; ``extra_callbacks(model)`` (a
    function of the replicated model) gives more Keras callbacks. ``losses`` is the training loss per
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
                                   callbacks=run_ctx.callbacks(global_batch_size, checkpoint_every_steps, tensorboard=False)
                                   + list(extra_callbacks(model) if extra_callbacks else ()))
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


def retrieval_dataset(ctx: WorkerContext, input_name: str, global_batch_size: int, seed: int):
    """Positives of ``input_name`` (``history``, ``item``, ``weight``) as ``(inputs, labels, weights)`` batches.

    The label of row ``i`` is ``i``: the model's logits are visitor ``i`` against the
    batch's items (:func:`tfos_lib.recsys.models.in_batch_logits`). Each worker's
    batch is its own set of negatives.
    """
    tf = import_tensorflow()
    data = ctx.data(input_name)

    @tf.autograph.experimental.do_not_convert
    def as_model_inputs(features):
        size = tf.shape(features["item"])[0]
        x = {"history": tf.cast(features["history"], tf.int32), "item": tf.expand_dims(tf.cast(features["item"], tf.int32), -1)}
        return x, tf.range(size), tf.cast(features["weight"], tf.float32)

    def make(_):
        return data.dataset(["history", "item", "weight"], global_batch_size=global_batch_size,
                            seed=seed + ctx.rank).map(as_model_inputs)

    return ctx.strategy().distribute_datasets_from_function(make)


def _grouped(visitor: np.ndarray, item: np.ndarray, visitors: np.ndarray) -> list[np.ndarray]:
    """Each of ``visitors``' items, from ``(visitor, item)`` rows."""
    order = np.argsort(visitor, kind="stable")
    visitor, item = visitor[order], item[order]
    starts = np.searchsorted(visitor, visitors, "left")
    ends = np.searchsorted(visitor, visitors, "right")
    return [item[a:b] for a, b in zip(starts, ends)]


def ndcg_at_k(top: np.ndarray, relevant: list[np.ndarray], k: int) -> np.ndarray:
    """Per visitor NDCG@k of ranked item lists ``top`` (rows, >= k; -1 = none) against its relevant items."""
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    out = np.zeros(len(top))
    for row, items in enumerate(relevant):
        if len(items):
            hits = np.isin(top[row, :k], items)
            out[row] = (hits * discount).sum() / discount[: min(len(items), k)].sum()
    return out


class ValidationRanking:
    """After every epoch: NDCG@k of the model's top-k on validation visitors; stops after ``patience`` bad epochs.

    Built from ``(visitor, item)`` arrays: ``seen`` (the visitors' training items, never
    recommended) and ``held`` (their validation items); ``candidates`` is a boolean
    mask of the items that may be recommended. Every worker holds the same arrays and
    the same weights, so all compute the same figure and stop at the same epoch.
    ``scores`` are the NDCG per epoch, ``best_epoch`` is 1-based.
    """

    def __init__(self, seen: tuple[np.ndarray, np.ndarray], held: tuple[np.ndarray, np.ndarray],
                 candidates: np.ndarray, k: int, patience: int):
        self.visitors = np.unique(held[0]).astype(np.int64)
        self.seen = _grouped(*seen, self.visitors)
        self.held = _grouped(*held, self.visitors)
        self.offset = np.where(candidates, 0.0, -np.inf).astype(np.float32)
        self.k, self.patience = k, patience
        self.scores: list[float] = []

    @property
    def best_epoch(self) -> int:
        return int(np.argmax(self.scores)) + 1 if self.scores else 0

    def evaluate(self, visitor_vectors: np.ndarray, item_vectors: np.ndarray, block: int = 2048) -> float:
        """Mean NDCG@k of the dot-product scorer ``visitor_vectors . item_vectors[i]`` (numpy).

        ``visitor_vectors``: one row per visitor of :attr:`visitors` (in that order)."""
        from tfos_lib.recsys.ranking import top_k_rows

        columns = np.ascontiguousarray(item_vectors.T)
        per_visitor = []
        for start in range(0, len(self.visitors), block):
            scores = visitor_vectors[start : start + block] @ columns + self.offset
            for r, items in enumerate(self.seen[start : start + block]):
                scores[r, items] = -np.inf
            top, _ = top_k_rows(scores, self.k)
            per_visitor.append(ndcg_at_k(top, self.held[start : start + block], self.k))
        return float(np.concatenate(per_visitor).mean()) if per_visitor else 0.0

    def callback(self, model, vectors: Callable):
        """The Keras callback; ``vectors(model)`` gives ``(visitor_vectors, item_vectors)`` in numpy."""
        tf = import_tensorflow()
        outer = self

        class _Callback(tf.keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                outer.scores.append(outer.evaluate(*vectors(model)))
                if logs is not None:
                    logs["val_ndcg"] = outer.scores[-1]
                if len(outer.scores) - outer.best_epoch >= outer.patience:
                    model.stop_training = True

        return _Callback()


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

"""The two recommender models of chapter 11 as Keras models, an Adam for sparse embeddings, and their scoring form.

A visitor and an item, as dense integer ids, each look up a row of an embedding
table; matrix factorisation scores the pair with the dot product of the two
rows, the network with dense layers over their concatenation. Both train with
MSE on event codes (the book's setup) or with a logistic loss on sampled
negatives (to rank). :func:`build_retrieval_model` is the model a recommender
engineer would train today: matrix factorisation with item biases and many
factors, trained with a softmax over the batch's items (in-batch negatives) with
the log-popularity (logQ) correction (:func:`in_batch_logits` makes the layer of its logits).
:func:`scorer_arrays` turns a trained model into the numpy
arrays a :class:`tfos_lib.recsys.ranking.Scorer` needs to score every item for
every visitor in Spark tasks without TensorFlow.

Runs where the models are built: TensorFlow is imported inside the functions.
"""

from __future__ import annotations

import numpy as np

from tfos_lib.tfenv import import_tensorflow

__all__ = [
    "build_model", "build_retrieval_model", "history_tower", "history_vectors", "in_batch_logits", "item_log_q", "make_lazy_adam", "retrieval_scoring_model",
    "scorer_arrays",
]


def build_model(kind: str, num_visitors: int, num_items: int, factors: int, objective: str, learning_rate: float,
                regularization: float = 0.0, optimizer: str = "adam"):
    """The book's MF (``kind="mf"``) or network (``"nn"``), with its layer names.

    Inputs: ``{"visitor": (batch, 1) int, "item": (batch, 1) int}`` dense indices.
    Output ``(batch, 1)``: the predicted event code (``objective="mse"``, the book's)
    or the logit of "this visitor interacts with this item" (``"ranking"``).
    ``regularization``: L2 on the embedding rows a batch looks up (not the whole
    table, which would make every step's gradient dense); the book had none.
    ``optimizer``: ``adam`` (Keras', the book's) or ``lazy_adam``
    (:func:`make_lazy_adam`: the same update, but only for the
    embedding rows in the batch).
    """
    tf = import_tensorflow()
    layers = tf.keras.layers
    l2 = tf.keras.regularizers.L2(regularization) if regularization else None
    item_input = layers.Input(shape=[1], name="item", dtype="int32")
    visitor_input = layers.Input(shape=[1], name="visitor", dtype="int32")
    item_vec = layers.Flatten(name="ItemsFlatten")(
        layers.Embedding(num_items, factors, activity_regularizer=l2, name="ItemsEmbedding")(item_input)
    )
    visitor_vec = layers.Flatten(name="VisitorsFlatten")(
        layers.Embedding(num_visitors, factors, activity_regularizer=l2, name="VisitorsEmbedding")(visitor_input)
    )
    if kind == "mf":
        output = layers.dot([item_vec, visitor_vec], axes=[1, 1], name="DotProduct")
    else:
        x = layers.concatenate([item_vec, visitor_vec], name="Concat")
        x = layers.Dense(80, name="FC-1")(x)  # the book's: no activation
        x = layers.Dense(40, name="FC-2")(x)  # the book's: no activation
        x = layers.Dense(20, activation="relu", name="FC-3")(x)
        # The book's relu output suits a regression target >= 1; a ranking logit is unbounded.
        output = layers.Dense(1, activation="relu" if objective == "mse" else None, name="Output")(x)
    model = tf.keras.Model({"item": item_input, "visitor": visitor_input}, output, name=f"{kind}_{objective}")
    loss = "mse" if objective == "mse" else tf.keras.losses.BinaryCrossentropy(from_logits=True)
    if optimizer == "adam":
        chosen = tf.keras.optimizers.Adam(learning_rate=learning_rate)
    else:
        chosen = make_lazy_adam(tf, learning_rate)
    model.compile(optimizer=chosen, loss=loss)
    return model


def make_lazy_adam(tf, learning_rate: float):
    """Adam that, for sparse (``IndexedSlices``) gradients, updates only the rows in the batch (worker side).

    Keras' Adam decays both moments and moves *every* row of an embedding table on
    every step, sparse gradient or not: with 1.4M visitors that dense pass dominated
    each step (over 250 ms a step at full size). Here the rows a batch touches get
    exactly Adam's update and the others are left alone until they appear again
    ("lazy" Adam). Dense gradients (the network's dense layers) get Keras' Adam.
    Duplicate indices were already summed by the optimizer (after the cross-worker
    all-gather), so each row is updated once.
    """

    class LazyAdam(tf.keras.optimizers.Adam):
        def update_step(self, gradient, variable):
            if not isinstance(gradient, tf.IndexedSlices):
                return super().update_step(gradient, variable)
            dtype = variable.dtype
            step = tf.cast(self.iterations + 1, dtype)
            beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
            alpha = tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
            key = self._index_dict[self._var_key(variable)]
            m, v = self._momentums[key], self._velocities[key]
            rows, values = gradient.indices, gradient.values
            m_rows = tf.gather(m, rows) * beta_1 + values * (1 - beta_1)
            v_rows = tf.gather(v, rows) * beta_2 + tf.square(values) * (1 - beta_2)
            m.scatter_update(tf.IndexedSlices(m_rows, rows))
            v.scatter_update(tf.IndexedSlices(v_rows, rows))
            variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))

    return LazyAdam(learning_rate=learning_rate)


def item_log_q(counts: np.ndarray) -> np.ndarray:
    """log of each item's share of the training positives: the chance it fills a slot of a batch (float32).

    An in-batch negative is an other row's positive, so popular items are drawn as
    negatives in proportion to their counts; subtracting ``log q`` from every logit
    corrects the softmax for that (items with no positive, never in a batch, get
    half a count so the value stays finite).
    """
    counts = np.asarray(counts, np.float64)
    return np.log(np.maximum(counts, 0.5) / max(1.0, counts.sum())).astype(np.float32)


def in_batch_logits(tf, log_q: np.ndarray, remove_accidental_hits: bool = True):
    """A Keras layer: ``[visitor_vec (b, d), item_vec (b, d), item_bias (b, 1), item (b, 1)]`` -> logits ``(b, b)``.

    Row ``i`` scores visitor ``i`` against every item of the batch: ``u_i . v_j + b_j -
    log q(item_j)``; the label of row ``i`` is column ``i`` (its own item), the other
    columns are its negatives. With ``remove_accidental_hits`` a column holding row
    ``i``'s own item again (a popular item twice in one batch) is masked out of row
    ``i``, so the positive is never also a negative. ``log_q`` (per item, see
    :func:`item_log_q`) is a non-trainable weight of the layer.
    """

    class InBatchLogits(tf.keras.layers.Layer):
        def build(self, input_shape):
            self.log_q = self.add_weight(name="log_q", shape=(len(log_q),), trainable=False,
                                         initializer=tf.constant_initializer(np.asarray(log_q, np.float32)))

        def call(self, inputs):
            visitor_vec, item_vec, item_bias, item = inputs
            item = tf.reshape(tf.cast(item, tf.int32), [-1])
            correction = tf.reshape(item_bias, [-1]) - tf.gather(self.log_q, item)
            logits = tf.matmul(visitor_vec, item_vec, transpose_b=True) + correction[None, :]
            if remove_accidental_hits:
                same = tf.equal(item[:, None], item[None, :])
                other = tf.logical_not(tf.cast(tf.eye(tf.shape(item)[0]), tf.bool))
                logits = tf.where(same & other, tf.fill(tf.shape(logits), tf.constant(-1e9, logits.dtype)), logits)
            return logits

    return InBatchLogits(name="InBatchLogits")


def build_retrieval_model(num_items: int, factors: int, log_q: np.ndarray, history_length: int, learning_rate: float,
                          regularization: float = 0.0, optimizer: str = "lazy_adam"):
    """A two-tower retrieval model, compiled to train with an in-batch sampled softmax (logQ-corrected).

    Inputs: ``{"history": (b, history_length) int, "item": (b, 1) int}``: the
    visitor's most recent other training items (padded with ``num_items``) and the
    item to score. The visitor tower is the mean of the history items' rows of a
    context table (a visitor is what it interacted with, so a visitor with one or
    two items, most of them, still gets a sensible vector, and a new visitor needs no
    retraining); the item tower is an item table plus an item bias. The output is
    :func:`in_batch_logits`' ``(b, b)`` matrix and the label of row ``i`` is ``i``.
    A visitor bias is left out on purpose: it adds the same amount to all of a
    visitor's items, so it changes no ranking and gets no gradient from a softmax
    over items. ``regularization``: L2 on the item rows a batch looks up.
    :func:`retrieval_scoring_model` gives the ``(history, item) -> score`` model
    built from the same layers (what is exported).
    """
    tf = import_tensorflow()
    layers = tf.keras.layers
    l2 = tf.keras.regularizers.L2(regularization) if regularization else None
    item_input = layers.Input(shape=[1], name="item", dtype="int32")
    history_input = layers.Input(shape=[history_length], name="history", dtype="int32")
    init = tf.keras.initializers.RandomNormal(stddev=0.05, seed=1)
    items = layers.Embedding(num_items, factors, embeddings_initializer=init, activity_regularizer=l2,
                             name="ItemsEmbedding")
    bias = layers.Embedding(num_items, 1, embeddings_initializer="zeros", name="ItemBias")
    item_vec = layers.Flatten(name="ItemsFlatten")(items(item_input))
    item_bias = layers.Flatten(name="BiasFlatten")(bias(item_input))
    visitor_vec = history_tower(tf, num_items, factors)(history_input)
    logits = in_batch_logits(tf, log_q)([visitor_vec, item_vec, item_bias, item_input])
    model = tf.keras.Model({"item": item_input, "history": history_input}, logits, name="retrieval")
    chosen = tf.keras.optimizers.Adam(learning_rate=learning_rate) if optimizer == "adam" else make_lazy_adam(
        tf, learning_rate)
    model.compile(optimizer=chosen, loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def history_tower(tf, num_items: int, factors: int):
    """A layer: ``(b, h)`` item ids (``num_items`` pads) -> ``(b, factors)`` mean of their ``ContextEmbedding`` rows."""

    class HistoryMean(tf.keras.layers.Layer):
        def build(self, input_shape):
            self.context = tf.keras.layers.Embedding(
                num_items + 1, factors, embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=0.05, seed=2),
                name="ContextEmbedding")
            self.context.build((None,))

        def call(self, history):
            history = tf.cast(history, tf.int32)
            present = tf.cast(history < num_items, tf.float32)[:, :, None]
            rows = self.context(tf.minimum(history, num_items))
            return tf.reduce_sum(rows * present, 1) / tf.maximum(tf.reduce_sum(present, 1), 1.0)

    return HistoryMean(name="VisitorTower")


def history_vectors(context: np.ndarray, histories: np.ndarray, with_bias: bool = True) -> np.ndarray:
    """numpy :func:`history_tower`: ``(n, h)`` padded histories -> ``(n, factors (+ 1))``.

    ``context``: the tower's table (its last row is the pad's). ``with_bias`` appends a
    1, the visitor side of :func:`scorer_arrays`' item bias factor."""
    pad = len(context) - 1
    present = (histories < pad)[:, :, None]
    total = (context[np.minimum(histories, pad)] * present).sum(1)
    vectors = total / np.maximum(present.sum(1), 1)
    if with_bias:
        vectors = np.hstack([vectors, np.ones((len(vectors), 1))])
    return vectors.astype(np.float32)


def retrieval_scoring_model(model, history_length: int):
    """``{"history", "item"} -> (batch, 1)`` score ``u . v + b`` sharing :func:`build_retrieval_model`'s layers."""
    tf = import_tensorflow()
    layers = tf.keras.layers
    item_input = layers.Input(shape=[1], name="item", dtype="int32")
    history_input = layers.Input(shape=[history_length], name="history", dtype="int32")
    item_vec = layers.Flatten()(model.get_layer("ItemsEmbedding")(item_input))
    visitor_vec = model.get_layer("VisitorTower")(history_input)
    item_bias = layers.Flatten()(model.get_layer("ItemBias")(item_input))
    score = layers.Add(name="Score")([layers.dot([item_vec, visitor_vec], axes=[1, 1]), item_bias])
    return tf.keras.Model({"item": item_input, "history": history_input}, score, name="retrieval_scoring")


def scorer_arrays(kind: str, model, factors: int) -> dict[str, np.ndarray]:
    """A ranking model as the arrays :class:`tfos_lib.recsys.ranking.Scorer` needs (chief side, numpy).

    MF: the two embedding tables; the retrieval model: its item table with the item
    bias as an extra factor, and its context table (a visitor's vector is
    :func:`history_vectors` of its history, with a 1 appended for the bias). The network: its first two dense layers are linear,
    so ``FC-3``'s input is ``[item; visitor] @ W1 @ W2 @ W3 + c``; folding the item and
    visitor halves into per-item and per-visitor 20-vectors makes scoring all items
    for a visitor 20 additions, a relu and a 20-dot per item, exactly.
    """
    items = model.get_layer("ItemsEmbedding").get_weights()[0]
    if kind == "retrieval":  # the item bias as one more factor, against a constant 1 on the visitor side
        bias = model.get_layer("ItemBias").get_weights()[0]
        context = model.get_layer("VisitorTower").get_weights()[0]
        return {"kind": "dot", "item_vectors": np.hstack([items, bias]), "context_vectors": context}
    visitors = model.get_layer("VisitorsEmbedding").get_weights()[0]
    if kind == "mf":
        return {"kind": "dot", "item_vectors": items, "visitor_vectors": visitors}
    (w1, b1), (w2, b2), (w3, b3), (w4, b4) = (model.get_layer(n).get_weights() for n in ("FC-1", "FC-2", "FC-3", "Output"))
    folded = w1 @ w2 @ w3  # (2 * factors, 20); rows: item half, then visitor half (Concat order)
    bias = (b1 @ w2 + b2) @ w3 + b3
    return {
        "kind": "relu_mlp",
        "item_vectors": items @ folded[:factors] + bias,
        "visitor_vectors": visitors @ folded[factors:],
        "output_weights": w4[:, 0],
        "output_bias": np.float32(b4[0]),
    }

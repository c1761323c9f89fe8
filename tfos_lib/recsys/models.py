"""The two recommender models of chapter 11 as Keras models, an Adam for sparse embeddings, and their scoring form.

A visitor and an item, as dense integer ids, each look up a row of an embedding
table; matrix factorisation scores the pair with the dot product of the two
rows, the network with dense layers over their concatenation. Both train with
MSE on event codes (the book's setup) or with a logistic loss on sampled
negatives (to rank). :func:`scorer_arrays` turns a trained model into the numpy
arrays a :class:`tfos_lib.recsys.ranking.Scorer` needs to score every item for
every visitor in Spark tasks without TensorFlow.

Runs where the models are built: TensorFlow is imported inside the functions.
"""

from __future__ import annotations

import numpy as np

from tfos_lib.tfenv import import_tensorflow

__all__ = ["build_model", "make_lazy_adam", "scorer_arrays"]


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


def scorer_arrays(kind: str, model, factors: int) -> dict[str, np.ndarray]:
    """A ranking model as the arrays :class:`tfos_lib.recsys.ranking.Scorer` needs (chief side, numpy).

    MF: the two embedding tables. The network: its first two dense layers are linear,
    so ``FC-3``'s input is ``[item; visitor] @ W1 @ W2 @ W3 + c``; folding the item and
    visitor halves into per-item and per-visitor 20-vectors makes scoring all items
    for a visitor 20 additions, a relu and a 20-dot per item, exactly.
    """
    items = model.get_layer("ItemsEmbedding").get_weights()[0]
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

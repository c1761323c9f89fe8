"""The retrieval model: its in-batch softmax and logQ correction against brute force, and its scorer against Keras."""

from __future__ import annotations

import numpy as np
import pytest

from tfos_lib.recsys import models, ranking


def brute_force_in_batch_loss(visitors, items, bias, log_q, batch_items, remove_hits=True):
    """Per row: cross-entropy of row i's own column among the batch's items, logits u_i . v_j + b_j - log q_j."""
    losses = []
    for i in range(len(batch_items)):
        logits = []
        for j, item in enumerate(batch_items):
            if remove_hits and j != i and item == batch_items[i]:
                continue  # the row's own item again: not a negative
            logits.append((float(visitors[i] @ items[item] + bias[item] - log_q[item]), j == i))
        values = np.array([v for v, _ in logits])
        own = next(v for v, is_own in logits if is_own)
        losses.append(np.log(np.exp(values - values.max()).sum()) + values.max() - own)
    return np.array(losses)


def test_in_batch_loss_and_logits_match_brute_force_on_a_tiny_catalogue():
    import tfos_lib

    tf = tfos_lib.import_tensorflow()
    rng = np.random.default_rng(0)
    num_items, factors, length = 7, 3, 4
    counts = np.array([9, 5, 0, 3, 1, 1, 2])  # item 2 has no positive: half a count
    log_q = models.item_log_q(counts)
    np.testing.assert_allclose(log_q, np.log(np.maximum(counts, 0.5) / counts.sum()), rtol=1e-6)
    model = models.build_retrieval_model(num_items, factors, log_q, length, 0.01)
    items, bias = rng.normal(size=(num_items, factors)), rng.normal(size=(num_items, 1))
    context = rng.normal(size=(num_items + 1, factors))
    model.get_layer("ItemsEmbedding").set_weights([items])
    model.get_layer("ItemBias").set_weights([bias])
    model.get_layer("VisitorTower").set_weights([context])
    # Items 0 and 3 repeat in the batch (accidental hits); the pad (7) fills short histories.
    batch_items = np.array([0, 3, 0, 1, 3, 6])
    histories = np.array([[1, 7, 7, 7], [0, 2, 7, 7], [7, 7, 7, 7], [4, 5, 6, 0], [3, 3, 1, 7], [2, 7, 7, 7]])
    x = {"history": histories.astype(np.int32), "item": batch_items[:, None].astype(np.int32)}
    visitors = np.array([context[h[h < num_items]].mean(0) if (h < num_items).any() else np.zeros(factors)
                         for h in histories])
    np.testing.assert_allclose(models.history_vectors(context, histories, with_bias=False), visitors, rtol=1e-5)
    expected = brute_force_in_batch_loss(visitors, items, bias[:, 0], log_q, batch_items)
    logits = model(x).numpy()
    per_row = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")(
        np.arange(len(batch_items)), logits).numpy()
    np.testing.assert_allclose(per_row, expected, rtol=1e-4, atol=1e-5)
    # The compiled loss (what training minimises) is their mean.
    assert model.evaluate(x, np.arange(len(batch_items)), batch_size=len(batch_items), verbose=0) == pytest.approx(
        expected.mean(), rel=1e-4)
    # Row 0 (item 0) never sees row 2's copy of item 0 as a negative, nor row 1 row 4's item 3.
    assert logits[0, 2] < -1e8 and logits[1, 4] < -1e8 and logits[0, 0] > -1e8


def test_log_q_corrected_in_batch_softmax_estimates_the_full_softmax():
    """With in-batch negatives drawn by popularity q, log sum_j exp(s_j - log q_j) over a batch of B estimates
    log B + log sum_c exp(s_c) over the whole catalogue (importance sampling); without the correction the
    estimate leans to the popular items. Checked against brute force on a 12-item catalogue."""
    import tfos_lib

    tf = tfos_lib.import_tensorflow()
    rng = np.random.default_rng(1)
    num_items, factors, batch = 12, 4, 6000
    q = rng.dirichlet(np.full(num_items, 0.7))
    items = rng.normal(size=(num_items, factors)).astype(np.float32)
    visitor = rng.normal(size=factors).astype(np.float32)
    scores = items @ visitor
    full = -scores + np.log(np.exp(scores).sum())  # full-softmax loss of each item as the positive
    drawn = rng.choice(num_items, batch, p=q)

    def mean_estimate(log_q):
        layer = models.in_batch_logits(tf, log_q, remove_accidental_hits=False)
        logits = layer([np.tile(visitor, (batch, 1)), items[drawn], np.zeros((batch, 1), np.float32),
                        drawn[:, None]]).numpy()
        loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")(
            np.arange(batch), logits).numpy()
        return loss - np.log(batch) - log_q[drawn]

    corrected = abs(mean_estimate(np.log(q).astype(np.float32)).mean() - full[drawn].mean())
    uncorrected = abs(mean_estimate(np.full(num_items, np.log(1.0 / num_items), np.float32)).mean() - full[drawn].mean())
    assert corrected < 0.05 and uncorrected > max(0.1, 2 * corrected), (corrected, uncorrected)


def test_exported_scoring_model_equals_the_spark_scorer(spark):
    """The history tower in numpy (what Spark tasks compute for every visitor) and the blocked top-k agree with
    the Keras scoring model that is exported, and with brute force over all items."""
    import tfos_lib

    tfos_lib.import_tensorflow()
    rng = np.random.default_rng(2)
    num_items, factors, length = 30, 5, 3
    model = models.build_retrieval_model(num_items, factors, models.item_log_q(np.ones(num_items)), length, 0.01)
    for name in ("ItemsEmbedding", "ItemBias", "VisitorTower"):
        layer = model.get_layer(name)
        layer.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()])
    arrays = models.scorer_arrays("retrieval", model, factors)
    histories = np.array([[3, 4, 30], [30, 30, 30], [1, 2, 29], [7, 7, 8]])
    vectors = models.history_vectors(arrays["context_vectors"], histories)
    scores = vectors @ arrays["item_vectors"].T
    grid_v, grid_i = np.meshgrid(np.arange(4), np.arange(num_items), indexing="ij")
    keras = models.retrieval_scoring_model(model, length).predict(
        {"history": histories[grid_v.ravel()], "item": grid_i.reshape(-1, 1)}, verbose=0)
    np.testing.assert_allclose(scores, keras.reshape(4, num_items), rtol=1e-4, atol=1e-4)

    frame = spark.createDataFrame([(v, histories[v].tolist()) for v in range(4)], "visitor int, history array<int>")
    spark_vectors = ranking.history_vectors_frame(frame, arrays["context_vectors"])
    seen = spark.createDataFrame([(0, [3, 4]), (2, [1, 2, 29])], "visitor int, seen array<int>")
    scorer = ranking.Scorer("dot", arrays["item_vectors"], np.zeros(num_items, np.float32))
    recs = ranking.recommend_for(frame.select("visitor"), seen, spark_vectors, scorer, 5, 4).toPandas()
    for v in range(4):
        expected = scores[v].copy()
        expected[{0: [3, 4], 2: [1, 2, 29]}.get(v, [])] = -np.inf
        got = recs[recs.visitor == v].sort_values("rank")["item"].tolist()
        assert got == np.argsort(-expected, kind="stable")[:5].tolist(), v

"""The recommender models: the network's folded scorer equals the Keras model; lazy Adam equals Adam on its rows."""

from __future__ import annotations

import numpy as np

from tfos_lib.recsys import models, ranking


def test_the_networks_folded_scorer_equals_the_keras_model():
    import tfos_lib

    tf = tfos_lib.import_tensorflow()
    tf.keras.utils.set_random_seed(1)
    model = models.build_model("nn", 40, 30, 5, "ranking", 0.001)
    for layer in model.layers:  # non-zero biases, so the folding of biases is tested too
        if layer.weights and layer.name.startswith(("FC", "Output")):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, np.random.default_rng(2).normal(size=bias.shape).astype(np.float32)])
    arrays = models.scorer_arrays("nn", model, 5)
    scorer = ranking.Scorer("relu_mlp", arrays["item_vectors"], np.zeros(30, np.float32), arrays["output_weights"],
                              float(arrays["output_bias"]))
    visitors = np.array([0, 7, 39])
    folded = scorer.scores(arrays["visitor_vectors"][visitors])
    grid_v, grid_i = np.meshgrid(visitors, np.arange(30), indexing="ij")
    keras = model.predict({"visitor": grid_v.reshape(-1, 1), "item": grid_i.reshape(-1, 1)}, verbose=0)
    np.testing.assert_allclose(folded, keras.reshape(3, 30), rtol=1e-4, atol=1e-5)


def test_lazy_adam_updates_only_the_rows_in_the_batch_exactly_as_adam():
    import tfos_lib

    tf = tfos_lib.import_tensorflow()
    start = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    lazy, dense = tf.Variable(start), tf.Variable(start)
    lazy_opt, dense_opt = models.make_lazy_adam(tf, 0.1), tf.keras.optimizers.Adam(0.1)
    rows = tf.constant([1, 4])
    values = tf.constant([[0.5, -1.0, 2.0], [0.1, 0.2, -0.3]])
    lazy_opt.apply_gradients([(tf.IndexedSlices(values, rows, tf.constant([6, 3])), lazy)])
    dense_opt.apply_gradients([(tf.scatter_nd(rows[:, None], values, [6, 3]), dense)])
    # First step: Adam moves only rows with a gradient, so both agree everywhere.
    np.testing.assert_allclose(lazy.numpy(), dense.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(lazy.numpy()[[1, 4]], start[[1, 4]])
    # Second step on other rows: Keras' Adam keeps moving rows 1 and 4 (momentum); lazy Adam does not.
    after_first = lazy.numpy().copy()
    other = tf.IndexedSlices(tf.ones([1, 3]), tf.constant([2]), tf.constant([6, 3]))
    lazy_opt.apply_gradients([(other, lazy)])
    dense_opt.apply_gradients([(tf.convert_to_tensor(other), dense)])
    np.testing.assert_array_equal(lazy.numpy()[[0, 1, 3, 4, 5]], after_first[[0, 1, 3, 4, 5]])
    assert not np.allclose(dense.numpy()[[1, 4]], after_first[[1, 4]])
    np.testing.assert_allclose(lazy.numpy()[2], dense.numpy()[2], rtol=1e-5, atol=1e-6)

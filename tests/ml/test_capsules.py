"""Capsule maths (tfos_lib.ml.capsules) against values worked out by hand: squash, routing, masking, the losses."""

from __future__ import annotations

import numpy as np
import pytest

import tfos_lib

tf = tfos_lib.import_tensorflow()
from tfos_lib.ml import capsules  # noqa: E402  (after tfos_lib has set up legacy Keras)


def test_squash_keeps_the_direction_and_maps_the_length_to_n2_over_1_plus_n2():
    # |[3, 4]|^2 = 25: the length becomes 25/26, the direction stays [0.6, 0.8].
    v = capsules.squash(tf.constant([[3.0, 4.0], [0.0, 0.0]])).numpy()
    assert v[0] == pytest.approx([0.6 * 25 / 26, 0.8 * 25 / 26], rel=1e-6)
    assert v[1] == pytest.approx([0.0, 0.0])  # the epsilon keeps a zero vector finite
    # Long vectors approach length 1, short ones shrink quadratically: |s| = 0.1 -> 0.01/1.01.
    lengths = np.linalg.norm(capsules.squash(tf.constant([[100.0, 0.0], [0.1, 0.0]])).numpy(), axis=1)
    assert lengths == pytest.approx([1e4 / (1 + 1e4), 0.01 / 1.01], rel=1e-5)


def _predictions():
    """Two input capsules x two output capsules of 2 dimensions: both inputs agree on output 0, disagree on 1."""
    u_hat = np.zeros((1, 2, 2, 2), np.float32)
    u_hat[0, 0, 0] = [1, 0]
    u_hat[0, 0, 1] = [0, 1]
    u_hat[0, 1, 0] = [1, 0]
    u_hat[0, 1, 1] = [0, -1]
    return tf.constant(u_hat)


def test_one_routing_iteration_averages_the_predictions():
    v, c = capsules.route(_predictions(), iterations=1)
    np.testing.assert_allclose(c.numpy(), np.full((1, 2, 2), 0.5))
    # s_0 = 0.5 [1,0] + 0.5 [1,0] = [1, 0] -> squash: length 1/2; s_1 = 0.
    np.testing.assert_allclose(v.numpy()[0], [[0.5, 0.0], [0.0, 0.0]], atol=1e-6)


def test_two_routing_iterations_move_the_coupling_to_the_agreeing_output():
    v, c = capsules.route(_predictions(), iterations=2)
    # After iteration 1: b_i0 = [1,0].[0.5,0] = 0.5 and b_i1 = 0, so c_i0 = e^0.5 / (e^0.5 + 1).
    c0 = np.exp(0.5) / (np.exp(0.5) + 1)
    np.testing.assert_allclose(c.numpy()[0], [[c0, 1 - c0], [c0, 1 - c0]], rtol=1e-6)
    # s_0 = c0 * ([1,0] + [1,0]) = [2 c0, 0]; its squashed length is n2 / (1 + n2) with n2 = (2 c0)^2.
    n2 = (2 * c0) ** 2
    np.testing.assert_allclose(v.numpy()[0], [[n2 / (1 + n2), 0.0], [0.0, 0.0]], rtol=1e-5, atol=1e-6)


def test_coupling_coefficients_sum_to_one_over_the_outputs_and_shapes_hold():
    u_hat = tf.random.stateless_normal((3, 1152, 10, 16), seed=(1, 2))
    v, c = capsules.route(u_hat, iterations=3)
    assert v.shape == (3, 10, 16) and c.shape == (3, 1152, 10)
    np.testing.assert_allclose(tf.reduce_sum(c, axis=2).numpy(), np.ones((3, 1152)), rtol=1e-5)
    assert np.all(np.linalg.norm(v.numpy(), axis=-1) < 1)


def test_only_the_last_routing_iteration_passes_the_gradient():
    u_hat = tf.Variable(_predictions())
    with tf.GradientTape(persistent=True) as tape:
        v, _ = capsules.route(u_hat, iterations=3)
        total = tf.reduce_sum(v)
        # The same output with the coupling fixed: what the gradient sees through stop_gradient.
        _, c_fixed = capsules.route(u_hat, iterations=3)
        fixed = tf.reduce_sum(capsules.squash(tf.einsum("bij,bijd->bjd", tf.stop_gradient(c_fixed), u_hat)))
    np.testing.assert_allclose(tape.gradient(total, u_hat).numpy(), tape.gradient(fixed, u_hat).numpy(), rtol=1e-6)


def test_predictions_equal_the_books_per_capsule_matmul():
    layer = capsules.DigitCapsules(capsules=3, capsule_dim=4, routing_iterations=1)
    u = tf.random.stateless_normal((2, 5, 8), seed=(3, 4))
    layer(u)
    W, u_np = layer.W.numpy(), u.numpy()
    expected = np.array([[[W[i, j] @ u_np[b, i] for j in range(3)] for i in range(5)] for b in range(2)])
    np.testing.assert_allclose(layer.predictions(u).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_mask_keeps_only_the_chosen_capsule():
    v = tf.reshape(tf.range(12, dtype=tf.float32), (2, 3, 2))
    masked = capsules.mask(v, tf.constant([1, 2])).numpy()
    assert masked.tolist() == [[0, 0, 2, 3, 0, 0], [0, 0, 0, 0, 10, 11]]


def test_margin_loss_by_hand():
    lengths = tf.constant([[0.95, 0.3], [0.5, 0.05]])
    # Row 1: present 0.95 > 0.9 -> 0; absent 0.5 * (0.3 - 0.1)^2 = 0.02. Row 2: (0.9 - 0.5)^2 = 0.16; 0.05 < 0.1 -> 0.
    assert float(capsules.margin_loss(tf.constant([0, 0]), lengths)) == pytest.approx((0.02 + 0.16) / 2, rel=1e-6)
    # Label 1 instead: row 1: (0.9-0.3)^2 + 0.5 (0.95-0.1)^2 = 0.36 + 0.36125; row 2: 0.85^2 + 0.5 * 0.4^2 = 0.8025.
    assert float(capsules.margin_loss(tf.constant([1, 1]), lengths)) == pytest.approx((0.72125 + 0.8025) / 2, rel=1e-6)


def test_reconstruction_loss_mean_is_the_books_and_sum_the_papers():
    pixels, recon = tf.fill((2, 784), 0.5), tf.zeros((2, 784))
    assert float(capsules.reconstruction_loss(pixels, recon)) == pytest.approx(0.25)
    assert float(capsules.reconstruction_loss(pixels, recon, "sum")) == pytest.approx(0.25 * 784)


def test_capsnet_has_the_books_parameter_count_and_masks_by_label_in_training_only(monkeypatch):
    model = capsules.CapsNet()
    lengths = model(tf.zeros((2, 784)))
    assert lengths.shape == (2, 10)
    # Conv1 20,992 + PrimaryCaps 5,308,672 + W 1,474,560 + decoder 1,411,344 (the loss/accuracy trackers are not weights
    # anyone trains).
    assert sum(np.prod(w.shape) for w in model.trainable_weights) == 8_215_568
    pixels = tf.random.stateless_uniform((4, 784), seed=(5, 6))
    predicted = tf.argmax(model(pixels), axis=1).numpy()
    wrong = (predicted + 1) % 10
    decoded = []  # the classes whose capsule the decoder was given
    reconstruct = model.reconstruct
    monkeypatch.setattr(model, "reconstruct",
                        lambda v, classes: decoded.append(np.asarray(classes)) or reconstruct(v, classes))
    model.losses_for(pixels, tf.constant(wrong), mask_with_labels=True)  # training: the true label
    model.losses_for(pixels, tf.constant(wrong), mask_with_labels=False)  # test: the prediction
    assert decoded[0].tolist() == wrong.tolist() and decoded[1].tolist() == predicted.tolist()
    total, margin, reconstruction, _ = model.losses_for(pixels, tf.constant(wrong), mask_with_labels=True)
    assert float(total) == pytest.approx(float(margin) + 0.0005 * float(reconstruction), rel=1e-6)

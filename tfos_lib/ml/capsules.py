"""Capsule networks (Sabour, Frosst and Hinton, "Dynamic Routing Between Capsules", 2017) as tf-keras layers.

The pieces, in the order data flows through them:

* :func:`squash`: shrinks a vector's length into [0, 1) and keeps its direction,
  ``v = |s|^2 / (1 + |s|^2) * s / |s|``; a capsule's length is the probability that
  its entity is present.
* :class:`PrimaryCapsules`: a convolution whose channels are regrouped into many
  small capsules (the book's: 32 maps of 6x6 capsules of 8 dimensions = 1,152).
* :class:`DigitCapsules`: every input capsule ``i`` predicts every output capsule
  ``j`` with its own matrix, ``u_hat[i, j] = W[i, j] u[i]``; :func:`route` then
  weights the predictions by agreement (dynamic routing).
* :func:`mask`: keeps one output capsule (the true class in training, the
  predicted one at test) for the decoder that reconstructs the image.
* :func:`margin_loss` and :func:`reconstruction_loss`: the paper's losses.

Tensors are ``[batch, capsules, dimensions]`` throughout (the book's TF1 code
carried a trailing axis of 1 for ``tf.matmul``); the routing is three
``einsum`` per iteration over all capsules at once, with no Python loop over
capsules and no tiling of ``W`` to the batch (the book's tiling costs 720 MiB at
batch 128).

Imports TensorFlow when imported: import this module where the model runs (the workers).
"""

from __future__ import annotations

from tfos_lib.tfenv import import_tensorflow

tf = import_tensorflow()

__all__ = ["CapsNet", "DigitCapsules", "PrimaryCapsules", "capsule_lengths", "margin_loss", "mask",
           "reconstruction_loss", "route", "squash"]

#: tf.keras.backend.epsilon(), inside the square roots as in the book.
EPSILON = 1e-7


def squash(s, axis: int = -1):
    """``|s|^2 / (1 + |s|^2) * s / |s|`` along ``axis``: the same direction, a length in [0, 1)."""
    squared_norm = tf.reduce_sum(tf.square(s), axis=axis, keepdims=True)
    return squared_norm / (1.0 + squared_norm) * s / tf.sqrt(squared_norm + EPSILON)


def capsule_lengths(v):
    """``[batch, capsules, dims] -> [batch, capsules]``: each capsule's length (the book's ``v_norm``)."""
    return tf.sqrt(tf.reduce_sum(tf.square(v), axis=-1) + EPSILON)


def route(u_hat, iterations: int):
    """Routing by agreement (the paper's Procedure 1) over predictions ``u_hat [batch, in, out, dims]``.

    Returns ``(v, c)``: the output capsules ``[batch, out, dims]`` and the last coupling
    coefficients ``[batch, in, out]`` (each input capsule's, summing to 1 over the outputs).

    As in the book (and the paper's reference code), only the last iteration lets the
    gradient flow into ``u_hat``; the earlier ones, which only decide the coupling
    coefficients, see it through ``stop_gradient``. The logits ``b`` start at zero on
    every forward pass: they are not trained weights.
    """
    stopped = tf.stop_gradient(u_hat)
    b = tf.zeros(tf.shape(u_hat)[:3], dtype=u_hat.dtype)  # [batch, in, out]
    for r in range(iterations):
        c = tf.nn.softmax(b, axis=2)  # each input capsule shares itself out among the outputs
        last = r == iterations - 1
        s = tf.einsum("bij,bijd->bjd", c, u_hat if last else stopped)  # weighted sum of predictions
        v = squash(s)
        if not last:
            b = b + tf.einsum("bijd,bjd->bij", stopped, v)  # agreement: prediction . output
    return v, c


def mask(v, classes):
    """Zeroes every output capsule but ``classes`` (int ``[batch]``) and flattens: ``[batch, out * dims]``."""
    keep = tf.one_hot(tf.cast(classes, tf.int32), tf.shape(v)[1], dtype=v.dtype)
    return tf.reshape(v * keep[:, :, None], [tf.shape(v)[0], -1])


def margin_loss(labels, lengths, m_plus: float = 0.9, m_minus: float = 0.1, down_weight: float = 0.5):
    """``T max(0, m+ - |v|)^2 + lambda (1 - T) max(0, |v| - m-)^2``, summed over classes, averaged over the batch."""
    present = tf.one_hot(tf.cast(labels, tf.int32), tf.shape(lengths)[1], dtype=lengths.dtype)
    per_class = (present * tf.square(tf.nn.relu(m_plus - lengths))
                 + down_weight * (1.0 - present) * tf.square(tf.nn.relu(lengths - m_minus)))
    return tf.reduce_mean(tf.reduce_sum(per_class, axis=1))


def reconstruction_loss(pixels, reconstruction, reduction: str = "mean"):
    """Squared error between the image and its reconstruction, averaged over the batch.

    ``mean`` (the book's) averages it over the pixels too; ``sum`` (the paper's) sums them,
    so with the same 0.0005 weight the paper's term is 784 times stronger.
    """
    squared = tf.square(reconstruction - tf.reshape(pixels, tf.shape(reconstruction)))
    per_image = tf.reduce_sum(squared, axis=1) if reduction == "sum" else tf.reduce_mean(squared, axis=1)
    return tf.reduce_mean(per_image)


class PrimaryCapsules(tf.keras.layers.Layer):
    """A ReLU convolution (kernel 9, stride 2, valid) whose channels regroup into ``capsule_dim``-D capsules."""

    def __init__(self, maps: int = 32, capsule_dim: int = 8, kernel_size: int = 9, strides: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.capsule_dim = capsule_dim
        self.conv = tf.keras.layers.Conv2D(maps * capsule_dim, kernel_size, strides, activation="relu",
                                           name="conv")

    def call(self, images):
        x = self.conv(images)  # [batch, 6, 6, 256]
        return squash(tf.reshape(x, [tf.shape(x)[0], -1, self.capsule_dim]))  # [batch, 1152, 8]


class DigitCapsules(tf.keras.layers.Layer):
    """One ``out_dim x in_dim`` matrix per (input, output) capsule pair, then :func:`route`."""

    def __init__(self, capsules: int = 10, capsule_dim: int = 16, routing_iterations: int = 3, stddev: float = 0.01,
                 **kwargs):
        super().__init__(**kwargs)
        self.capsules, self.capsule_dim, self.routing_iterations = capsules, capsule_dim, routing_iterations
        self.stddev = stddev

    def build(self, input_shape):
        in_capsules, in_dim = int(input_shape[1]), int(input_shape[2])
        self.W = self.add_weight(name="W", shape=(in_capsules, self.capsules, self.capsule_dim, in_dim),
                                 initializer=tf.keras.initializers.RandomNormal(stddev=self.stddev))

    def predictions(self, u):
        """``u_hat[b, i, j] = W[i, j] u[b, i]``: ``[batch, in, in_dim] -> [batch, in, out, out_dim]``."""
        return tf.einsum("ijdk,bik->bijd", self.W, u)

    def call(self, u):
        return route(self.predictions(u), self.routing_iterations)[0]


class CapsNet(tf.keras.Model):
    """The book's CapsNet: Conv1 -> PrimaryCaps -> DigitCaps (routing) -> capsule lengths; a masked decoder.

    ``model(pixels)`` takes ``(batch, 784)`` pixels in [0, 1] and returns ``(batch, 10)``
    capsule lengths (the class scores; argmax is the prediction). Training minimises
    ``margin_loss + reconstruction_weight * reconstruction_loss`` with the decoder fed
    the true class's capsule; :meth:`test_step` (``evaluate``) feeds it the predicted one.
    """

    def __init__(self, routing_iterations: int = 3, reconstruction_weight: float = 0.0005,
                 reconstruction_reduction: str = "mean", num_classes: int = 10, **kwargs):
        super().__init__(**kwargs)
        self.reconstruction_weight = reconstruction_weight
        self.reconstruction_reduction = reconstruction_reduction
        layers = tf.keras.layers
        self.conv1 = layers.Conv2D(256, 9, activation="relu", name="conv1")  # 20x20x256
        self.primary = PrimaryCapsules(name="primary_caps")  # 1152 capsules of 8
        self.digits = DigitCapsules(num_classes, 16, routing_iterations, name="digit_caps")  # 10 of 16
        self.decoder = tf.keras.Sequential([layers.Dense(512, activation="relu"), layers.Dense(1024, activation="relu"),
                                            layers.Dense(784, activation="sigmoid")], name="decoder")
        self.decoder.build((None, num_classes * 16))
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")
        self.accuracy_tracker = tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    def capsules(self, pixels):
        """``(batch, 784) -> (batch, 10, 16)``: the output capsules."""
        return self.digits(self.primary(self.conv1(tf.reshape(pixels, [-1, 28, 28, 1]))))

    def reconstruct(self, v, classes):
        """The decoder's ``(batch, 784)`` image from the capsule of ``classes`` alone."""
        return self.decoder(mask(v, classes))

    def call(self, pixels, training=False):
        return capsule_lengths(self.capsules(pixels))

    def losses_for(self, pixels, labels, mask_with_labels: bool):
        """``(total, margin, reconstruction, lengths)`` of one batch; the decoder sees the true or predicted class."""
        v = self.capsules(pixels)
        lengths = capsule_lengths(v)
        classes = labels if mask_with_labels else tf.argmax(lengths, axis=1)
        margin = margin_loss(labels, lengths)
        reconstruction = reconstruction_loss(pixels, self.reconstruct(v, classes), self.reconstruction_reduction)
        return margin + self.reconstruction_weight * reconstruction, margin, reconstruction, lengths

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    def train_step(self, data):
        pixels, labels = data
        with tf.GradientTape() as tape:
            loss, _, _, lengths = self.losses_for(pixels, labels, mask_with_labels=True)
            # Gradients are summed over the replicas: each contributes its share of the mean.
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        gradients = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(labels, lengths)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        pixels, labels = data
        loss, _, _, lengths = self.losses_for(pixels, labels, mask_with_labels=False)
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(labels, lengths)
        return {m.name: m.result() for m in self.metrics}

"""DiscoGAN (Kim et al. 2017) as the book's chapter 9 builds it, without its bugs, and the figures that judge a GAN.

Imports TensorFlow only inside functions (call them in executors). The generators map
``(size, size, 3)`` RGB in [0, 1] to the same; the discriminators give one logit; A and
B are the two domains (the job's: shoes and bags).
"""

from __future__ import annotations

import numpy as np

from tfos_lib.tfenv import import_tensorflow

__all__ = ["LOSSES", "build_discogan", "build_discriminator", "build_generator", "diversity", "frechet_distance"]

#: What ``train_step`` reports: the discriminators' and generators' totals and their terms.
LOSSES = ("d_loss", "g_loss", "gan_a", "gan_b", "const_a", "const_b")


def _conv(tf, filters, strides, bn, name):
    layers = tf.keras.layers
    init = tf.keras.initializers.TruncatedNormal(stddev=0.02)
    # The book's contrib batch_norm: no gamma, decay 0.999, eps 1e-3, no conv bias. Momentum 0.9 here: at
    # a few hundred steps 0.999 would leave the moving statistics mostly at their initial values.
    out = [layers.Conv2D(filters, 4, strides, padding="same", use_bias=not bn, kernel_initializer=init, name=name)]
    if bn:
        out.append(layers.BatchNormalization(scale=False, momentum=0.9, epsilon=1e-3, name=f"{name}_bn"))
    return out


def build_generator(tf, size: int, name: str):
    """``(size, size, 3)`` RGB in [0, 1] -> the same: 4 stride-2 convs, 4 2x upsamplings, a 3-channel conv."""
    layers = tf.keras.layers
    x = inputs = layers.Input((size, size, 3), name="inputs")
    for i, filters in enumerate((32, 64, 128, 256)):
        for layer in _conv(tf, filters, 2, bn=i > 0, name=f"conv{i + 1}"):
            x = layer(x)
        x = layers.LeakyReLU(0.2)(x)  # tf.nn.leaky_relu's alpha (Keras' default is 0.3)
    for i, filters in enumerate((128, 64, 32, 16)):
        for layer in _conv(tf, 4 * filters, 1, bn=True, name=f"up{i + 1}"):
            x = layer(x)
        # The book reshapes [h, w, 4c] to [2h, 2w, c] row-major, which turns each pixel into a 1x4 strip;
        # depth_to_space makes the 2x2 block the same convolution meant.
        x = tf.nn.depth_to_space(layers.ReLU()(x), 2)
    # Book bug fixed: its last layer is a ReLU, unbounded (its saved samples wrap above 1); images are in [0, 1].
    outputs = layers.Conv2D(3, 4, padding="same", activation="sigmoid", name="outputs")(x)
    return tf.keras.Model(inputs, outputs, name=name)


def build_discriminator(tf, size: int, name: str):
    """``(size, size, 3)`` -> one logit: 5 stride-2 convs, a 512-unit layer, a linear unit."""
    layers = tf.keras.layers
    x = inputs = layers.Input((size, size, 3))
    for i, filters in enumerate((32, 64, 128, 256, 512)):
        for layer in _conv(tf, filters, 2, bn=i > 0, name=f"conv{i + 1}"):
            x = layer(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Flatten()(x)
    init = tf.keras.initializers.TruncatedNormal
    x = layers.Dense(512, use_bias=False, kernel_initializer=init(stddev=0.02), name="fc1")(x)
    x = layers.LeakyReLU(0.2)(layers.BatchNormalization(scale=False, momentum=0.9, epsilon=1e-3)(x))
    # Book bug fixed: its last layer is a sigmoid whose output then goes to sigmoid_cross_entropy_with_logits
    # (a second sigmoid: every loss term bounded, e.g. disc_loss in [2.01, 4.01]). Here: a logit.
    logit = layers.Dense(1, kernel_initializer=init(stddev=0.02), name="logit")(x)
    return tf.keras.Model(inputs, logit, name=name)


def build_discogan(image_size: int, learning_rate: float, beta_1: float, generator_steps: int):
    """The DiscoGAN as a Keras model whose ``train_step`` updates both discriminators and both generators.

    ``train_step`` takes ``2 * generator_steps`` batches: (A, B) for the joint step, then one fresh (A, B)
    pair per extra generator step.
    """
    tf = import_tensorflow()

    def bce(logits, label: float):
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.fill(tf.shape(logits), label),
                                                                      logits=logits))

    class DiscoGAN(tf.keras.Model):
        """A: shoes, B: bags. ``g_ab`` translates A to B (the book's generator_sb), ``g_ba`` B to A."""

        def __init__(self):
            super().__init__()
            size = image_size
            self.g_ab, self.g_ba = build_generator(tf, size, "g_ab"), build_generator(tf, size, "g_ba")
            self.d_a, self.d_b = build_discriminator(tf, size, "d_a"), build_discriminator(tf, size, "d_b")
            self.trackers = {name: tf.keras.metrics.Mean(name) for name in LOSSES}

        def compile(self):
            super().compile()
            # Two optimizers, as the book's: one over the discriminators' variables, one over the generators'.
            self.d_optimizer = tf.keras.optimizers.Adam(learning_rate, beta_1=beta_1, epsilon=1e-8)
            self.g_optimizer = tf.keras.optimizers.Adam(learning_rate, beta_1=beta_1, epsilon=1e-8)

        @property
        def metrics(self):
            return list(self.trackers.values())

        def call(self, a, training=False):
            return self.g_ab(a, training=training)

        def losses_of(self, a, b):
            fake_b, fake_a = self.g_ab(a, training=True), self.g_ba(b, training=True)
            # Book bug fixed: its reconstructions apply the same generator twice (G_sb(G_sb(a))); the paper's
            # and the book's own maths go there and back: G_ba(G_ab(a)).
            recon_a, recon_b = self.g_ba(fake_b, training=True), self.g_ab(fake_a, training=True)
            # Real and fake go through each discriminator as one batch: with two batches (the book's), batch
            # normalisation gives each its own statistics and so erases what tells them apart.
            d_a_real, d_a_fake = tf.split(self.d_a(tf.concat([a, fake_a], 0), training=True), 2)
            d_b_real, d_b_fake = tf.split(self.d_b(tf.concat([b, fake_b], 0), training=True), 2)
            losses = {
                "gan_a": bce(d_a_fake, 1.0), "gan_b": bce(d_b_fake, 1.0),  # non-saturating, as the book's code
                "const_a": tf.reduce_mean(tf.square(recon_a - a)), "const_b": tf.reduce_mean(tf.square(recon_b - b)),
                "d_loss": bce(d_a_real, 1.0) + bce(d_a_fake, 0.0) + bce(d_b_real, 1.0) + bce(d_b_fake, 0.0),
            }
            # The book wraps this sum so that `+ gen_b_loss` sits on a line of its own (dropped in Python): all four.
            losses["g_loss"] = losses["gan_a"] + losses["gan_b"] + losses["const_a"] + losses["const_b"]
            return losses

        def train_step(self, data):
            # Per replica: each loss is this replica's mean; the optimizers sum the replicas' gradients.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            d_vars = self.d_a.trainable_variables + self.d_b.trainable_variables
            g_vars = self.g_ab.trainable_variables + self.g_ba.trainable_variables
            # As the book: D and G step on gradients of the same forward pass, then G again on fresh batches.
            with tf.GradientTape(persistent=True) as tape:  # (the scaling must be recorded too)
                losses = self.losses_of(data[0], data[1])
                d_loss, g_loss = losses["d_loss"] / replicas, losses["g_loss"] / replicas
            self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, d_vars), d_vars))
            self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, g_vars), g_vars))
            del tape
            for k in range(1, generator_steps):
                with tf.GradientTape() as tape:
                    g_loss = self.losses_of(data[2 * k], data[2 * k + 1])["g_loss"] / replicas
                self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, g_vars), g_vars))
            for name, tracker in self.trackers.items():
                tracker.update_state(losses[name])
            return {name: tracker.result() for name, tracker in self.trackers.items()}

    gan = DiscoGAN()
    gan.compile()
    # Built with its optimizers' slots before fit, so that BackupAndRestore restores everything at once.
    gan.build((None, image_size, image_size, 3))
    gan.d_optimizer.build(gan.d_a.trainable_variables + gan.d_b.trainable_variables)
    gan.g_optimizer.build(gan.g_ab.trainable_variables + gan.g_ba.trainable_variables)
    return gan


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """The Frechet distance between Gaussians fitted to two feature sets (FID's formula)."""
    from scipy import linalg

    mu_x, mu_y = x.mean(axis=0), y.mean(axis=0)
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = linalg.sqrtm(cov_x @ cov_y)
    return float(np.sum((mu_x - mu_y) ** 2) + np.trace(cov_x + cov_y - 2 * np.real(root)))


def diversity(features: np.ndarray) -> float:
    """Mean pairwise Euclidean distance between feature vectors (0: every image the same, mode collapse)."""
    squared = np.sum(features**2, axis=1)
    distances = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * features @ features.T, 0))
    n = len(features)
    return float(distances.sum() / (n * (n - 1)))

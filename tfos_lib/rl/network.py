"""The Q-network of a DQN agent: stacked Atari frames in, one Q-value per action out.

Built from the ``tf`` module the caller imported (inside a worker or a Spark task),
so importing this module imports no TensorFlow.
"""

from __future__ import annotations

from tfos_lib.rl.atari import FRAME_SHAPE, STACK

__all__ = ["build_q_network"]


def build_q_network(tf, num_actions: int, frame_shape=FRAME_SHAPE):
    """The Nature-DQN convolutional network: stacked uint8 frames in, one Q-value per action out."""
    layers = tf.keras.layers
    return tf.keras.Sequential(
        [
            layers.Input(shape=(*frame_shape, STACK), dtype="uint8"),
            layers.Rescaling(1.0 / 255),
            layers.Conv2D(32, 8, strides=4, activation="relu"),
            layers.Conv2D(64, 4, strides=2, activation="relu"),
            layers.Conv2D(64, 3, strides=1, activation="relu"),
            layers.Flatten(),
            layers.Dense(512, activation="relu"),
            layers.Dense(num_actions, name="q_values"),  # linear: Q-values are returns, not probabilities
        ],
        name="q_network",
    )

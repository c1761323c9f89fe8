"""Where one CapsNet training step spends its time on CPU, and the einsum routing vs the book's tiled matmul.

Times (one TensorFlow thread by default, random pixels, the book's model) a whole
training step, then the convolutional part and the DigitCaps part (predictions +
routing) forward and backward, the DigitCaps part written as the book's TF1 code
does it (``W`` tiled to the batch, ``u`` tiled to the 10 outputs, ``matmul``), and
the forward DigitCaps with 1, 3 and 5 routing iterations. Measures; asserts nothing.

    python benchmarks/capsnet_routing.py
    python benchmarks/capsnet_routing.py --batch 128 --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def seconds(fn, *args, repeat: int = 5) -> float:
    fn(*args)  # trace and warm up
    started = time.perf_counter()
    for _ in range(repeat):
        fn(*args)
    return (time.perf_counter() - started) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64, help="per-worker batch (the book's 128 over 2 workers)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from tfos_lib.tfenv import import_tensorflow

    tf = import_tensorflow(args.threads)
    from tfos_lib.ml import capsules

    model = capsules.CapsNet()
    model.compile(tf.keras.optimizers.Adam())
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((args.batch, 784), dtype=np.float32))
    y = tf.constant(rng.integers(0, 10, args.batch))
    model(x[:1])
    u = model.primary(model.conv1(tf.reshape(x, [-1, 28, 28, 1])))
    W = model.digits.W

    def backward(forward):
        @tf.function
        def step(inputs):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                total = tf.reduce_sum(forward(inputs))
            return tape.gradient(total, [inputs, *model.trainable_variables])
        return step

    def tiled(u):  # the book's: [B, 1152, 10, 8, 16] copies of W, matmul with transpose_a
        w = tf.tile(tf.transpose(W, [0, 1, 3, 2])[None], [tf.shape(u)[0], 1, 1, 1, 1])
        u_tiled = tf.tile(u[:, :, None, :, None], [1, 1, 10, 1, 1])
        return capsules.route(tf.squeeze(tf.matmul(w, u_tiled, transpose_a=True), -1), 3)[0]

    step = tf.function(model.train_step)
    results = {
        "training step": seconds(step, (x, y)),
        "Conv1 + PrimaryCaps, forward + backward": seconds(
            backward(lambda p: model.primary(model.conv1(tf.reshape(p, [-1, 28, 28, 1])))), x),
        "DigitCaps (einsum) + 3 routing iterations, forward + backward": seconds(
            backward(lambda u: capsules.route(model.digits.predictions(u), 3)[0]), u),
        "  of which the u_hat predictions": seconds(backward(model.digits.predictions), u),
        "DigitCaps (the book's tiled matmul) + 3 routing iterations, forward + backward": seconds(backward(tiled), u),
    }
    for iterations in (1, 3, 5):
        forward = tf.function(lambda u, r=iterations: capsules.route(model.digits.predictions(u), r)[0])
        results[f"DigitCaps forward, {iterations} routing iteration(s)"] = seconds(forward, u)
    print(f"batch {args.batch}, {args.threads} thread(s): {args.batch / results['training step']:.0f} examples/s")
    for name, value in results.items():
        print(f"{value:8.3f} s  {name}")


if __name__ == "__main__":
    main()

"""Bayesian neural networks with TensorFlow Probability's Flipout layers: a LeNet, Monte-Carlo summaries, scores.

The model half runs wherever TensorFlow runs (workers, Spark Python workers); the
scoring half (:func:`mc_summary`, :func:`expected_calibration_error`,
:func:`coverage_curve`, :func:`auroc`) is plain numpy.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "auroc",
    "build_lenet",
    "coverage_curve",
    "expected_calibration_error",
    "load_lenet",
    "mc_summary",
]


def build_lenet(num_classes: int, bayesian: bool, num_train_examples: int, image_size: int = 32,
                learning_rate: float = 1e-3):
    """The book's LeNet (chapter 8), compiled: three conv + max-pool blocks, four dense layers, logits out.

    ``bayesian=True``: ``Convolution2DFlipout`` / ``DenseFlipout`` layers (mean-field
    normal posteriors, N(0, 1) priors), whose KL divergence is divided by
    ``num_train_examples`` so that the loss is the book's negative ELBO per example
    (``NLL + sum(KL) / N``). ``bayesian=False``: the same network with ordinary
    layers, the deterministic baseline. Inputs ``(batch, image_size * image_size)``
    grey values; outputs ``(batch, num_classes)`` logits. Build it inside a
    strategy scope to train it data-parallel.
    """
    from tfos_lib.tfenv import import_tensorflow

    tf = import_tensorflow()
    layers = tf.keras.layers
    if bayesian:
        import tensorflow_probability as tfp

        def divergence(q, p, _):
            # Imports inside: the saved model's config copies this function, and a module does not copy.
            from tensorflow_probability import distributions

            return distributions.kl_divergence(q, p) / num_train_examples

        conv = lambda filters, size: tfp.layers.Convolution2DFlipout(  # noqa: E731
            filters, size, activation="relu", kernel_divergence_fn=divergence)
        dense = lambda units, activation="relu": tfp.layers.DenseFlipout(  # noqa: E731
            units, activation=activation, kernel_divergence_fn=divergence)
    else:
        conv = lambda filters, size: layers.Conv2D(filters, size, activation="relu")  # noqa: E731
        dense = lambda units, activation="relu": layers.Dense(units, activation=activation)  # noqa: E731
    model = tf.keras.Sequential([
        layers.InputLayer(input_shape=(image_size * image_size,), name="pixels"),
        layers.Reshape((image_size, image_size, 1)),
        conv(10, 5), layers.MaxPooling2D(3, strides=1),
        conv(15, 3), layers.MaxPooling2D(2),
        conv(30, 3), layers.MaxPooling2D(2),
        layers.Flatten(),
        dense(400), dense(120), dense(84), dense(num_classes, activation=None),
    ])
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate),
        # The NLL term; Keras adds the layers' KL terms (model.losses) to it.
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def load_lenet(model_path: str, num_classes: int, bayesian: bool, image_size: int = 32):
    """Rebuilds :func:`build_lenet` and loads the weights a saved model holds (``model_path/variables``).

    Runs in executors (for :func:`tfos_lib.ml.inference.predict` with ``samples``).
    Loading the saved Keras model instead would revive its layers from traced
    functions, whose random draws a seed cannot repeat; the rebuilt layers can.
    """
    import os

    model = build_lenet(num_classes, bayesian, num_train_examples=1, image_size=image_size)
    model.load_weights(os.path.join(model_path, "variables", "variables")).expect_partial()
    return model


def mc_summary(samples: np.ndarray, from_logits: bool = False) -> dict[str, np.ndarray]:
    """Monte-Carlo summaries of ``samples``: ``(passes, batch, classes)`` class probabilities (or logits).

    Returns per image: ``mean_probs`` ``(batch, classes)``; ``entropy``, the
    predictive entropy of the mean (total uncertainty, nats); ``mutual_information``,
    entropy minus the mean entropy of the passes (the model's own, epistemic part);
    ``sampled_class`` ``(batch, passes)``, each pass's predicted class.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if from_logits:
        samples = np.exp(samples - samples.max(axis=-1, keepdims=True))
        samples /= samples.sum(axis=-1, keepdims=True)
    mean = samples.mean(axis=0)
    entropy = -np.sum(mean * np.log(np.clip(mean, 1e-12, 1.0)), axis=-1)
    expected = -np.sum(samples * np.log(np.clip(samples, 1e-12, 1.0)), axis=-1).mean(axis=0)
    return {
        "mean_probs": mean.astype(np.float32),
        "entropy": entropy.astype(np.float32),
        "mutual_information": np.maximum(entropy - expected, 0.0).astype(np.float32),
        "sampled_class": samples.argmax(axis=-1).T.astype(np.float32),
    }


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> tuple[float, list[dict]]:
    """ECE of the top-class confidence over equal-width bins, and the bins (for a reliability diagram)."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    table, ece = [], 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            gap = abs(correct[inside].mean() - confidence[inside].mean())
            ece += inside.mean() * gap
            table.append({"low": float(low), "high": float(high), "count": int(inside.sum()),
                          "accuracy": float(correct[inside].mean()), "confidence": float(confidence[inside].mean())})
    return float(ece), table


def coverage_curve(uncertainty: np.ndarray, correct: np.ndarray, coverages=(1.0, 0.95, 0.9, 0.8, 0.7, 0.5)) -> list[dict]:
    """Accuracy on the most certain share of images when the rest (the most uncertain) go to a human."""
    order = np.argsort(uncertainty, kind="stable")
    rows = []
    for coverage in coverages:
        kept = order[: max(1, int(round(coverage * len(order))))]
        rows.append({"coverage": float(coverage), "accuracy": float(np.mean(correct[kept])), "kept": int(len(kept))})
    return rows


def auroc(negative: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of a score separating ``positive`` (higher) from ``negative`` (ties count half)."""
    scores = np.concatenate([negative, positive])
    ranks = _average_ranks(scores)
    n_neg, n_pos = len(negative), len(positive)
    return float((ranks[n_neg:].sum() - n_pos * (n_pos + 1) / 2) / (n_neg * n_pos))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            ranks[order[start:end]] = (start + end + 1) / 2  # 1-based average rank of the tie group
            start = end
    return ranks


# ---------------------------------------------------------------------------------------------
# Plots (driver side).


def plot_uncertainty(path: str, pass_accuracies: np.ndarray, reliability: dict, coverage: dict,
                     entropies: dict, title: str):
    """One PNG, four panels: per-pass test accuracy (the book's histogram), reliability diagram,
    accuracy vs coverage, and predictive entropy of test signs vs out-of-distribution images.

    ``reliability``/``coverage``: model name -> :func:`expected_calibration_error` bins /
    :func:`coverage_curve` rows; ``entropies``: label -> entropy values.
    """
    from tfos_lib import report

    fig = report.new_figure((16, 4))
    fig.suptitle(title)
    ax_pass, ax_rel, ax_cov, ax_ood = fig.subplots(1, 4)
    ax_pass.hist(pass_accuracies, bins=15, color="tab:blue")
    ax_pass.set(title=f"accuracy of each of {len(pass_accuracies)} MC passes", xlabel="test accuracy", ylabel="passes")
    ax_rel.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    for name, bins in reliability.items():
        ax_rel.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", label=name)
    ax_rel.set(title="reliability diagram", xlabel="confidence (top class)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    for name, rows in coverage.items():
        ax_cov.plot([r["coverage"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=name)
    ax_cov.set(title="most uncertain referred to a human", xlabel="share of images the model decides",
               ylabel="accuracy on them")
    ax_cov.invert_xaxis()
    top = max(float(np.max(v)) for v in entropies.values()) or 1.0
    for name, values in entropies.items():
        ax_ood.hist(values, bins=30, range=(0, top), alpha=0.5, density=True, label=name)
    ax_ood.set(title="predictive entropy", xlabel="entropy (nats)", ylabel="density")
    for ax in (ax_rel, ax_cov, ax_ood):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return report.save_figure(fig, path)


def plot_case_studies(path: str, images: np.ndarray, sampled: np.ndarray, labels, titles, num_classes: int):
    """Per chosen image: the image and the histogram of its sampled predicted classes (the book's case studies)."""
    from tfos_lib import report

    fig = report.new_figure((11, 2.2 * len(images)))
    for row, (image, classes, label, title) in enumerate(zip(images, sampled, labels, titles)):
        ax_image, ax_hist = fig.add_subplot(len(images), 4, 4 * row + 1), fig.add_subplot(len(images), 4, (4 * row + 2, 4 * row + 4))
        side = int(round(np.sqrt(image.size)))
        ax_image.imshow(np.reshape(image, (side, side)), cmap="gray", vmin=0, vmax=1)
        ax_image.axis("off")
        counts = np.bincount(np.asarray(classes, dtype=int), minlength=num_classes)
        colours = ["tab:green" if k == label else "tab:red" for k in range(num_classes)]
        ax_hist.bar(range(num_classes), counts, color=colours)
        ax_hist.set(title=title, xlim=(-0.5, num_classes - 0.5), ylabel="passes")
        ax_hist.set_xticks(range(0, num_classes, 2))
    return report.save_figure(fig, path)

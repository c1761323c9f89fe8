"""Outputs every job writes: ``metrics.json`` and PNG plots.

Plots use ``matplotlib.figure.Figure`` with an explicit Agg canvas instead of
pyplot, so importing this module neither selects a global backend nor needs a
display, and figures are freed as soon as they go out of scope (pyplot keeps
them alive until ``plt.close``). That matters on headless Spark drivers.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tfos_lib import storage

__all__ = [
    "METRICS_FILE",
    "new_figure",
    "plot_confusion_matrix",
    "plot_curves",
    "plot_image_grid",
    "read_metrics",
    "save_figure",
    "write_metrics",
]

METRICS_FILE = "metrics.json"


def _to_json(value: Any) -> Any:
    """Recursively converts numpy types, dataclasses and paths to plain JSON types.

    NaN and infinities become ``None`` because they are not valid JSON and
    strict parsers (``jq``, browsers) reject Python's ``NaN`` literal.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Not dataclasses.asdict: that deep-copies every field, arrays included.
        return {
            f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)
        }
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _to_json(value.tolist())
    if isinstance(value, np.generic):
        return _to_json(value.item())
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_to_json(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    raise TypeError(f"cannot write {type(value).__name__} to {METRICS_FILE}: {value!r}")


def write_metrics(output_dir: str | Path, metrics: Mapping[str, Any]) -> Path:
    """Writes ``metrics.json`` (indented, sorted keys) into ``output_dir``, atomically.

    Args:
        output_dir: Directory to write into; created if missing.
        metrics: JSON-like mapping. numpy scalars/arrays, dataclasses, tuples
            and paths are converted; NaN/inf are written as ``null``.

    Returns:
        Path of the written file.

    Raises:
        TypeError: A value has a type that cannot be converted to JSON.
    """
    text = json.dumps(_to_json(metrics), indent=2, sort_keys=True, allow_nan=False)
    if storage.is_remote(str(output_dir)):
        uri = storage.join(str(output_dir), METRICS_FILE)
        storage.write_bytes(uri, (text + "\n").encode())  # one object upload: all or nothing
        return uri
    output_dir = Path(storage.normalize(str(output_dir)) if storage.scheme(str(output_dir)) else output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / METRICS_FILE
    # A temporary file in the same directory, then a rename: a reader (or a rerun that
    # dies half-way) never sees a truncated metrics.json, only the old or the new one.
    tmp = output_dir / f".{METRICS_FILE}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        # A plain exclusive create: the umask decides the mode, as for any file the job writes.
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_metrics(output_dir: str | Path) -> dict[str, Any]:
    """Reads ``metrics.json`` from ``output_dir``.

    Args:
        output_dir: Directory previously passed to ``write_metrics``.

    Returns:
        The parsed metrics.

    Raises:
        FileNotFoundError: There is no ``metrics.json`` in the directory.
    """
    return json.loads(storage.read_bytes(storage.join(str(output_dir), METRICS_FILE)).decode("utf-8"))


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure drawn by Agg, not registered with pyplot (see the module docstring)."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself to fig; Agg renders without a display
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Writes ``fig`` as a PNG at ``path`` (parent directories created; a URI is written through storage)."""
    if storage.is_remote(str(path)):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        storage.write_bytes(str(path), buffer.getvalue())
        return str(path)
    path = Path(storage.normalize(str(path)) if storage.scheme(str(path)) else path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


def plot_curves(
    path: str | Path,
    history: Mapping[str, Sequence[float]],
    title: str,
    xlabel: str = "epoch",
) -> Path:
    """Plots training curves, one line per series, into a PNG.

    Series whose name contains ``acc`` (accuracy, val_accuracy, ...) go on a
    second subplot, since their 0..1 scale would be flattened next to a loss.

    Args:
        path: Output PNG path.
        history: Series name -> values per step, e.g. Keras ``History.history``.
        title: Figure title.
        xlabel: Label of the x axis; x values start at 1.

    Returns:
        The path written.

    Raises:
        ValueError: ``history`` is empty.
    """
    if not history:
        raise ValueError("plot_curves: history is empty, nothing to plot")
    acc = {k: v for k, v in history.items() if "acc" in k.lower()}
    other = {k: v for k, v in history.items() if k not in acc}
    groups = [g for g in (other, acc) if g]

    fig = new_figure((6 * len(groups), 4))
    fig.suptitle(title)
    for ax, group in zip(
        fig.subplots(1, len(groups), squeeze=False)[0], groups, strict=True
    ):
        for name, values in group.items():
            ax.plot(
                range(1, len(values) + 1), values, marker="o", markersize=3, label=name
            )
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 1.25"
        ax.set_ylabel("accuracy" if group is acc else "value")
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)


def plot_confusion_matrix(
    path: str | Path,
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
    title: str,
) -> list[list[int]]:
    """Plots a confusion-matrix heatmap with counts in each cell.

    Args:
        path: Output PNG path.
        y_true: True class indices, 0..len(class_names)-1.
        y_pred: Predicted class indices.
        class_names: Display name of each class index.
        title: Figure title.

    Returns:
        The confusion matrix as a nested list; row = true class, column =
        predicted class. Classes absent from the data still get a row/column.
    """
    from sklearn.metrics import confusion_matrix  # deferred: slow import

    n = len(class_names)
    cm = confusion_matrix(y_true, y_pred, labels=list(range(n)))

    size = max(4.0, 0.5 * n + 2)
    fig = new_figure((size + 1, size))
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax)
    threshold = cm.max() / 2 if cm.size else 0
    for i, j in np.ndindex(cm.shape):
        # White text on dark cells so counts stay readable.
        ax.text(
            j,
            i,
            str(cm[i, j]),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if cm[i, j] > threshold else "black",
        )
    ax.set_xticks(range(n), labels=class_names)
    ax.set_yticks(range(n), labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    save_figure(fig, path)
    return cm.tolist()


def plot_image_grid(
    path: str | Path,
    images: Sequence[np.ndarray] | np.ndarray,
    titles: Sequence[str],
    ncols: int = 8,
) -> Path:
    """Plots grayscale images in a grid, each with its own title.

    Args:
        path: Output PNG path.
        images: Images of shape (N, H, W) or (N, H, W, 1). uint8 images are
            shown on a fixed 0..255 scale; others are auto-scaled.
        titles: One title per image, e.g. "pred 3 / true 5".
        ncols: Maximum number of columns.

    Returns:
        The path written.

    Raises:
        ValueError: The number of titles differs from the number of images,
            or there are no images.
    """
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if len(images) == 0 or len(images) != len(titles):
        raise ValueError(
            f"plot_image_grid: need one title per image and at least one image, "
            f"got {len(images)} images and {len(titles)} titles"
        )
    ncols = min(ncols, len(images))
    nrows = math.ceil(len(images) / ncols)
    # Fixed range for uint8 so a faint digit is not stretched to full contrast.
    vrange = {"vmin": 0, "vmax": 255} if images.dtype == np.uint8 else {}

    fig = new_figure((1.5 * ncols, 1.7 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, title in zip(axes, images, titles, strict=False):
        ax.imshow(image, cmap="gray", **vrange)
        ax.set_title(title, fontsize=8)
    return save_figure(fig, path)

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tfos_lib.report import (
    plot_confusion_matrix,
    plot_curves,
    plot_image_grid,
    read_metrics,
    write_metrics,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_bytes=2000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes


@dataclass
class Config:
    lr: float
    layers: tuple


def test_metrics_round_trip(tmp_path):
    metrics = {
        "accuracy": np.float32(0.5),
        "steps": np.int64(7),
        "ok": np.bool_(True),
        "loss": [np.float64(1.5), float("nan"), float("inf")],
        "confusion": np.array([[1, 2], [3, 4]]),
        "config": Config(lr=np.float32(0.25), layers=(1, 2)),
        "nested": {"b": float("-inf"), "a": None, 3: "int key"},
    }
    path = write_metrics(tmp_path / "out", metrics)
    assert path == tmp_path / "out" / "metrics.json"

    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == read_metrics(tmp_path / "out")
    assert read_metrics(tmp_path / "out") == {
        "accuracy": 0.5,
        "steps": 7,
        "ok": True,
        "loss": [1.5, None, None],
        "confusion": [[1, 2], [3, 4]],
        "config": {"lr": 0.25, "layers": [1, 2]},
        "nested": {"a": None, "b": None, "3": "int key"},
    }
    # indent 2 and sorted keys
    assert text.startswith('{\n  "accuracy"')
    assert text.index('"config"') < text.index('"steps"')


def test_metrics_rejects_unknown_types(tmp_path):
    with pytest.raises(TypeError, match="object"):
        write_metrics(tmp_path, {"x": object()})


def test_metrics_are_replaced_atomically(tmp_path, monkeypatch):
    """A write that dies before the rename leaves the previous metrics.json whole, and no temporary file behind."""
    write_metrics(tmp_path, {"run": 1})

    def rename_fails(src, dst):
        # The new content is complete in the temporary file at this point; a plain
        # write to metrics.json would already have replaced the old content.
        assert json.loads(Path(src).read_text()) == {"run": 2} and Path(src).parent == tmp_path
        raise OSError("disk went away")

    monkeypatch.setattr(os, "replace", rename_fails)
    with pytest.raises(OSError, match="disk went away"):
        write_metrics(tmp_path, {"run": 2})
    monkeypatch.undo()
    assert read_metrics(tmp_path) == {"run": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    write_metrics(tmp_path, {"run": 3})
    assert read_metrics(tmp_path) == {"run": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_metrics_file_is_readable_like_a_plain_write(tmp_path):
    """Not the temporary file's private 0600: others on a shared output directory read metrics.json."""
    umask = os.umask(0o022)
    try:
        path = write_metrics(tmp_path, {"run": 1})
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_import_does_not_touch_pyplot():
    # Fresh interpreter: other tests or plugins may have imported pyplot here.
    code = "import sys, tfos_lib.report; assert 'matplotlib.pyplot' not in sys.modules"
    subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).parents[1], check=True
    )


def test_plot_curves_loss_and_accuracy(tmp_path, saved_figures):
    history = {
        "loss": [1.0, 0.6, 0.4],
        "val_loss": [1.1, 0.7, math.nan],
        "accuracy": [0.5, 0.7, 0.8],
        "val_accuracy": [0.4, 0.6, 0.75],
    }
    path = plot_curves(tmp_path / "plots" / "curves.png", history, "training")
    assert_png(path)  # save_figure writes a real PNG (the figure checks below are on what was drawn)
    losses, accuracies = saved_figures["curves.png"]
    assert losses["lines"] == {"loss": [1.0, 0.6, 0.4], "val_loss": [1.1, 0.7, pytest.approx(math.nan, nan_ok=True)]}
    assert accuracies["lines"] == {"accuracy": [0.5, 0.7, 0.8], "val_accuracy": [0.4, 0.6, 0.75]}
    assert (losses["xlabel"], losses["ylabel"], accuracies["ylabel"]) == ("epoch", "value", "accuracy")
    assert losses["legend"] == ["loss", "val_loss"] and accuracies["legend"] == ["accuracy", "val_accuracy"]


def test_plot_curves_loss_only(tmp_path, saved_figures):
    plot_curves(tmp_path / "c.png", {"loss": [3, 2, 1]}, "t", xlabel="step")
    (axes,) = saved_figures["c.png"]  # no empty accuracy panel
    assert axes["lines"] == {"loss": [3.0, 2.0, 1.0]} and axes["xlabel"] == "step"


def test_plot_curves_empty(tmp_path):
    with pytest.raises(ValueError, match="history is empty"):
        plot_curves(tmp_path / "c.png", {}, "t")


def test_confusion_matrix(tmp_path, saved_figures):
    y_true = [0, 0, 1, 1, 1, 2]
    y_pred = [0, 1, 1, 1, 0, 2]
    path = tmp_path / "cm.png"
    cm = plot_confusion_matrix(
        path, y_true, y_pred, ["zero", "one", "two", "three"], "cm"
    )
    assert cm == [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert all(type(v) is int for row in cm for v in row)
    matrix, colour_bar = saved_figures["cm.png"]
    assert matrix["images"][0].tolist() == cm and not colour_bar["images"]
    assert (matrix["title"], matrix["xlabel"], matrix["ylabel"]) == ("cm", "predicted", "true")


def test_image_grid(tmp_path, saved_figures):
    images = np.random.default_rng(0).integers(
        0, 256, size=(10, 28, 28, 1), dtype=np.uint8
    )
    titles = [f"pred {i}" for i in range(10)]
    plot_image_grid(tmp_path / "grid.png", images, titles, ncols=4)
    shown = [ax for ax in saved_figures["grid.png"] if ax["images"]]
    assert [ax["title"] for ax in shown] == titles
    for ax, image in zip(shown, images):
        assert np.array_equal(ax["images"][0], image[:, :, 0])


def test_image_grid_title_count_mismatch(tmp_path):
    with pytest.raises(ValueError, match="3 images and 2 titles"):
        plot_image_grid(tmp_path / "g.png", np.zeros((3, 8, 8)), ["a", "b"])

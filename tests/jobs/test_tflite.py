"""The chapter 4 job: train, export (SavedModel + three .tflite files), LiteRT evaluation in executors; bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jobs import tflite as job
from tfos_lib.datasets import idx

FASHION = "/usr/share/datasets/fashion-mnist"


def _write_idx(directory, train=64, test=24, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("t10k", test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        # Learnable: each class lights its own band of rows.
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label : 2 * label + 3] = 250
        idx.write_idx(directory / f"{split}-images-idx3-ubyte.gz", images)
        idx.write_idx(directory / f"{split}-labels-idx1-ubyte.gz", labels)
    return directory


def test_smoke_exports_and_evaluates_every_variant(spark, tmp_path, check_metrics_envelope, saved_figures):
    data = _write_idx(tmp_path)
    out = tmp_path / "out"
    job.main(["--backend", "local", "--epochs", "2", "--batch-size", "16", "--data-dir", str(data),
              "--output-dir", str(out), "--calibration-rows", "20", "--latency-images", "5"])
    saved = json.loads((out / "metrics.json").read_text())
    check_metrics_envelope(saved, "tflite", training=True)
    assert saved["data"] == {"source": f"mnist-idx:{data}", "train_rows": 64, "test_rows": 24}
    results = saved["results"]
    assert results["saved_model"] == str(out / "models" / "mnist_cnn" / "1")
    assert results["parameters"] == 1_199_882 and results["calibration_rows"] == 20
    assert results["dataframe_keras_accuracy"] == pytest.approx(results["keras_test_accuracy"], abs=1e-6)
    variants = results["variants"]
    assert set(variants) == {"float32", "float16", "int8"}
    assert variants["float32"]["agreement_with_keras"] == 1.0
    assert variants["float32"]["max_abs_probability_diff"] < 1e-4
    assert variants["int8"]["size_vs_float32"] <= 0.30 and variants["float16"]["size_vs_float32"] <= 0.55
    for name, v in variants.items():
        assert (out / v["file"]).stat().st_size == v["size_bytes"]
        assert 0 < v["latency_ms"]["median_ms"] <= v["latency_ms"]["p95_ms"] and v["latency_ms"]["images"] == 5
    curves = {k: v for ax in saved_figures["training_curves.png"] for k, v in ax["lines"].items()}
    assert set(curves) == set(results["history"]) and all(len(v) == 2 for v in curves.values())  # 2 epochs


def test_missing_file_is_named(spark, tmp_path):
    data = _write_idx(tmp_path)
    os.remove(tmp_path / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        job.main(["--data-dir", str(data), "--output-dir", str(tmp_path / "out")])


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_files_read_unchanged():
    arrays = idx.load_mnist(FASHION)
    assert arrays.x_train.shape == (60000, 28, 28) and arrays.x_test.shape == (10000, 28, 28)

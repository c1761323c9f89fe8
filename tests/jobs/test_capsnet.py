"""The CapsNet job: a 2-worker run on a few hundred real Fashion-MNIST images, the default data, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jobs import capsnet
from tfos_lib.datasets import idx


def _fashion_subset(directory, train=320, test=100):
    """The first rows of the real Fashion-MNIST (the Debian package .ci/run installs) as IDX files."""
    real = idx.load_mnist(capsnet.FASHION_MNIST_DIR)
    for name, array in (("train-images-idx3-ubyte", real.x_train[:train]),
                        ("train-labels-idx1-ubyte", real.y_train[:train]),
                        ("t10k-images-idx3-ubyte", real.x_test[:test]), ("t10k-labels-idx1-ubyte", real.y_test[:test])):
        idx.write_idx(directory / f"{name}.gz", array)
    return directory


def test_two_workers_train_capsnet_and_the_baseline_on_real_images(spark, tmp_path, check_metrics_envelope,
                                                                    saved_figures):
    data = _fashion_subset(tmp_path)
    out = tmp_path / "out"
    metrics = capsnet.main(["--num-workers", "2", "--data-dir", str(data), "--output-dir", str(out),
                            "--train-rows", "256", "--validation-rows", "64", "--batch-size", "32",
                            "--epochs", "2", "--learning-rate", "0.002"])
    saved = json.loads((out / "metrics.json").read_text())
    check_metrics_envelope(saved, "capsnet", training=True)
    assert metrics["num_workers"] == saved["num_workers"] == 2
    assert saved["data"] == {"source": f"mnist-idx:{data}", "train_rows": 256, "validation_rows": 64,
                             "test_rows": 100}
    results, baseline = saved["results"], saved["results"]["baseline_cnn"]
    assert results["parameters"] == 8_215_568
    assert results["steps_per_worker"] == 2 * 8  # 256 rows / global batch 32, per epoch
    assert set(results["history"]) == {"loss", "accuracy", "heldout_accuracy"}
    assert len(results["history"]["heldout_accuracy"]) == 2
    # 256 images and 16 steps teach CapsNet little (it may still answer one class): the README has the real figures.
    assert 0 <= results["test_accuracy"] <= 1 and 0 <= baseline["test_accuracy"] <= 1
    assert all(np.isfinite(results["history"]["loss"])) and all(np.isfinite(baseline["history"]["loss"]))
    assert sum(map(sum, results["confusion_matrix"])) == 100
    for model in (results, baseline):  # each model's matrix holds its own test score
        assert np.trace(model["confusion_matrix"]) / 100 == pytest.approx(model["test_accuracy"])
    assert set(results["per_class_accuracy"]) == set(capsnet.CLASSES)
    assert (out / "models" / "capsnet" / "1" / "saved_model.pb").exists()
    assert (out / "baseline_cnn" / "models" / "cnn" / "1" / "saved_model.pb").exists()
    assert saved_figures["confusion_matrix.png"][0]["images"][0].tolist() == results["confusion_matrix"]
    shown = saved_figures["reconstructions.png"]
    assert len([ax for ax in shown if ax["images"]]) == 16  # 8 test images over their 8 reconstructions
    assert len(saved_figures["capsule_dimensions.png"]) == len(results["perturbed_test_rows"]) >= 1
    losses, accuracies = saved_figures["training_curves.png"]
    assert {"heldout_accuracy", "cnn_heldout_accuracy"} <= set(accuracies["lines"])


def test_default_data_is_the_debian_package_and_its_absence_says_how_to_install(monkeypatch, tmp_path):
    assert capsnet.resolve_data_dir(capsnet.Config()) == capsnet.FASHION_MNIST_DIR
    monkeypatch.setattr(capsnet, "FASHION_MNIST_DIR", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        capsnet.resolve_data_dir(capsnet.Config())


def test_a_split_larger_than_the_training_set_is_refused(spark, tmp_path):
    data = _fashion_subset(tmp_path, train=50, test=10)
    with pytest.raises(ValueError, match="--train-rows 55000 \\+ --validation-rows 5000 exceed the 50 training"):
        capsnet.main(["--data-dir", str(data), "--output-dir", str(tmp_path / "out")])


def test_the_figures_data_shifts_one_capsule_dimension_at_a_time():
    from tfos_lib.ml.capsules import CapsNet

    model = CapsNet()
    x = np.random.default_rng(0).random((12, 784), dtype=np.float32)
    y = np.arange(12) % 10
    shown = capsnet.figures_data(model, x, y, y, n=4)
    assert np.array(shown["reconstructions"]["outputs"]).shape == (4, 784)
    assert shown["perturbations"]["test_rows"] == [(0, 0), (5, 5), (8, 8), (9, 9)]  # (test row, class)
    images = np.array(shown["perturbations"]["images"])
    assert images.shape == (4, 16, 11, 784)
    # The unshifted column (step 0) is the same image for every dimension.
    assert np.allclose(images[:, :, 5], images[:, :1, 5], atol=1e-6)

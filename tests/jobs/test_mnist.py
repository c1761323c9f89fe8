"""The MNIST job: smoke test, accuracy on the default data with 1 and 2 workers, bad input."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from jobs import mnist
from tfos_lib.datasets import idx
from tfos_lib.datasets.idx import IdxFormatError

REPO = str(Path(__file__).resolve().parents[2])  # tests/<group>/test_x.py -> the repository


def _write_mnist(directory, train=40, test=20, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    suffix = ".gz" if gz else ""
    for split, n in (("train", train), ("t10k", test)):
        idx.write_idx(directory / f"{split}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        idx.write_idx(directory / f"{split}-labels-idx1-ubyte{suffix}", (np.arange(n) % 10).astype(np.uint8))
    return directory


def test_smoke_local_backend_on_idx_files(spark, tmp_path, check_metrics_envelope, saved_figures):
    (tmp_path / "data").mkdir()
    data = _write_mnist(tmp_path / "data")
    out = tmp_path / "out"
    metrics = mnist.main(
        ["--backend", "local", "--model", "logreg", "--epochs", "1", "--batch-size", "8",
         "--data-dir", str(data), "--output-dir", str(out)]
    )
    saved = json.loads((out / "metrics.json").read_text())
    check_metrics_envelope(saved, "mnist", training=True)
    assert saved["data"] == {"source": f"mnist-idx:{data}", "train_rows": 40, "test_rows": 20}
    results = saved["results"]
    assert 0.0 <= results["test_accuracy"] <= 1.0 and np.isfinite(results["test_loss"])
    assert results["steps_per_worker"] == 5 and results["examples_per_worker"] == 40
    assert saved["config"]["optimizer"] == "sgd" and saved["config"]["learning_rate"] == 0.01
    assert metrics["backend"] == "local"
    assert results["dataframe_test_accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-6)
    # The held-out curves sit beside the training ones; the last epoch's is the final test score.
    assert set(results["history"]) == {"loss", "accuracy", "heldout_loss", "heldout_accuracy"}
    assert results["history"]["heldout_accuracy"][-1] == pytest.approx(results["test_accuracy"], abs=1e-6)
    assert (out / "models" / "mnist" / "1" / "saved_model.pb").exists()
    assert results["saved_model"] == str(out / "models" / "mnist" / "1")
    assert sum(map(sum, results["confusion_matrix"])) == 20
    losses, accuracies = saved_figures["training_curves.png"]
    assert set(losses["lines"]) == {"loss", "heldout_loss"}
    assert set(accuracies["lines"]) == {"accuracy", "heldout_accuracy"}
    for name, values in {**losses["lines"], **accuracies["lines"]}.items():
        assert values == pytest.approx(results["history"][name], rel=1e-6), name
    confusion = saved_figures["confusion_matrix.png"][0]  # [1] is its colour bar
    assert confusion["images"][0].tolist() == results["confusion_matrix"]


def test_cnn_reaches_97_percent_on_default_data_with_one_worker(spark, tmp_path):
    # Streamed from the spilled shard through a 200-row buffer, 4 steps per TensorFlow call: the same quality.
    metrics = mnist.main(["--output-dir", str(tmp_path), "--shuffle-buffer", "200", "--steps-per-execution", "4"])
    assert metrics["data"]["source"] == "sklearn-digits-upscaled"
    assert metrics["results"]["test_accuracy"] >= 0.97, metrics["results"]["test_accuracy"]


def test_cnn_reaches_97_percent_with_two_workers_on_local_cluster(tmp_path):
    """The README's multi-worker command, run as a user would (its own Spark application)."""
    run = subprocess.run(
        [os.path.join(REPO, "spark-submit.sh"), "mnist", "--master", "local-cluster[2,1,2048]",
         "--", "--num-workers", "2", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stderr[-5000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_workers"] == 2 and metrics["results"]["examples_per_worker"] == 673 * 10
    assert metrics["results"]["test_accuracy"] >= 0.97, metrics["results"]["test_accuracy"]


def test_missing_file_names_it(spark, tmp_path):
    data = _write_mnist(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        mnist.main(["--data-dir", str(data), "--output-dir", str(tmp_path / "out")])


def test_truncated_file_names_it(spark, tmp_path):
    data = _write_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IdxFormatError, match="train-images-idx3-ubyte.*truncated"):
        mnist.main(["--data-dir", str(data), "--output-dir", str(tmp_path / "out")])


def test_count_mismatch_names_both_files(spark, tmp_path):
    data = _write_mnist(tmp_path)
    idx.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(39, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"(?s)train-images.*train-labels|train-labels.*train-images"):
        mnist.main(["--data-dir", str(data), "--output-dir", str(tmp_path / "out")])


def test_unknown_option_lists_valid_ones(capsys):
    with pytest.raises(SystemExit) as caught:
        mnist.main(["--bogus", "1"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--bogus" in err and "--num-workers" in err and "--model" in err

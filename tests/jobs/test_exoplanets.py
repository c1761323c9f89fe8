"""The exoplanets job: YDF's distributed GBT on 2 tfos_lib workers, MLlib on the same features, the reloaded model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jobs import exoplanets
from tfos_lib.datasets import kepler
from tfos_lib.ml import forest


@pytest.fixture(scope="module")
def tiny_kepler(tmp_path_factory):
    """exoTrain.csv / exoTest.csv at the real width but 60 + 24 stars (hosts: 12 + 6, with strong transits)."""
    directory = tmp_path_factory.mktemp("kepler")
    kepler.write_default_data(str(directory), seed=5, sizes={"train": (60, 12), "test": (24, 6)})
    return directory


def test_two_ydf_workers_train_together_and_the_saved_model_scores_a_dataframe(
    spark, tmp_path, tiny_kepler, check_metrics_envelope, saved_figures
):
    out = tmp_path / "out"
    metrics = exoplanets.main(["--data-dir", str(tiny_kepler), "--output-dir", str(out), "--num-workers", "2",
                               "--features", "fft", "--fft-bins", "16", "--num-trees", "20", "--max-depth", "3"])
    saved = json.loads((out / "metrics.json").read_text())
    check_metrics_envelope(saved, "exoplanets", training=True)
    assert saved["num_workers"] == 2 and saved["backend"] == "barrier"
    assert saved["data"]["train_stars"] == 60 and saved["data"]["test_stars"] == 24
    assert saved["data"]["test_hosts"] == 6 and saved["data"]["feature_columns"] == 5 + 16
    results = metrics["results"]
    assert results["trees"] == 20
    assert 0 <= results["test_pr_auc"] <= 1 and 0 <= results["test_roc_auc"] <= 1
    assert sum(results["test_confusion_matrix"].values()) == 24
    assert results["majority_baseline"]["test_accuracy"] == pytest.approx(18 / 24)
    pr, roc = saved_figures["curves.png"]
    assert pr["lines"]["majority / chance"] == [6 / 24, 6 / 24]  # the share of hosts among the test stars
    assert roc["lines"]["chance (the book's AUC 0.499)"] == [0.0, 1.0]
    (curve,) = [v for k, v in roc["lines"].items() if not k.startswith("chance")]  # the model's ROC, 0 to 1
    assert curve[0] == 0.0 and curve[-1] == 1.0 and curve == sorted(curve)
    panels = saved_figures["light_curves.png"]  # per example star: raw, detrended, folded
    assert len(panels) % 3 == 0 and panels and all(p["title"].endswith(": raw flux") for p in panels[::3])
    assert all(len(p["lines"]) == 1 and len(next(iter(p["lines"].values()))) == kepler.NUM_FLUX for p in panels)
    # The forest's TF Serving export: reload it and score new stars where they live.
    assert metrics["results"]["export"] == str(out / "models" / "exoplanets" / "1")
    cfg = exoplanets.Config(data_dir=str(tiny_kepler), features="fft", fft_bins=16)
    test, names = exoplanets.featurize(spark, exoplanets.load_data(spark, cfg)[1], cfg)
    scored = forest.score(test, str(out / "models" / "exoplanets"), names).toPandas()
    assert len(scored) == 24 and np.isfinite(scored.probability).all()
    assert ((scored.probability >= 0) & (scored.probability <= 1)).all()


def test_mllib_engine_on_the_same_features(spark, tmp_path, tiny_kepler):
    out = tmp_path / "out"
    metrics = exoplanets.main(["--data-dir", str(tiny_kepler), "--output-dir", str(out), "--engine", "mllib",
                               "--features", "fft", "--fft-bins", "16", "--num-trees", "10", "--max-depth", "3"])
    assert metrics["results"]["trees"] == 10
    assert 0 <= metrics["results"]["test_pr_auc"] <= 1
    assert (out / "mllib_model").is_dir()


def test_missing_test_file_says_what_to_download(spark, tmp_path):
    kepler.write_default_data(str(tmp_path), seed=1, sizes={"train": (6, 2)})
    with pytest.raises(FileNotFoundError, match="exoTest.csv .*keplersmachines/kepler-labelled-time-series-data"):
        exoplanets.main(["--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "out")])

"""The fraud job: two workers end to end, the time split, thresholds from validation only, no-fraud splits."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jobs import fraud
from tfos_lib.datasets import creditcard
from tfos_lib.ml import anomaly, inference


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("creditcard")
    table = creditcard.generate_transactions(rows=6000, frauds=150, duplicates=20, seed=3)
    creditcard.write_creditcard_csv(str(directory / creditcard.CREDITCARD_FILE), table)
    return str(directory)


def test_two_workers_train_and_every_model_is_judged_at_the_validation_threshold(
        spark, small_data, tmp_path, check_metrics_envelope, saved_figures):
    out = tmp_path / "out"
    metrics = fraud.main(["--num-workers", "2", "--epochs", "2", "--data-dir", small_data, "--output-dir", str(out)])
    saved = json.loads((out / "metrics.json").read_text())
    check_metrics_envelope(saved, "fraud", training=True)
    assert saved["num_workers"] == 2 and metrics["backend"] == "barrier"
    assert saved["data"]["rows_read"] == 6000 and saved["data"]["duplicates_dropped"] == 20
    results = saved["results"]
    training = results["training"]
    assert len(training["history"]["loss"]) == 2 and training["steps_per_worker"] > 0
    assert set(training["history"]) == {"loss", "heldout_normal_mse", "heldout_pr_auc"}
    for name in fraud.MODELS:
        model = results["models"][name]
        assert 0 <= model["pr_auc"] <= 1 and 0 <= model["roc_auc"] <= 1
        assert model["at_validation_threshold"]["frauds"] == saved["data"]["splits"]["test"]["frauds"]
    assert results["model_flag_disagreements"] == 0  # the saved model's fraud flag is the chosen threshold's
    # The plots: what each drew, from the same test rows and the same threshold.
    test = saved["data"]["splits"]["test"]
    (errors,) = saved_figures["recon_error_distributions.png"]
    assert errors["legend"] == [f"normal ({test['rows'] - test['frauds']})", f"fraud ({test['frauds']})",
                                f"threshold {results['threshold']:.3g} (validation)"]
    assert len(errors["bars"]) == 2 * 59  # two histograms of 59 bins
    (pr,) = saved_figures["pr_curves.png"]
    for name in fraud.MODELS:
        assert f"{name} (PR-AUC {results['models'][name]['pr_auc']:.3f})" in pr["lines"]
    assert pr["lines"]["book's autoencoder"] == [fraud.BOOK_REFERENCE["precision"]]
    (trade_off,) = saved_figures["threshold_precision_recall.png"]
    assert {"precision", "recall"} <= set(trade_off["lines"])
    assert all(0 <= v <= 1 for v in trade_off["lines"]["precision"] + trade_off["lines"]["recall"])
    curves = {k: v for ax in saved_figures["training_curves.png"] for k, v in ax["lines"].items()}
    assert set(curves) == set(training["history"])
    for name, values in training["history"].items():
        assert curves[name] == pytest.approx(values), name

    # The threshold in the model is the one the validation rows give, not the test rows'.
    import tfos_lib

    tf = tfos_lib.import_tensorflow()
    assert float(tf.saved_model.load(str(out / "models" / "fraud" / "1")).threshold.numpy()) == pytest.approx(results["threshold"])
    cfg = fraud.Config(data_dir=small_data, output_dir=str(out))
    rows, _ = creditcard.read_transactions(spark, os.path.join(small_data, creditcard.CREDITCARD_FILE))
    parts, _ = fraud.add_features(fraud.split_rows(rows, cfg)[0])
    scored = inference.predict(parts.where("part = 'validation'"), str(out / "models" / "fraud"), ["features"], output_col="s",
                               output_names=["reconstruction_error"]).select("Class", "s.reconstruction_error")
    validation = scored.toPandas()
    errors = np.array([e[0] for e in validation["reconstruction_error"]])
    assert anomaly.threshold_at_recall(validation["Class"], errors, 0.8) == pytest.approx(results["threshold"], rel=1e-5)
    assert results["models"]["autoencoder"]["book_rule_on_these_rows"]["threshold"] != results["threshold"]


def _frame(spark, times, classes):
    data = [(i, float(t), *[0.0] * 28, 1.0, int(c)) for i, (t, c) in enumerate(zip(times, classes))]
    return spark.createDataFrame(data, ["row", *creditcard.COLUMNS])


def test_time_split_puts_no_test_row_before_a_training_row(spark):
    rng = np.random.default_rng(0)
    times = np.sort(rng.integers(0, 500, 400))  # ties included
    classes = (np.arange(400) % 10 == 0).astype(int)
    parts, sizes = fraud.split_rows(_frame(spark, times, classes), fraud.Config())
    span = {r.part: (r.first, r.last) for r in parts.groupBy("part").agg({"Time": "min"}).join(
        parts.groupBy("part").agg({"Time": "max"}), "part").toDF("part", "first", "last").collect()}
    assert span["fit"][1] < span["validation"][0] and span["validation"][1] < span["test"][0]
    assert sum(s["rows"] for s in sizes.values()) == 400
    assert sizes["test"]["rows"] == pytest.approx(100, abs=5)
    assert sizes["validation"]["rows"] == pytest.approx(60, abs=5)


def test_a_split_without_frauds_is_refused(spark):
    times = np.arange(200)
    classes = (times < 150) & (times % 7 == 0)  # no fraud in the latest quarter (the test rows)
    with pytest.raises(ValueError, match="the test split has no frauds"):
        fraud.split_rows(_frame(spark, times, classes), fraud.Config())


def test_the_books_random_split_is_an_option(spark):
    classes = (np.arange(2000) % 20 == 0).astype(int)
    parts, sizes = fraud.split_rows(_frame(spark, np.arange(2000), classes), fraud.Config(split="random", seed=1))
    assert sizes["test"]["rows"] == pytest.approx(500, abs=60) and sizes["validation"]["rows"] == pytest.approx(300, abs=50)
    # Shuffled: the test rows span the whole period.
    assert sizes["test"]["first_time"] < 100 and sizes["test"]["last_time"] > 1900
    assert parts.where("part = 'test'").count() == sizes["test"]["rows"]  # the cached split does not redraw


def test_generated_default_data_with_an_s3_output_goes_to_a_local_scratch_folder(s3, spark, monkeypatch):
    """No --data-dir and --output-dir on an S3 server: the generated creditcard.csv is written where Spark can
    read it (storage.default_data_dir: a local scratch folder, never the bucket); model, metrics and plots go to S3."""
    import functools

    from tfos_lib import storage

    monkeypatch.setattr(creditcard, "write_default_data",  # the real size takes a minute to train on; same format
                        functools.partial(creditcard.write_default_data, rows=4000, frauds=120, duplicates=10))
    out = "s3a://runs/fraud"
    fraud.main(["--backend", "local", "--epochs", "1", "--output-dir", out])
    saved = json.loads(storage.read_bytes(f"{out}/metrics.json"))
    assert saved["data"]["source"] == "generated (seed 0)" and saved["data"]["rows_read"] == 4000
    scratch = storage.default_data_dir(out, "default_data")
    assert os.path.isfile(os.path.join(scratch, creditcard.CREDITCARD_FILE))
    files = storage.list_files(out)
    assert "models/fraud/1/saved_model.pb" in files and "pr_curves.png" in files
    assert not any("default_data" in f for f in files)
    assert not os.path.exists("s3a:")  # a URI taken for a local path would leave this folder in the working directory

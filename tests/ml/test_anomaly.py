"""Thresholds at a recall, operating points, and the Mahalanobis detector on DataFrames."""

from __future__ import annotations

import numpy as np
import pytest

from tfos_lib.ml import anomaly


def test_the_books_rule_catches_97_of_120():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(5000), np.ones(120)]
    scores = np.r_[rng.exponential(1, 5000), rng.exponential(5, 120)]
    threshold = anomaly.threshold_at_recall(y, scores, 0.8)
    point = anomaly.operating_point(y, scores, threshold)
    assert point["caught"] == 97 and point["recall"] > 0.8 and threshold in scores
    # The largest such threshold: the next score above it flags one fraud fewer.
    assert anomaly.operating_point(y, scores, np.min(scores[scores > threshold]))["caught"] == 96


def test_threshold_comes_from_the_rows_it_is_given_and_applies_elsewhere():
    y_val, s_val = np.array([0, 0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.5, 0.9])
    threshold = anomaly.threshold_at_recall(y_val, s_val, 0.8)
    assert threshold == 0.3  # flags 0.5 and 0.9: both frauds (recall 1 > 0.8)
    y_test, s_test = np.array([0, 0, 1, 1, 1]), np.array([0.35, 0.1, 0.2, 0.4, 2.0])
    summary = anomaly.summarize(y_test, s_test, threshold, 0.8)
    at = summary["at_validation_threshold"]
    assert (at["caught"], at["false_alarms"], at["missed"], at["true_negatives"]) == (2, 1, 1, 1)
    assert at["alerts_per_10000"] == pytest.approx(6000) and at["precision"] == pytest.approx(2 / 3)
    # The book's way (threshold chosen on the test rows) is reported beside it, not used.
    assert summary["book_rule_on_these_rows"]["caught"] == 3


def test_no_frauds_means_no_threshold():
    with pytest.raises(ValueError, match="no positive"):
        anomaly.threshold_at_recall([0, 0], [0.1, 0.2], 0.8)


def test_mahalanobis_matches_numpy(spark):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3)) @ np.array([[2, 0, 0], [1, 1, 0], [0, 0.5, 0.2]])
    df = spark.createDataFrame([(row.tolist(),) for row in x], "f array<double>").repartition(3)
    mean, precision = anomaly.fit_gaussian(df, "f", ridge=0.0)
    assert np.allclose(mean, x.mean(axis=0)) and np.allclose(np.linalg.inv(precision), np.cov(x.T))
    d = np.array([r.d for r in df.select(anomaly.mahalanobis("f", mean, precision).alias("d")).collect()])
    expected = np.einsum("ij,jk,ik->i", x - mean, precision, x - mean)
    assert np.allclose(np.sort(d), np.sort(expected))

"""Anomaly scores judged at an operating point, and a Mahalanobis-distance detector on Spark DataFrames.

A fraud team reads a detector at one threshold: the one that catches a required
share of frauds (recall). :func:`threshold_at_recall` picks it on one set of rows
(a validation split), :func:`operating_point` applies it to another (the test set)::

    threshold = anomaly.threshold_at_recall(y_validation, score_validation, 0.8)
    report = anomaly.summarize(y_test, score_test, threshold, min_recall=0.8)

The threshold rule is the book's (chapter 7): the largest threshold whose flags
(``score > threshold``) catch *more than* ``min_recall`` of the frauds, which is
a score value of the rows themselves. With 120 frauds and recall 0.8 that is 97.

:func:`fit_gaussian` and :func:`mahalanobis` are the detector that needs no
training loop: the mean and covariance of normal rows (summed per partition in
the executors), then each row's squared Mahalanobis distance as a pandas UDF.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column, DataFrame

__all__ = ["fit_gaussian", "mahalanobis", "operating_point", "summarize", "threshold_at_recall"]


def _check(y, scores) -> tuple[np.ndarray, np.ndarray]:
    y, scores = np.asarray(y).astype(int).ravel(), np.asarray(scores, dtype=np.float64).ravel()
    if len(y) != len(scores):
        raise ValueError(f"{len(y)} labels but {len(scores)} scores.")
    if not np.isfinite(scores).all():
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} scores are not finite numbers.")
    if not (y == 1).any():
        raise ValueError(f"there are no positive (fraud) rows among the {len(y)} rows: no threshold can be chosen.")
    return y, scores


def threshold_at_recall(y, scores, min_recall: float) -> float:
    """The largest threshold ``t`` (a score of one of the rows) such that ``scores > t`` catch > ``min_recall``.

    Args:
        y: 1 for a positive (fraud) row, 0 otherwise.
        scores: higher means more suspicious.
        min_recall: in [0, 1).

    Raises:
        ValueError: no positive rows, mismatched lengths, non-finite scores.
    """
    if not 0 <= min_recall < 1:
        raise ValueError(f"min_recall must be in [0, 1); got {min_recall}.")
    y, scores = _check(y, scores)
    positives = np.sort(scores[y == 1])[::-1]
    # Catch strictly more than min_recall of them (the book's `recall > 0.8`): k of n positives.
    k = min(len(positives), int(np.floor(min_recall * len(positives) + 1e-9)) + 1)
    kth = positives[k - 1]
    below = scores[scores < kth]
    return float(below.max()) if len(below) else float(np.nextafter(kth, -np.inf))


def operating_point(y, scores, threshold: float) -> dict:
    """Counts and rates of the flags ``scores > threshold``: what the fraud team would see."""
    y, scores = np.asarray(y).astype(int).ravel(), np.asarray(scores, dtype=np.float64).ravel()
    flagged = scores > threshold
    tp, fp = int((flagged & (y == 1)).sum()), int((flagged & (y == 0)).sum())
    fn, tn = int((~flagged & (y == 1)).sum()), int((~flagged & (y == 0)).sum())
    return {
        "threshold": float(threshold), "frauds": tp + fn, "caught": tp, "false_alarms": fp, "missed": fn,
        "true_negatives": tn, "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "false_positive_rate": fp / (fp + tn) if fp + tn else 0.0,
        "alerts_per_10000": 1e4 * (tp + fp) / len(y) if len(y) else 0.0,
    }


def summarize(y, scores, threshold: float, min_recall: float) -> dict:
    """PR-AUC and ROC-AUC of ``scores``, the operating point at ``threshold`` (chosen elsewhere), and for comparison
    the book's procedure: the threshold chosen on these same rows (``book_rule_on_these_rows``)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, scores = _check(y, scores)
    return {
        "pr_auc": float(average_precision_score(y, scores)),
        "roc_auc": float(roc_auc_score(y, scores)) if (y == 0).any() else None,
        "at_validation_threshold": operating_point(y, scores, threshold),
        "book_rule_on_these_rows": operating_point(y, scores, threshold_at_recall(y, scores, min_recall)),
    }


def fit_gaussian(df: DataFrame, features_col: str, ridge: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Mean and inverse covariance of the array column ``features_col``. Runs on the driver; sums in executors.

    ``ridge`` (times the mean variance) is added to the diagonal so a flat direction cannot make it singular.

    Raises:
        ValueError: fewer than two rows.
    """
    import pandas as pd

    def sums(batches):
        for batch in batches:
            x = np.stack(batch[features_col].to_numpy()).astype(np.float64) if len(batch) else None
            if x is not None:
                yield pd.DataFrame({"n": [len(x)], "s": [x.sum(axis=0)], "ss": [(x.T @ x).ravel()]})

    parts = df.select(features_col).mapInPandas(sums, "n long, s array<double>, ss array<double>").collect()
    n = sum(p.n for p in parts)
    if n < 2:
        raise ValueError(f"fit_gaussian needs at least 2 rows; got {n}.")
    total = np.sum([np.asarray(p.s) for p in parts], axis=0)
    mean = total / n
    d = len(mean)
    cov = (np.sum([np.asarray(p.ss) for p in parts], axis=0).reshape(d, d) - n * np.outer(mean, mean)) / (n - 1)
    cov += ridge * np.trace(cov) / d * np.eye(d)
    return mean, np.linalg.inv(cov)


def mahalanobis(features_col: str, mean: np.ndarray, precision: np.ndarray) -> Column:
    """A column: each row's squared Mahalanobis distance ``(x - mean)' precision (x - mean)`` (a pandas UDF)."""
    import pandas as pd
    from pyspark.sql import functions as F

    mean, precision = np.asarray(mean, dtype=np.float64), np.asarray(precision, dtype=np.float64)

    def distance(x):
        centred = np.stack(x.to_numpy()).astype(np.float64) - mean
        return pd.Series(np.einsum("ij,jk,ik->i", centred, precision, centred))

    distance.__annotations__ = {"x": pd.Series, "return": pd.Series}  # real types: Spark reads them
    return F.pandas_udf(distance, "double")(features_col)

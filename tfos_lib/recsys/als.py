"""Spark MLlib's implicit ALS as a baseline that gets the same care as the TensorFlow models: tuned on validation.

Everything runs on the driver and plans Spark work. :func:`fit` trains one ALS,
:func:`scorer` turns it into a :class:`tfos_lib.recsys.ranking.Scorer` and visitor
vectors, :func:`tune` walks a small grid one parameter at a time (rank, then
``regParam``, then ``alpha``), scoring every fit by NDCG@k on a validation split of
the training period (:func:`tfos_lib.recsys.prepare.ranking_split`'s output applied
to the training interactions).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from tfos_lib.recsys import ranking

__all__ = ["AlsParams", "fit", "scorer", "tune"]


@dataclass(frozen=True)
class AlsParams:
    rank: int
    reg: float
    alpha: float


def fit(train, params: AlsParams, iterations: int, seed: int):
    """Implicit ALS on ``(visitor, item, strength)`` interactions (strength as the rating)."""
    from pyspark.ml.recommendation import ALS

    als = ALS(rank=params.rank, maxIter=iterations, regParam=params.reg, alpha=params.alpha, implicitPrefs=True,
              userCol="visitor", itemCol="item", ratingCol="strength", seed=seed, coldStartStrategy="drop")
    return als.fit(train)


def scorer(model, item_offset: np.ndarray):
    """``(Scorer, visitor vectors DataFrame)`` of a fitted ALS model; ``item_offset`` as in :class:`ranking.Scorer`."""
    from pyspark.sql import functions as F

    item_factors = model.itemFactors.toPandas()
    matrix = np.zeros((len(item_offset), model.rank), np.float32)
    if len(item_factors):
        matrix[item_factors["id"].to_numpy()] = np.stack(item_factors["features"].to_numpy())
    vectors = model.userFactors.select(F.col("id").alias("visitor"), F.col("features").cast("array<float>").alias("vector"))
    return ranking.Scorer("dot", matrix, item_offset), vectors


def tune(train, validation: dict, item_offset: np.ndarray, grid: dict[str, list], start: AlsParams, iterations: int,
         k: int, seed: int, log=None) -> tuple[AlsParams, list[dict]]:
    """The best :class:`AlsParams` by validation NDCG@k, searching one parameter at a time, and every trial.

    Args:
        train: ``(visitor, item, strength)`` training interactions without the validation ones.
        validation: ``{"eval_visitors", "seen", "held_out"}`` DataFrames, as
            :func:`tfos_lib.recsys.prepare.ranking_split` returns them.
        item_offset: 0 for candidate items, ``-inf`` for the others.
        grid: ``{"rank": [...], "reg": [...], "alpha": [...]}``, searched in that order,
            each from the best so far.
        start: the values of the parameters not searched yet.
    """
    trials: list[dict] = []
    tried: dict[AlsParams, float] = {}
    best = start
    visitors = validation["eval_visitors"].count()
    for name in ("rank", "reg", "alpha"):
        for value in grid.get(name) or [getattr(best, name)]:
            params = AlsParams(**{**best.__dict__, name: value})
            if params in tried:
                continue
            started = time.perf_counter()
            model = fit(train, params, iterations, seed)
            als_scorer, vectors = scorer(model, item_offset)
            recs = ranking.recommend_for(validation["eval_visitors"], validation["seen"], vectors, als_scorer, k,
                                         visitors)
            ndcg = ranking.ranking_metrics(recs, validation["held_out"], k)["ndcg"] or 0.0
            tried[params] = ndcg
            trials.append({**params.__dict__, "validation_ndcg": ndcg, "seconds": round(time.perf_counter() - started, 2)})
            if log:
                log.info("ALS rank %d regParam %g alpha %g: validation NDCG@%d %.4f", params.rank, params.reg,
                         params.alpha, k, ndcg)
        best = max(tried, key=tried.get)
    return best, trials

"""Evaluating recommenders on a leave-latest-out split: tuned ALS, every model's top-k and metrics (driver, Spark).

Used by ``jobs/recommend.py`` (book chapter 11); the ``cfg`` arguments are its
``Config`` (the attributes read are named in each function). Scoring, top-k and
metrics are :mod:`tfos_lib.recsys.ranking`'s, FAISS indexes :mod:`tfos_lib.recsys.ann`'s.

* :func:`item_counts`: training positives per item.
* :func:`train_als`: Spark's implicit ALS, tuned on the validation split and refit.
* :func:`evaluate`: every model's top-k for the evaluated visitors, written as Parquet and scored.
* :func:`recommend_everyone`: one model's top-k for every visitor, timed (optionally by a FAISS index).
* :func:`beats_by_stderrs`: an NDCG difference in standard errors.
"""

from __future__ import annotations

import numpy as np

from tfos_lib import storage
from tfos_lib.recsys import als, ann, ranking

__all__ = ["beats_by_stderrs", "evaluate", "item_counts", "recommend_everyone", "train_als"]


def item_counts(rank_train, num_items: int) -> np.ndarray:
    """Training positives per item (driver; one small collect)."""
    counts = np.zeros(num_items, np.int64)
    known = rank_train.groupBy("item").count().toPandas()
    counts[known["item"].to_numpy()] = known["count"].to_numpy()
    return counts


def train_als(data: dict, validation: dict, inner_counts: np.ndarray, cfg, log) -> tuple:
    """Spark's implicit ALS: the grid searched on the validation split (``--tune-als``), the best refit on training."""
    import time

    given = als.AlsParams(cfg.factors, cfg.als_regularization, cfg.als_alpha)
    best, trials = given, []
    if cfg.tune_als:
        grid = cfg.als_grid
        offset = np.where(inner_counts > 0, 0.0, -np.inf).astype(np.float32)
        best, trials = als.tune(validation["rank_train"], validation, offset,
                                {"rank": grid["als_ranks"], "reg": grid["als_regularizations"],
                                 "alpha": grid["als_alphas"]}, given, cfg.als_iterations, cfg.top_k, cfg.seed, log)
    started = time.perf_counter()
    model = als.fit(data["rank_train"], best, cfg.als_iterations, cfg.seed)
    model.itemFactors.count()
    return model, {"chosen": best.__dict__, "tuned": cfg.tune_als, "trials": trials,
                   "train_seconds": time.perf_counter() - started}


def evaluate(spark, cfg, data: dict, scorers: dict, vectors: dict, num_visitors: int, log) -> dict:
    """Every model's top-k for the evaluated visitors, written as Parquet, scored against their held-out items.

    Besides the metrics: ``coverage``, the share of candidate items in anyone's list, and
    ``scoring_seconds``, the time to compute, write and score the lists."""
    import time

    ranked = {}
    candidates = int(np.isfinite(scorers["popularity"].item_offset).sum())
    for name in (*cfg.model_list, "als", "popularity"):
        started = time.perf_counter()
        out = storage.join(cfg.output_dir, "recommendations", "evaluated", name)
        recs = ranking.recommend_for(data["eval_visitors"], data["seen"], vectors[name], scorers[name], cfg.top_k,
                                     num_visitors)
        recs.write.mode("overwrite").parquet(out)
        written = spark.read.parquet(out)
        ranked[name] = ranking.ranking_metrics(written, data["held_out"], cfg.top_k)
        ranked[name]["coverage"] = written.select("item").distinct().count() / max(1, candidates)
        ranked[name]["scoring_seconds"] = round(time.perf_counter() - started, 2)
        log.info("%-10s precision@%d %.4f recall@%d %.4f ndcg@%d %.4f hit rate %.4f", name, cfg.top_k,
                 ranked[name]["precision"], cfg.top_k, ranked[name]["recall"], cfg.top_k,
                 ranked[name]["ndcg"], ranked[name]["hit_rate"])
    return ranked


def recommend_everyone(spark, cfg, data: dict, scorers: dict, vectors: dict) -> dict:
    """``--recommend-all``'s model's top-k for every visitor (or a seeded sample), as Parquet, timed.

    Blocked products in Spark tasks (:func:`tfos_lib.recsys.ranking.top_n`): the item
    side travels once per task, visitors are scored a block at a time."""
    import time

    from pyspark.sql import functions as F

    out = storage.join(cfg.output_dir, "recommendations", "all_visitors")
    visitors = data["rank_train"].select("visitor").distinct()
    if cfg.recommend_visitors:
        visitors = visitors.orderBy(F.xxhash64(F.lit(cfg.seed + 1), "visitor")).limit(cfg.recommend_visitors)
    model = cfg.recommend_all
    started = time.perf_counter()
    index = None
    if cfg.top_k_index != "exact":
        index = ann.ItemIndex.build(scorers[model], cfg.top_k_index, cfg.ivf_nprobe, seed=cfg.seed)
    index_seconds = time.perf_counter() - started
    ranking.recommend_for(visitors, data["seen"], vectors[model], scorers[model], cfg.top_k,
                          cfg.recommend_visitors or data["num_visitors"], index).write.mode("overwrite").parquet(out)
    seconds = time.perf_counter() - started
    written = spark.read.parquet(out)
    count = written.select("visitor").distinct().count()
    result = {"model": model, "path": out, "rows": written.count(), "visitors": count,
              "sample": cfg.recommend_visitors or None, "seconds": round(seconds, 2),
              "visitors_per_second": round(count / seconds, 1), "items": data["num_items"],
              "index": cfg.top_k_index, "index_build_seconds": round(index_seconds, 2)}
    if index is not None:
        result |= {"ivf_lists": index.lists, "ivf_nprobe": index.nprobe} if index.kind == "faiss-ivf" else {}
        # Recall of the exact top-k (the evaluated visitors' lists, exact products) in the index's lists.
        exact = spark.read.parquet(storage.join(cfg.output_dir, "recommendations", "evaluated", model))
        result["recall_of_exact_top_k"] = ann.recall(written, exact)
    return result


def beats_by_stderrs(ranked: dict, model: str, baseline: str) -> float | None:
    """(NDCG of ``model`` - NDCG of ``baseline``) / the standard error of that difference (same visitors: conservative)."""
    if model not in ranked or baseline not in ranked:
        return None
    a, b = ranked[model], ranked[baseline]
    error = ((a["ndcg_stderr"] or 0.0) ** 2 + (b["ndcg_stderr"] or 0.0) ** 2) ** 0.5
    return round((a["ndcg"] - b["ndcg"]) / error, 2) if error else None

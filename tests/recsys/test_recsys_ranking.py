"""Ranking metrics against hand-computed values, and top-N against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tfos_lib.recsys import ranking


def test_ranking_metrics_match_hand_computed_values(spark):
    recs = spark.createDataFrame(
        [(1, 1, 10), (1, 2, 11), (1, 3, 12), (1, 4, 13), (2, 1, 20), (2, 2, 21), (2, 3, 22)],
        "visitor int, rank int, item int",
    )
    held = spark.createDataFrame([(1, 11), (1, 13), (2, 22), (3, 30)], "visitor int, item int")
    m = ranking.ranking_metrics(recs, held, k=3)
    # Visitor 1: one hit at rank 2 of 2 relevant (item 13 is at rank 4, beyond k). Visitor 2: a hit at
    # rank 3 of 1 relevant. Visitor 3: no recommendations at all.
    ndcg1 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    ndcg2 = (1 / math.log2(4)) / 1.0
    assert m["visitors"] == 3
    assert m["precision"] == pytest.approx((1 / 3 + 1 / 3 + 0) / 3)
    assert m["recall"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["ndcg"] == pytest.approx((ndcg1 + ndcg2 + 0) / 3)
    assert m["hit_rate"] == pytest.approx(2 / 3)
    assert m["hit_rate_stderr"] == pytest.approx(np.std([1, 1, 0], ddof=1) / math.sqrt(3))


def test_top_k_rows_orders_and_skips_removed_items():
    scores = np.array([[0.1, 0.9, -np.inf, 0.5], [-np.inf, -np.inf, 2.0, -np.inf]], np.float32)
    columns, values = ranking.top_k_rows(scores, 3)
    assert columns.tolist() == [[1, 3, 0], [2, -1, -1]]
    assert values[0].tolist() == pytest.approx([0.9, 0.5, 0.1])


def test_top_n_in_spark_matches_brute_force_and_excludes_seen_items(spark):
    rng = np.random.default_rng(0)
    visitors, items = rng.normal(size=(30, 4)).astype(np.float32), rng.normal(size=(50, 4)).astype(np.float32)
    offset = np.zeros(50, np.float32)
    offset[[3, 7]] = -np.inf  # no training interaction: never a candidate
    seen = {v: rng.choice(50, 5, replace=False).tolist() for v in range(30)}
    frame = ranking.vectors_frame(spark, np.arange(30), visitors).join(
        spark.createDataFrame(list(seen.items()), "visitor int, seen array<int>"), "visitor")
    recs = ranking.top_n(frame.repartition(3), ranking.Scorer("dot", items, offset), k=5).toPandas()
    assert len(recs) == 30 * 5
    for v, group in recs.groupby("visitor"):
        scores = visitors[v] @ items.T + offset
        scores[seen[v]] = -np.inf
        expected = np.argsort(-scores, kind="stable")[:5]
        assert group.sort_values("rank")["item"].tolist() == expected.tolist()


def test_scorers_leave_out_items_without_training_interactions(spark, tmp_path):
    items = np.arange(8, dtype=np.float32).reshape(4, 2)
    visitors = np.ones((3, 2), np.float32)
    np.savez(tmp_path / "mf.npz", kind="dot", item_vectors=items, visitor_vectors=visitors)
    rank_train = spark.createDataFrame([(0, 1), (1, 1), (2, 0)], "visitor int, item int")
    scorers, vectors = ranking.build_scorers(spark, 4, rank_train, {"mf": str(tmp_path / "mf.npz")})
    assert set(scorers) == set(vectors) == {"mf", "popularity"} and vectors["popularity"] is None
    assert scorers["popularity"].global_order().tolist() == [1, 0]  # items 2 and 3: nobody trained on them
    np.testing.assert_array_equal(scorers["mf"].item_offset, [0, 0, -np.inf, -np.inf])
    np.testing.assert_array_equal(scorers["mf"].scores(visitors[:1]), [[1, 5, -np.inf, -np.inf]])
    assert vectors["mf"].count() == 3

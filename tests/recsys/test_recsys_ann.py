"""FAISS top-k (tfos_lib.recsys.ann) against brute force on a tiny catalogue."""

import numpy as np
import pytest

from tfos_lib.recsys import ann, ranking


def catalogue(n_items=2000, n_visitors=300, groups=20, dim=16, seed=0):
    """Items in taste groups (clusters), visitors near one group, some items not candidates, some seen."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, dim)).astype(np.float32)
    items = centres[rng.integers(groups, size=n_items)] + 0.3 * rng.normal(size=(n_items, dim)).astype(np.float32)
    visitors = centres[rng.integers(groups, size=n_visitors)] + 0.5 * rng.normal(size=(n_visitors, dim)).astype(np.float32)
    offset = np.zeros(n_items, np.float32)
    offset[rng.choice(n_items, 50, replace=False)] = -np.inf
    seen = [rng.choice(n_items, rng.integers(0, 8), replace=False) for _ in range(n_visitors)]
    seen[0] = np.arange(ann.MAX_SEEN + 50)  # more seen items than a search asks for: the exact fallback
    seen[1] = None
    return ranking.Scorer("dot", items.astype(np.float32), offset), visitors.astype(np.float32), seen


def brute_force(scorer, visitors, seen, k):
    scores = scorer.scores(visitors)
    for row, s in enumerate(seen):
        if s is not None:
            scores[row, s] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def test_exact_faiss_index_equals_brute_force():
    scorer, visitors, seen = catalogue()
    index = ann.ItemIndex.build(scorer, "faiss")
    columns, values = ann.search_block(index.load(), index.items, scorer, visitors, seen, 10)
    np.testing.assert_array_equal(columns, brute_force(scorer, visitors, seen, 10))
    assert np.isfinite(values).all() and (np.diff(values, axis=1) <= 1e-5).all()


def test_ivf_index_recall_is_high_and_grows_with_nprobe():
    scorer, visitors, seen = catalogue()
    exact = brute_force(scorer, visitors, seen, 10)

    def recall(nprobe):
        index = ann.ItemIndex.build(scorer, "faiss-ivf", nprobe=nprobe, seed=1)
        columns, _ = ann.search_block(index.load(), index.items, scorer, visitors, seen, 10)
        assert all(not set(c) & set([] if s is None else s) for c, s in zip(columns, seen))  # never a seen item
        assert not np.isin(columns, np.flatnonzero(~np.isfinite(scorer.item_offset))).any()  # only candidates
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(columns, exact)]), index.lists

    low, lists = recall(1)
    high, _ = recall(16)
    assert lists == 50  # 4 sqrt(1950 candidates), capped at 39 items per list (k-means needs that many)
    assert 0.4 < low <= high and high > 0.9  # measured: 0.56 and 1.0


def test_faiss_index_refuses_a_non_dot_scorer():
    scorer = ranking.Scorer("constant", np.ones((5, 1), np.float32), np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="dot-product"):
        ann.ItemIndex.build(scorer, "faiss")


def test_top_n_in_spark_with_an_ivf_index_and_its_recall(spark):
    scorer, visitors, seen = catalogue(n_items=600, n_visitors=40)
    frame = ranking.vectors_frame(spark, np.arange(40), visitors).join(
        spark.createDataFrame([(v, None if s is None else s.tolist()) for v, s in enumerate(seen)],
                              "visitor int, seen array<int>"), "visitor")
    exact = ranking.top_n(frame.repartition(2), scorer, k=5)
    approximate = ranking.top_n(frame.repartition(2), scorer, k=5,
                                index=ann.ItemIndex.build(scorer, "faiss-ivf", nprobe=4))
    expected = brute_force(scorer, visitors, seen, 5)
    got = exact.toPandas().sort_values(["visitor", "rank"])
    np.testing.assert_array_equal(got["item"].to_numpy().reshape(40, 5), expected)
    measured = ann.recall(approximate, exact)
    brute = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(
        approximate.toPandas().sort_values(["visitor", "rank"])["item"].to_numpy().reshape(40, 5), expected)])
    assert measured["visitors"] == 40 and measured["recall"] == pytest.approx(brute) and measured["recall"] > 0.5

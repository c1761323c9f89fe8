"""N-gram baselines counted in Spark, against values computed by hand."""

from __future__ import annotations

import math

import pytest

from tfos_lib.lm import ngram

# One book: ids 0 1 2 1 2 1 3, vocabulary of 4.
TEXT = [0, 1, 2, 1, 2, 1, 3]


@pytest.fixture(scope="module")
def tiny(spark):
    return spark.createDataFrame([(TEXT,)], "train array<int>")


def test_unigram_is_add_one(tiny):
    model = ngram.unigram(tiny, "train", 4)
    # counts 1, 3, 2, 1 of N = 7, V = 4: (c + 1) / 11
    assert [model.probability([], w) for w in range(4)] == pytest.approx([2 / 11, 4 / 11, 3 / 11, 2 / 11])


def test_bigram_kneser_ney_by_hand(tiny):
    model = ngram.kneser_ney(tiny, "train", 2, 4)
    # Continuation counts (distinct predecessors): 1 <- {0, 2}: 2; 2 <- {1}: 1; 3 <- {1}: 1; total 4, 3 types.
    # Count-of-counts n1 = 2, n2 = 1: D1 = 2 / (2 + 2) = 0.5.
    # Bigram counts 01:1 12:2 21:2 13:1: n1 = 2, n2 = 2: D2 = 2 / (2 + 4) = 1/3.
    assert model.discounts == pytest.approx([0.5, 1 / 3])
    lower = {w: max(a - 0.5, 0) / 4 + 0.5 * 3 / 4 * (1 / 4) for w, a in {0: 0, 1: 2, 2: 1, 3: 1}.items()}
    assert lower == pytest.approx({0: 0.09375, 1: 0.46875, 2: 0.21875, 3: 0.21875})
    # After "1": counts 12:2 13:1, total 3, 2 types.
    expected = {w: max(a - 1 / 3, 0) / 3 + (1 / 3) * 2 / 3 * lower[w] for w, a in {0: 0, 1: 0, 2: 2, 3: 1}.items()}
    assert [model.probability([1], w) for w in range(4)] == pytest.approx([expected[w] for w in range(4)])
    assert model.probability([1], 2) == pytest.approx(0.6041666666666666)
    # A context never seen ("3" is never followed) backs off to the lower order unchanged.
    assert [model.probability([3], w) for w in range(4)] == pytest.approx([lower[w] for w in range(4)])
    result = ngram.score(model, [[1, 2, 1]])
    assert result["tokens"] == 2
    cross_entropy = -(math.log(expected[2]) + math.log(model.probability([2], 1))) / 2
    assert result["cross_entropy"] == pytest.approx(cross_entropy)
    assert result["bits_per_token"] == pytest.approx(cross_entropy / math.log(2))
    assert result["perplexity"] == pytest.approx(math.exp(cross_entropy))


def test_every_order_is_a_distribution(spark):
    import random

    rng = random.Random(0)
    rows = [([rng.choice([0, 1, 1, 2, 3, 3, 3, 4]) for _ in range(200)],) for _ in range(2)]
    df = spark.createDataFrame(rows, "train array<int>")
    for order in (3, 4):
        model = ngram.kneser_ney(df, "train", order, 6)  # id 5 never occurs
        for context in ([], [1], [3, 3], [4, 0, 2], [5, 5, 5]):
            probabilities = [model.probability(context, w) for w in range(6)]
            assert sum(probabilities) == pytest.approx(1.0) and min(probabilities) > 0

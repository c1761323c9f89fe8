"""N-gram language models counted with Spark: the baselines a neural language model has to beat.

Two models over integer token ids (``0 .. vocabulary_size - 1``):

- :func:`unigram`: add-one (Laplace) smoothed unigram, ``P(w) = (c(w) + 1) / (N + V)``.
- :func:`kneser_ney`: interpolated Kneser-Ney of order ``n`` (Chen & Goodman 1998, one
  discount per order, ``D_k = n1 / (n1 + 2 n2)`` from that order's count-of-counts,
  clipped to [0.1, 0.9]). The
  highest order uses raw counts, lower orders continuation counts (how many distinct
  tokens precede a k-gram), and order 1 is interpolated with the uniform distribution,
  so every token of the vocabulary, seen or not, has a probability above zero::

      P_k(w | h) = max(a_k(h w) - D_k, 0) / d_k(h) + D_k * t_k(h) / d_k(h) * P_{k-1}(w | h')

  where ``a_k`` is the raw count (k = n) or continuation count (k < n), ``d_k(h)`` the
  sum of ``a_k(h .)``, ``t_k(h)`` the number of distinct ``w`` with ``a_k(h w) > 0`` and
  ``h'`` is ``h`` without its first token. A context never seen (``d_k(h) = 0``) backs
  off to ``P_{k-1}`` unchanged.

Counting runs in Spark (explode, groupBy) on the driver's DataFrame; the count tables
(small: distinct k-grams) are collected to the driver, which scores held-out text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["NgramModel", "count_ngrams", "kneser_ney", "unigram", "score"]


#: Bounds of the discounts estimated from count-of-counts.
MIN_DISCOUNT, MAX_DISCOUNT = 0.1, 0.9


def _key(gram: Sequence[int]) -> str:
    return " ".join(map(str, gram))


def count_ngrams(ids_df, column: str, order: int):
    """Spark DataFrame ``(gram array<int>, count long)`` of the ``order``-grams in each row's ``column`` array.

    N-grams never span two rows (two books, or two blocks of one).
    """
    from pyspark.sql import functions as F

    if order < 1:
        raise ValueError(f"n-gram order must be >= 1; got {order}.")
    ids = F.col(column)
    starts = F.when(F.size(ids) >= order, F.sequence(F.lit(0), F.size(ids) - order)).otherwise(
        F.array().cast("array<int>"))
    grams = F.transform(starts, lambda i: F.slice(ids, i + 1, order))
    return ids_df.select(F.explode(grams).alias("gram")).groupBy("gram").count()


@dataclass
class NgramModel:
    """A smoothed n-gram model's tables, on the driver.

    Attributes:
        order: n.
        vocabulary_size: V; ids are ``0 .. V - 1``.
        numerators: per order k (index k - 1): k-gram key -> ``a_k``.
        contexts: per order k: context key -> ``(d_k, t_k)``.
        discounts: ``D_k`` per order.
        name: e.g. ``"kneser_ney_5"``.
    """

    order: int
    vocabulary_size: int
    numerators: list[dict[str, int]]
    contexts: list[dict[str, tuple[int, int]]]
    discounts: list[float]
    name: str

    def probability(self, context: Sequence[int], token: int) -> float:
        """``P(token | context)``; only the last ``order - 1`` tokens of ``context`` matter."""
        if self.order == 0:  # add-one unigram: numerators[0] holds raw counts
            counts = self.numerators[0]
            total = self.contexts[0][""][0]
            return (counts.get(str(token), 0) + 1) / (total + self.vocabulary_size)
        p = 1.0 / self.vocabulary_size
        context = list(context)[-(self.order - 1):] if self.order > 1 else []
        for k in range(1, self.order + 1):
            if k - 1 > len(context):
                break
            h = context[len(context) - (k - 1):] if k > 1 else []
            seen = self.contexts[k - 1].get(_key(h))
            if seen is None:
                continue
            total, types = seen
            discount = self.discounts[k - 1]
            a = self.numerators[k - 1].get(_key([*h, token]), 0)
            p = max(a - discount, 0.0) / total + discount * types / total * p
        return p


def _collect(df, key_column: str, value_columns: Sequence[str]) -> dict:
    """A small Spark table as a dict: ``key_column`` (array<int>) joined by spaces -> value(s)."""
    from pyspark.sql import functions as F

    table = df.select(F.concat_ws(" ", key_column).alias("k"), *value_columns).toArrow()
    keys = table.column("k").to_pylist()
    values = [table.column(c).to_pylist() for c in value_columns]
    return dict(zip(keys, values[0] if len(values) == 1 else zip(*values)))


def unigram(ids_df, column: str, vocabulary_size: int) -> NgramModel:
    """The add-one unigram model of the rows' token ids (counted in Spark)."""
    from pyspark.sql import functions as F

    counts = count_ngrams(ids_df, column, 1)
    numerators = _collect(counts, "gram", ["count"])
    total = counts.agg(F.sum("count")).first()[0] or 0
    return NgramModel(0, vocabulary_size, [numerators], [{"": (int(total), len(numerators))}], [0.0], "unigram")


def kneser_ney(ids_df, column: str, order: int, vocabulary_size: int) -> NgramModel:
    """The interpolated Kneser-Ney model of order ``order`` of the rows' token ids (counted in Spark).

    Raises:
        ValueError: ``order`` < 1.
    """
    from pyspark.sql import functions as F

    grams = {k: count_ngrams(ids_df, column, k) for k in range(1, order + 1)}
    numerators, contexts, discounts = [], [], []
    for k in range(1, order + 1):
        if k == order:
            table = grams[k].select("gram", F.col("count").alias("a"))
        else:  # continuation counts: distinct tokens seen before each k-gram
            table = (grams[k + 1].select(F.slice("gram", 2, k).alias("gram")).groupBy("gram").count()
                     .select("gram", F.col("count").alias("a")))
        table = table.cache()
        n1, n2 = table.agg(F.sum((F.col("a") == 1).cast("long")), F.sum((F.col("a") == 2).cast("long"))).first()
        n1, n2 = n1 or 0, n2 or 0
        # Clipped: with n1 = 0 the formula gives 0, and unseen tokens would get probability 0.
        discounts.append(min(max(n1 / (n1 + 2 * n2) if n1 + n2 else 0.5, MIN_DISCOUNT), MAX_DISCOUNT))
        numerators.append(_collect(table, "gram", ["a"]))
        context = F.slice("gram", 1, k - 1) if k > 1 else F.array().cast("array<int>")
        per_context = table.groupBy(context.alias("h")).agg(F.sum("a").alias("d"), F.count("*").alias("t"))
        contexts.append(_collect(per_context, "h", ["d", "t"]))
        table.unpersist()
    return NgramModel(order, vocabulary_size, numerators, contexts, discounts, f"kneser_ney_{order}")


def score(model: NgramModel, blocks: Sequence[Sequence[int]], first: int = 1) -> dict:
    """Cross-entropy of ``model`` on the tokens ``block[first:]`` of each block (the ones before are context only).

    Returns ``{"tokens", "cross_entropy" (nats per token), "perplexity", "bits_per_token"}``.
    """
    total, count = 0.0, 0
    context_size = max(model.order - 1, 0)
    for block in blocks:
        block = list(block)
        for t in range(max(first, 1), len(block)):
            total -= math.log(model.probability(block[max(0, t - context_size):t] if context_size else [], block[t]))
            count += 1
    if not count:
        raise ValueError("no held-out tokens to score: every block has fewer than 2 tokens.")
    cross_entropy = total / count
    return {"tokens": count, "cross_entropy": cross_entropy, "perplexity": math.exp(cross_entropy),
            "bits_per_token": cross_entropy / math.log(2)}

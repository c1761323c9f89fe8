"""Top-k by a FAISS inner-product index instead of scoring every item (``dot`` scorers only).

The index is built once on the driver over the scorer's candidate items (those
with a finite offset) and travels to the Spark tasks as bytes
(``faiss.serialize_index``); each task loads it once and searches a block of
visitors at a time with one thread (Spark runs one task per core).

* ``faiss``: ``IndexFlatIP``, exact (the same lists as the blocked products, ties aside).
* ``faiss-ivf``: ``IndexIVFFlat``: the items are clustered into about ``4 sqrt(n)``
  lists by k-means and a query scans only its ``nprobe`` nearest lists, so it is
  approximate; :func:`recall` measures it against exact lists.

A visitor's own items must not be recommended, so a block asks for ``k`` plus
its largest seen count (at most :data:`MAX_SEEN`) and drops the seen ones; rows
left with fewer than ``k`` items (visitors with more seen items, or an IVF probe
that found too few) are scored exactly with :meth:`Scorer.scores`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["INDEXES", "ItemIndex", "MAX_SEEN", "recall", "search_block"]

INDEXES = ("exact", "faiss", "faiss-ivf")
MAX_SEEN = 100  # visitors with more training items than this are scored exactly


@dataclass(frozen=True)
class ItemIndex:
    """A serialised FAISS index over the candidate items of a ``dot`` scorer (driver -> tasks)."""

    kind: str
    data: np.ndarray  # faiss.serialize_index's bytes (uint8)
    items: np.ndarray  # index row -> item id (int64)
    nprobe: int = 1
    lists: int = 1

    @classmethod
    def build(cls, scorer, kind: str, nprobe: int = 128, lists: int = 0, seed: int = 0) -> ItemIndex:
        """Indexes ``scorer``'s candidate items (driver). ``lists`` 0: about ``4 sqrt(candidates)``."""
        import faiss

        if kind not in INDEXES[1:]:
            raise ValueError(f"an item index is one of {list(INDEXES[1:])}; got {kind!r}.")
        if scorer.kind != "dot":
            raise ValueError(f"a FAISS index needs a dot-product scorer (MF, retrieval, ALS); got kind {scorer.kind!r}.")
        finite = np.isfinite(scorer.item_offset)
        if np.any(scorer.item_offset[finite] != 0):
            raise ValueError("a FAISS index needs item offsets of 0 or -inf (a candidate filter).")
        items = np.flatnonzero(finite).astype(np.int64)
        vectors = np.ascontiguousarray(scorer.item_vectors[items], dtype=np.float32)
        dim = vectors.shape[1]
        if kind == "faiss":
            index, lists = faiss.IndexFlatIP(dim), 1
            index.add(vectors)
        else:
            lists = lists or max(1, min(len(items) // 39, round(4 * math.sqrt(len(items)))))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed
            index.train(vectors)
            index.add(vectors)
        return cls(kind, faiss.serialize_index(index), items, min(nprobe, lists), lists)

    def load(self):
        """The FAISS index (in a task: single-threaded, ``nprobe`` set)."""
        import faiss

        faiss.omp_set_num_threads(1)
        index = faiss.deserialize_index(self.data)
        if self.kind == "faiss-ivf":
            index.nprobe = self.nprobe
        return index


def search_block(index, items: np.ndarray, scorer, vectors: np.ndarray, seen: list, k: int):
    """``(columns, values)`` like :func:`tfos_lib.recsys.ranking.top_k_rows`, the seen items left out.

    ``index``: :meth:`ItemIndex.load`'s; ``items``: its row -> item id; ``seen``: per
    row, the visitor's items (an array or None)."""
    n = len(vectors)
    counts = np.array([0 if s is None else len(s) for s in seen], np.int64)
    extra = int(min(counts.max(initial=0), MAX_SEEN))
    width = min(k + extra, len(items))
    scores, rows = index.search(np.ascontiguousarray(vectors, dtype=np.float32), width)
    found = np.where(rows >= 0, items[np.maximum(rows, 0)], -1)
    # Drop each row's seen items: compare (row, item) codes with the seen pairs' codes.
    seen_rows = np.repeat(np.arange(n), counts)
    seen_items = np.concatenate([np.asarray(s, np.int64) for s in seen if s is not None and len(s)] or [np.zeros(0, np.int64)])
    span = int(max(found.max(initial=0), seen_items.max(initial=0))) + 1
    valid = (found >= 0) & ~np.isin(np.arange(n)[:, None] * span + found, seen_rows * span + seen_items)
    position = np.cumsum(valid, axis=1) - 1
    keep = valid & (position < k)
    columns = np.full((n, k), -1, np.int64)
    values = np.full((n, k), -np.inf, np.float32)
    r, c = np.nonzero(keep)
    columns[r, position[r, c]] = found[r, c]
    values[r, position[r, c]] = scores[r, c]
    # Rows short of k (more seen items than searched, or an IVF probe with too few items): exact scoring.
    short = np.flatnonzero(keep.sum(1) < np.minimum(k, len(items) - counts))
    if len(short):  # few rows: a full sort (ties: lower item first), not ranking.top_k_rows (no import cycle)
        exact = scorer.scores(vectors[short])
        for j, row in enumerate(short):
            if counts[row]:
                exact[j, np.asarray(seen[row], np.int64)] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(exact, order, axis=1)
        width = order.shape[1]
        columns[short, :width] = np.where(np.isfinite(best), order, -1)
        values[short, :width] = best
    return columns, values


def recall(approximate, exact, visitor: str = "visitor", item: str = "item") -> dict:
    """Mean share of each visitor's exact top-k also in its approximate top-k (Spark; visitors in both)."""
    from pyspark.sql import functions as F

    lists = exact.select(visitor, item).groupBy(visitor).agg(F.count(F.lit(1)).alias("exact"))
    both = exact.select(visitor, item).join(approximate.select(visitor, item), [visitor, item])
    per_visitor = lists.join(approximate.select(visitor).distinct(), visitor).join(
        both.groupBy(visitor).agg(F.count(F.lit(1)).alias("found")), visitor, "left")
    row = per_visitor.select((F.coalesce(F.col("found"), F.lit(0)) / F.col("exact")).alias("r")).agg(
        F.count(F.lit(1)).alias("n"), F.avg("r").alias("recall"), F.stddev("r").alias("std")).first()
    n = int(row["n"])
    return {"visitors": n, "recall": float(row["recall"]) if n else None,
            "recall_stderr": float(row["std"]) / math.sqrt(n) if n > 1 and row["std"] is not None else None}

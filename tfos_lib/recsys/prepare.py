"""Preparing implicit-feedback events for recommenders in Spark: dense ids, interactions, a leave-last-out split.

Events are ``(visitor, item, event_code, timestamp)`` rows, ``event_code`` the
strength of the event (for Retailrocket 1 view, 2 add-to-cart, 3 purchase).
Everything here plans Spark work on the driver; nothing collects rows per visitor.

* :func:`dense_index` gives ids 0..n-1 (ordered by id) without a single-partition
  window: embedding tables need contiguous ids, and raw ids rarely are.
* :func:`index_events` replaces raw visitor and item ids by dense ones.
* :func:`interactions` collapses repeated events of one (visitor, item) pair into
  one interaction (its strongest event, count and first/last time).
* :func:`leave_last_out` holds out each visitor's latest items, by time;
  :func:`ranking_split` applies it and picks a seeded sample of held-out visitors
  to evaluate; :func:`split_pairs` does the same for interactions already made
  (the validation split of the training period).
* :func:`recency_weight` weights each training interaction by how recent it is
  in its visitor's history; :func:`with_history` gives each interaction the
  visitor's most recent other items, :func:`visitor_histories` each visitor's most
  recent items (the input of a history-based visitor tower).
"""

from __future__ import annotations

__all__ = [
    "dense_index", "index_events", "interactions", "leave_last_out", "ranking_split", "recency_weight", "split_pairs",
    "visitor_histories", "with_history",
]

# monotonically_increasing_id(): partition index in the upper 31 bits, row position in the lower 33.
_ROW_BITS = 33


def dense_index(df, column: str, index_column: str):
    """Distinct values of ``column`` numbered 0..n-1 in ascending order, as ``(column, index_column)``.

    Sorts with Spark's range partitioning, then numbers rows by per-partition counts
    and offsets, so no step moves all values into one partition. The result is
    cached (it is used twice: counted, then joined).
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    values = df.select(column).distinct().orderBy(column).persist(StorageLevel.MEMORY_AND_DISK)
    counts = dict(values.groupBy(F.spark_partition_id().alias("p")).count().collect())
    offsets, total = [], 0
    for p in range(values.rdd.getNumPartitions()):
        offsets.append(total)
        total += counts.get(p, 0)
    offset = F.element_at(F.array(*[F.lit(o) for o in offsets] or [F.lit(0)]), F.spark_partition_id() + 1)
    index = (offset + F.monotonically_increasing_id().bitwiseAND((1 << _ROW_BITS) - 1)).cast("int")
    indexed = values.select(column, index.alias(index_column)).persist(StorageLevel.MEMORY_AND_DISK)
    indexed.count()
    values.unpersist()
    return indexed


def interactions(events, visitor: str = "visitor", item: str = "item"):
    """One row per (visitor, item): the deduplication policy of the ranking evaluation.

    Repeated events of a pair become one interaction with ``strength`` = its
    strongest event code (1 view, 2 cart, 3 purchase), ``events`` = how many rows,
    ``first_ts`` / ``last_ts``.
    """
    from pyspark.sql import functions as F

    return events.groupBy(visitor, item).agg(
        F.max("event_code").alias("strength"),
        F.count(F.lit(1)).alias("events"),
        F.min("timestamp").alias("first_ts"),
        F.max("timestamp").alias("last_ts"),
    )


def leave_last_out(pairs, holdout_fraction: float, visitor: str = "visitor", item: str = "item"):
    """Adds ``held_out`` (bool): each visitor's latest items (by first interaction) are held out.

    A visitor with n >= 2 distinct items keeps its first ``n - max(1, floor(n *
    holdout_fraction))`` items for training and holds out the rest; a visitor with
    one item is training only. So every held-out visitor also has training items,
    and no (visitor, item) pair is on both sides.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    by_visitor = Window.partitionBy(visitor)
    in_order = by_visitor.orderBy("first_ts", item)
    n = F.count(F.lit(1)).over(by_visitor)
    position = F.row_number().over(in_order)
    held = F.greatest(F.lit(1), F.floor(n * holdout_fraction))
    return pairs.withColumn("held_out", (n >= 2) & (position > n - held))



def index_events(events, visitor_id: str = "visitorid", item_id: str = "itemid"):
    """``(visitor, item, event_code, timestamp)`` with dense ids; returns ``(indexed, num_visitors, num_items)``.

    ``events`` has the raw id columns ``visitor_id`` and ``item_id`` plus ``event_code``
    and ``timestamp``. The result is cached (memory and disk): it feeds every later step.
    """
    from pyspark import StorageLevel

    visitors = dense_index(events, visitor_id, "visitor")
    items = dense_index(events, item_id, "item")
    indexed = (
        events.join(visitors, visitor_id).join(items, item_id)
        .select("visitor", "item", "event_code", "timestamp")
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    return indexed, visitors.count(), items.count()


def ranking_split(indexed, holdout_fraction: float, eval_visitors: int, seed: int) -> dict:
    """The leave-last-out split of :func:`interactions` of ``indexed`` events: :func:`split_pairs`."""
    return split_pairs(interactions(indexed), holdout_fraction, eval_visitors, seed)


def split_pairs(pairs, holdout_fraction: float, eval_visitors: int, seed: int) -> dict:
    """The leave-last-out split of interactions and a seeded sample of visitors to evaluate (all cached).

    Args:
        pairs: one row per (visitor, item): :func:`interactions`' columns (a ``held_out``
            column already there, from an earlier split, is replaced).
        holdout_fraction: share of each visitor's latest items held out (see :func:`leave_last_out`).
        eval_visitors: how many held-out visitors to evaluate (a sample ordered by a
            hash of ``seed`` and the visitor, the same for every model); 0: all of them.
        seed: seeds the sample.

    Returns:
        ``{"pairs": interactions with held_out, "train_pairs": the training interactions (all
        columns), "rank_train": (visitor, item, strength) training interactions, "held_out":
        (visitor, item) held-out items of the evaluated visitors, "eval_visitors": (visitor),
        "seen": (visitor, seen array<int>) each visitor's training items, which
        recommendations leave out}``.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    if "held_out" in pairs.columns:
        pairs = pairs.drop("held_out")
    pairs = leave_last_out(pairs, holdout_fraction).persist(StorageLevel.MEMORY_AND_DISK)
    train_pairs = pairs.filter(~F.col("held_out")).drop("held_out")
    rank_train = train_pairs.select("visitor", "item", "strength")
    held_out = pairs.filter(F.col("held_out")).select("visitor", "item")
    held_visitors = held_out.select("visitor").distinct()
    if eval_visitors:
        held_visitors = held_visitors.orderBy(F.xxhash64(F.lit(seed), "visitor")).limit(eval_visitors)
    evaluated = held_visitors.persist(StorageLevel.MEMORY_AND_DISK)
    return {
        "pairs": pairs,
        "train_pairs": train_pairs,
        "rank_train": rank_train,
        "held_out": held_out.join(evaluated, "visitor"),
        "eval_visitors": evaluated,
        "seen": rank_train.groupBy("visitor").agg(F.collect_list("item").alias("seen")).cache(),
    }


def recency_weight(pairs, half_life_days: float, ts: str = "first_ts", visitor: str = "visitor"):
    """Adds ``weight``: ``0.5 ** (age / half_life)``, age = the visitor's latest ``ts`` minus this pair's.

    A visitor's latest interactions weigh 1 and older ones less (``half_life_days``
    <= 0: every weight is 1). Ages are per visitor, so a visitor active long ago
    still counts fully for what it did last.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if half_life_days <= 0:
        return pairs.withColumn("weight", F.lit(1.0).cast("float"))
    age_days = (F.max(ts).over(Window.partitionBy(visitor)) - F.col(ts)) / 86_400_000.0
    return pairs.withColumn("weight", F.pow(F.lit(0.5), age_days / half_life_days).cast("float"))


def _ordered_items(pairs, visitor: str, item: str, ts: str):
    """``(visitor, items array<int>)``: each visitor's items, oldest first (ties by item)."""
    from pyspark.sql import functions as F

    ordered = F.array_sort(F.collect_list(F.struct(F.col(ts).alias("ts"), F.col(item).alias("item"))))
    return pairs.groupBy(visitor).agg(F.transform(ordered, lambda x: x["item"]).alias("items"))


def _last_padded(items, length: int, pad: int):
    """The last ``length`` of an array column, padded at the end with ``pad`` to exactly ``length``."""
    from pyspark.sql import functions as F

    last = F.slice(items, F.greatest(F.size(items) - length + 1, F.lit(1)), length)
    return F.concat(last, F.array_repeat(F.lit(pad), F.lit(length) - F.size(last))).cast("array<int>")


def with_history(pairs, length: int, pad: int, visitor: str = "visitor", item: str = "item", ts: str = "first_ts"):
    """Adds ``history`` (array<int> of ``length``): the visitor's ``length`` most recent *other* items, ``pad``-filled.

    A training example is then "this history -> this item": the item itself is left
    out of its own history, so the model learns to predict an item from the others.
    """
    from pyspark.sql import functions as F

    others = F.array_remove(F.col("items"), F.col(item))
    return pairs.join(_ordered_items(pairs, visitor, item, ts), visitor).withColumn(
        "history", _last_padded(others, length, pad)).drop("items")


def visitor_histories(pairs, length: int, pad: int, visitor: str = "visitor", item: str = "item", ts: str = "first_ts"):
    """``(visitor, history array<int>)``: each visitor's ``length`` most recent items, ``pad``-filled."""
    from pyspark.sql import functions as F

    return _ordered_items(pairs, visitor, item, ts).select(visitor, _last_padded(F.col("items"), length, pad).alias("history"))

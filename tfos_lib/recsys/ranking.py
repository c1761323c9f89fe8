"""Recommender plumbing in Spark: dense ids, interactions, leave-out splits, top-N scoring and ranking metrics.

Everything here runs on the driver and plans Spark work; nothing collects rows
per visitor. Used by ``jobs/recommend.py`` (book chapter 11) and usable for any
implicit-feedback data of (user, item, time, strength) rows.

* :func:`dense_index` gives ids 0..n-1 (ordered by id) without a single-partition
  window: the book fed raw, non-contiguous item ids to ``Embedding`` layers.
* :func:`interactions` collapses repeated events of one (visitor, item) pair into
  one interaction (its strongest event, count and first/last time).
* :func:`leave_last_out` holds out each visitor's latest items, by time.
* :func:`top_n` scores every candidate item for each visitor block by block in a
  ``mapInPandas`` (factor dot products, or the book's network collapsed to two
  small matrices), drops the visitor's own training items and keeps the best k.
* :func:`ranking_metrics` computes precision@k, recall@k, NDCG@k and hit rate from
  those recommendations and the held-out items, with standard errors.
"""

from __future__ import annotations

import math
import os
import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

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


def idcg_expression(relevant, k: int):
    """Ideal DCG for ``least(relevant, k)`` hits: sum of 1/log2(r + 1) for r = 1..m (a Spark column)."""
    from pyspark.sql import functions as F

    m = F.least(relevant, F.lit(k))
    return F.aggregate(F.sequence(F.lit(1), m), F.lit(0.0), lambda acc, r: acc + 1.0 / F.log2(r + 1.0))


def ranking_metrics(recommendations, held_out, k: int, visitor: str = "visitor", item: str = "item") -> dict:
    """Precision, recall, NDCG and hit rate at ``k``, averaged over the visitors of ``held_out``.

    Args:
        recommendations: ``(visitor, rank, item)`` rows, rank 1 = best; ranks above
            ``k`` are ignored. A visitor missing here scores 0.
        held_out: ``(visitor, item)`` rows: the relevant items (one row per pair).
        k: the cut-off.

    Returns:
        ``{"visitors": n, "precision": ..., "recall": ..., "ndcg": ..., "hit_rate": ...}``
        and ``<metric>_stderr`` (standard error of the mean over visitors).
    """
    from pyspark.sql import functions as F

    relevant = held_out.select(visitor, item).distinct()
    hits = (
        recommendations.filter(F.col("rank") <= k)
        .select(visitor, item, "rank")
        .join(relevant, [visitor, item])
        .groupBy(visitor)
        .agg(F.count(F.lit(1)).alias("hits"), F.sum(1.0 / F.log2(F.col("rank") + 1.0)).alias("dcg"))
    )
    per_visitor = (
        relevant.groupBy(visitor)
        .agg(F.count(F.lit(1)).alias("relevant"))
        .join(hits, visitor, "left")
        .select(
            (F.coalesce("hits", F.lit(0)) / k).alias("precision"),
            (F.coalesce("hits", F.lit(0)) / F.col("relevant")).alias("recall"),
            (F.coalesce("dcg", F.lit(0.0)) / idcg_expression(F.col("relevant"), k)).alias("ndcg"),
            (F.coalesce("hits", F.lit(0)) > 0).cast("double").alias("hit_rate"),
        )
    )
    names = ("precision", "recall", "ndcg", "hit_rate")
    row = per_visitor.agg(
        F.count(F.lit(1)).alias("visitors"),
        *[F.avg(c).alias(c) for c in names],
        *[F.stddev_samp(c).alias(f"{c}_std") for c in names],
    ).first()
    n = row["visitors"]
    result = {"visitors": int(n)}
    for c in names:
        result[c] = float(row[c]) if n else None
        std = row[f"{c}_std"]
        result[f"{c}_stderr"] = float(std) / math.sqrt(n) if n > 1 and std is not None else None
    return result


@dataclass(frozen=True)
class Scorer:
    """How a trained model scores (visitor, item) pairs, in numpy (shipped to Spark tasks).

    Kinds:
        ``dot``: ``visitor_vector . item_vectors[i]`` (matrix factorisation, ALS).
        ``relu_mlp``: ``relu(visitor_vector + item_vectors[i]) . output_weights +
        output_bias``: the book's network, whose first two dense layers are linear
        and so fold into the vectors (see ``jobs/recommend.py``).
        ``constant``: ``item_vectors[i, 0]`` for everyone (popularity).

    ``item_offset`` (added to every score; ``-inf`` removes an item from the
    candidates) keeps items with no training interaction out of every model's list.
    """

    kind: str
    item_vectors: np.ndarray  # (items, d) float32
    item_offset: np.ndarray  # (items,) float32: 0 or -inf
    output_weights: np.ndarray | None = None  # (d,) for relu_mlp
    output_bias: float = 0.0

    def __post_init__(self):
        if self.kind not in ("dot", "relu_mlp", "constant"):
            raise ValueError(f"Scorer kind must be dot, relu_mlp or constant; got {self.kind!r}.")

    def block_size(self, budget_bytes: int = 64 << 20) -> int:
        """Visitors per block so the block's score (and hidden) arrays stay near ``budget_bytes``."""
        width = self.item_vectors.shape[1] if self.kind == "relu_mlp" else 1
        return max(1, budget_bytes // (4 * width * max(1, len(self.item_vectors))))

    def _items_by_column(self) -> np.ndarray:
        # (d, items) contiguous: a 3x faster product than the transposed view, computed once per task.
        cached = self.__dict__.get("_columns")
        if cached is None:
            cached = np.ascontiguousarray(self.item_vectors.T)
            object.__setattr__(self, "_columns", cached)
        return cached

    def global_order(self) -> np.ndarray:
        """Candidate items of a ``constant`` scorer, best first (ties: lower index first)."""
        scores = self.item_vectors[:, 0] + self.item_offset
        order = np.argsort(-scores, kind="stable")
        return order[np.isfinite(scores[order])]

    def scores(self, visitor_vectors: np.ndarray) -> np.ndarray:
        """``(visitors, d)`` -> ``(visitors, items)`` scores, float32."""
        if self.kind == "dot":
            s = visitor_vectors @ self._items_by_column()
        elif self.kind == "constant":
            s = np.broadcast_to(self.item_vectors[:, 0], (len(visitor_vectors), len(self.item_vectors))).copy()
        else:
            hidden = np.maximum(visitor_vectors[:, None, :] + self.item_vectors[None, :, :], 0.0)
            s = hidden @ self.output_weights + self.output_bias
        return (s + self.item_offset).astype(np.float32, copy=False)


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the column indices of the ``k`` largest finite scores (best first) and those scores.

    Exact, and much faster than ``argpartition`` over 235k items per row: the k-th
    largest of an evenly strided sample of the row (about 4,096 columns) is a
    threshold at most the row's k-th largest, so only the few columns at or above
    it are sorted. Ties go to the lower column. Rows with fewer than ``k`` finite
    scores give fewer (padded with -1 / -inf).
    """
    n_rows, n_columns = scores.shape
    k_eff = min(k, n_columns)
    stride = max(1, n_columns // 4096)
    sample = scores[:, ::stride]  # at least k_eff columns, since k_eff <= n_columns
    threshold = np.partition(sample, sample.shape[1] - k_eff, axis=1)[:, sample.shape[1] - k_eff]
    rows, columns = np.nonzero(scores >= threshold[:, None])
    values = scores[rows, columns]
    order = np.lexsort((-values, rows))  # by row, then best first; stable, so ties keep column order
    rows, columns, values = rows[order], columns[order], values[order]
    position = np.arange(len(rows)) - np.searchsorted(rows, np.arange(n_rows))[rows]
    keep = (position < k_eff) & np.isfinite(values)
    top_columns = np.full((n_rows, k_eff), -1, np.int64)
    top_values = np.full((n_rows, k_eff), -np.inf, np.float32)
    top_columns[rows[keep], position[keep]] = columns[keep]
    top_values[rows[keep], position[keep]] = values[keep]
    return top_columns, top_values


def top_n(visitors, scorer: Scorer, k: int, visitor: str = "visitor", item: str = "item"):
    """Each visitor's best ``k`` candidate items, computed in Spark tasks (nothing is collected).

    Args:
        visitors: ``(visitor, vector array<float>, seen array<int>)``: the visitor's
            model vector (ignored by ``constant`` scorers) and the items to leave out
            (its training items).
        scorer: the model (its item side travels to the tasks with the function).
        k: list length.

    Returns:
        A DataFrame ``(visitor int, rank int, item int, score float)``, rank 1 = best.
    """
    import pandas as pd

    block = scorer.block_size()

    def recommend_constant(batches):
        # Everyone's scores are the same: walk the global order, skipping each visitor's seen items.
        order = scorer.global_order()
        values = (scorer.item_vectors[:, 0] + scorer.item_offset)[order]
        for frame in batches:
            out_visitor, out_rank, out_item, out_score = [], [], [], []
            for v, seen in zip(frame[visitor].to_numpy(), frame["seen"].to_numpy()):
                skip = set() if seen is None else set(np.asarray(seen).tolist())
                head = order[: k + len(skip)]
                chosen = [j for j, x in enumerate(head) if x not in skip][:k]
                out_visitor += [v] * len(chosen)
                out_rank += range(1, len(chosen) + 1)
                out_item += head[chosen].tolist()
                out_score += values[chosen].tolist()
            yield pd.DataFrame({visitor: np.asarray(out_visitor, np.int32), "rank": np.asarray(out_rank, np.int32),
                                item: np.asarray(out_item, np.int32), "score": np.asarray(out_score, np.float32)})

    def recommend(batches):
        for frame in batches:
            for start in range(0, len(frame), block):
                part = frame.iloc[start : start + block]
                if scorer.kind == "constant":
                    vectors = np.zeros((len(part), 1), np.float32)
                else:
                    vectors = np.stack(part["vector"].to_numpy()).astype(np.float32)
                scores = scorer.scores(vectors)
                for row, seen in enumerate(part["seen"].to_numpy()):
                    if seen is not None and len(seen):
                        scores[row, np.asarray(seen, dtype=np.int64)] = -np.inf
                columns, values = top_k_rows(scores, k)
                keep = columns >= 0
                ranks = np.broadcast_to(np.arange(1, columns.shape[1] + 1), columns.shape)
                yield pd.DataFrame(
                    {
                        visitor: np.repeat(part[visitor].to_numpy(), columns.shape[1])[keep.ravel()].astype(np.int32),
                        "rank": ranks[keep].astype(np.int32),
                        item: columns[keep].astype(np.int32),
                        "score": values[keep].astype(np.float32),
                    }
                )

    schema = f"{visitor} int, rank int, {item} int, score float"
    return visitors.mapInPandas(recommend_constant if scorer.kind == "constant" else recommend, schema)


def vectors_frame(spark, ids: np.ndarray, vectors: np.ndarray, visitor: str = "visitor"):
    """A DataFrame ``(visitor int, vector array<float>)`` from numpy rows, via Arrow (no per-row Python)."""
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    table = pa.table(
        {
            visitor: pa.array(ids.astype(np.int32)),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
        }
    )
    from pyspark.sql import functions as F

    return spark.createDataFrame(table).select(visitor, F.col("vector").cast("array<float>").alias("vector"))


# ---------------------------------------------------------------------------------------------
# Phase timings and the driver's memory.


def _peak_rss_mb(pid: int | str) -> float | None:
    """VmHWM (peak resident set) of a Linux process, or None where /proc does not have it."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def driver_jvm_pid(spark) -> int | None:
    """The driver JVM's pid: the child pyspark started, or the parent when spark-submit started Python."""
    proc = getattr(spark.sparkContext._gateway, "proc", None)
    if proc is not None:
        return proc.pid
    parent = os.getppid()
    try:
        with open(f"/proc/{parent}/cmdline", "rb") as cmdline:
            return parent if b"java" in cmdline.read() else None
    except OSError:
        return None


@dataclass
class PhaseTimer:
    """Wall time per phase and the driver's peak memory after each (driver side).

    ``python_peak_mb`` is this Python process's peak RSS; ``jvm_peak_mb`` the driver
    JVM's (in local mode the executors live in it too). Spark is lazy, so a phase
    is charged for the Spark work its own actions trigger.
    """

    jvm_pid: int | None = None
    phases: dict[str, dict] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str, log=None):
        started = time.perf_counter()
        if log:
            log.info("phase %s ...", name)
        yield
        seconds = time.perf_counter() - started
        self.phases[name] = {"seconds": round(seconds, 2), **self.memory()}
        if log:
            log.info("phase %s: %.1f s", name, seconds)

    def memory(self) -> dict:
        python = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        jvm = _peak_rss_mb(self.jvm_pid) if self.jvm_pid else None
        return {"python_peak_mb": round(python, 1), "jvm_peak_mb": round(jvm, 1) if jvm else None}

    def summary(self) -> dict:
        total = sum(p["seconds"] for p in self.phases.values())
        dominant = max(self.phases, key=lambda k: self.phases[k]["seconds"]) if self.phases else None
        return {
            "phases": self.phases,
            "total_seconds": round(total, 2),
            "dominant_phase": dominant,
            "driver_peak_memory": self.memory(),
        }


def make_lazy_adam(tf, learning_rate: float):
    """Adam that, for sparse (``IndexedSlices``) gradients, updates only the rows in the batch (worker side).

    Keras' Adam decays both moments and moves *every* row of an embedding table on
    every step, sparse gradient or not: with 1.4M visitors that dense pass dominated
    each step (over 250 ms a step at full size). Here the rows a batch touches get
    exactly Adam's update and the others are left alone until they appear again
    ("lazy" Adam). Dense gradients (the network's dense layers) get Keras' Adam.
    Duplicate indices were already summed by the optimizer (after the cross-worker
    all-gather), so each row is updated once.
    """

    class LazyAdam(tf.keras.optimizers.Adam):
        def update_step(self, gradient, variable):
            if not isinstance(gradient, tf.IndexedSlices):
                return super().update_step(gradient, variable)
            dtype = variable.dtype
            step = tf.cast(self.iterations + 1, dtype)
            beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
            alpha = tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
            key = self._index_dict[self._var_key(variable)]
            m, v = self._momentums[key], self._velocities[key]
            rows, values = gradient.indices, gradient.values
            m_rows = tf.gather(m, rows) * beta_1 + values * (1 - beta_1)
            v_rows = tf.gather(v, rows) * beta_2 + tf.square(values) * (1 - beta_2)
            m.scatter_update(tf.IndexedSlices(m_rows, rows))
            v.scatter_update(tf.IndexedSlices(v_rows, rows))
            variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))

    return LazyAdam(learning_rate=learning_rate)


def plot_comparison(path, ranking: dict[str, dict], mse: dict[str, float], k: int, title: str):
    """Bars of the ranking metrics per model and baseline, and the book's MSE next to the constant baselines."""
    from tfos_lib import report

    fig = report.new_figure((13, 4.5))
    fig.suptitle(title)
    left, right = fig.subplots(1, 2, width_ratios=[2.2, 1])
    metrics = ("precision", "recall", "ndcg", "hit_rate")
    names = list(ranking)
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        values = [ranking[name].get(m) or 0.0 for m in metrics]
        errors = [ranking[name].get(f"{m}_stderr") or 0.0 for m in metrics]
        bars = left.bar(np.arange(len(metrics)) + (i - (len(names) - 1) / 2) * width, values, width, yerr=errors,
                        label=name, capsize=2)
        left.bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)
    left.set_xticks(range(len(metrics)), [f"{m}@{k}" if m != "hit_rate" else f"hit rate@{k}" for m in metrics])
    left.set_ylabel("mean over evaluated visitors (± s.e.)")
    left.set_title("ranking on held-out items (leave-last-out)")
    left.legend(fontsize=8)
    left.grid(axis="y", alpha=0.3)
    labels = list(mse)
    bars = right.bar(range(len(labels)), [mse[x] for x in labels],
                     color=["tab:gray" if "constant" in x else "tab:blue" for x in labels])
    right.bar_label(bars, fmt="%.4f", fontsize=7)
    values = [mse[x] for x in labels if mse[x] and mse[x] > 0]
    if values and max(values) > 10 * min(values):  # an unconverged model would flatten the baselines
        right.set_yscale("log")
    right.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    right.set_ylabel("test MSE on event code")
    right.set_title("book setup: random 80/10/10 rows")
    right.grid(axis="y", alpha=0.3)
    return report.save_figure(fig, path)

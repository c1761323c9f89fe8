"""Ranking with recommender models in Spark: scorers, top-N lists for many visitors, ranking metrics.

Everything here runs on the driver and plans Spark work; nothing collects rows
per visitor. Works for any implicit-feedback data prepared by
:mod:`tfos_lib.recsys.prepare` (dense ``visitor`` and ``item`` ids); used by
``jobs/recommend.py`` (book chapter 11).

* :class:`Scorer` is a trained model in numpy form (factor dot products, the
  book's network collapsed to two small matrices, or a constant popularity score);
  :func:`build_scorers` makes one per model, for the models of
  :mod:`tfos_lib.recsys.models`, Spark's ALS and popularity.
* :func:`top_n` scores every candidate item for each visitor block by block in a
  ``mapInPandas``, drops the visitor's own training items and keeps the best k;
  :func:`recommend_for` runs it for a set of visitors.
* :func:`ranking_metrics` computes precision@k, recall@k, NDCG@k and hit rate from
  those recommendations and the held-out items, with standard errors.
* :class:`PhaseTimer` records wall time and the driver's peak memory per phase.
"""

from __future__ import annotations

import io
import math
import os
import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from tfos_lib import storage


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
        and so fold into the vectors (see :func:`tfos_lib.recsys.models.scorer_arrays`).
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


def top_n(visitors, scorer: Scorer, k: int, visitor: str = "visitor", item: str = "item", index=None):
    """Each visitor's best ``k`` candidate items, computed in Spark tasks (nothing is collected).

    Args:
        visitors: ``(visitor, vector array<float>, seen array<int>)``: the visitor's
            model vector (ignored by ``constant`` scorers) and the items to leave out
            (its training items).
        scorer: the model (its item side travels to the tasks with the function).
        k: list length.
        index: an :class:`tfos_lib.recsys.ann.ItemIndex` of ``scorer`` to search instead
            of scoring every item (loaded once per task), or None.

    Returns:
        A DataFrame ``(visitor int, rank int, item int, score float)``, rank 1 = best.
    """
    import pandas as pd

    block = 4096 if index is not None else scorer.block_size()

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
        from tfos_lib.recsys import ann

        loaded = None if index is None else index.load()
        for frame in batches:
            for start in range(0, len(frame), block):
                part = frame.iloc[start : start + block]
                if scorer.kind == "constant":
                    vectors = np.zeros((len(part), 1), np.float32)
                else:
                    vectors = np.stack(part["vector"].to_numpy()).astype(np.float32)
                if loaded is not None:
                    columns, values = ann.search_block(loaded, index.items, scorer, vectors,
                                                       list(part["seen"].to_numpy()), k)
                else:
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


def history_vectors_frame(histories, context: np.ndarray, visitor: str = "visitor"):
    """``(visitor, vector)`` of a history-based visitor tower, computed in Spark tasks from ``(visitor, history)``.

    ``context`` is the tower's table (:func:`tfos_lib.recsys.models.history_vectors`);
    it travels once per task with the function."""
    import pandas as pd

    from tfos_lib.recsys.models import history_vectors

    def vectors(batches):
        for frame in batches:
            rows = history_vectors(context, np.stack(frame["history"].to_numpy()).astype(np.int64))
            yield pd.DataFrame({visitor: frame[visitor].astype(np.int32), "vector": list(rows)})

    return histories.select(visitor, "history").mapInPandas(vectors, f"{visitor} int, vector array<float>")


def build_scorers(spark, num_items: int, rank_train, trained: dict[str, str], als_model=None,
                  histories=None) -> tuple[dict, dict]:
    """A :class:`Scorer` and the visitor vectors (a DataFrame ``(visitor, vector)``) per model (driver).

    Args:
        num_items: the number of dense item ids.
        rank_train: ``(visitor, item)`` training interactions: popularity counts them, and
            items without any are no model's candidates.
        trained: model name -> ``.npz`` file of :func:`tfos_lib.recsys.models.scorer_arrays`.
        als_model: a fitted ``pyspark.ml.recommendation.ALSModel`` with ``visitor`` and
            ``item`` columns, or None.
        histories: ``(visitor, history)`` (:func:`tfos_lib.recsys.prepare.visitor_histories`)
            for models whose file holds ``context_vectors`` (a history-based visitor tower).

    Returns:
        ``(scorers, vectors)``, both keyed by model name: the names of ``trained``,
        ``"als"`` (with ``als_model``) and ``"popularity"`` (whose vectors are None).
    """
    from pyspark.sql import functions as F

    train_items = rank_train.groupBy("item").agg(F.count(F.lit(1)).alias("visitors"))
    popularity = np.zeros(num_items, np.float32)
    known = train_items.toPandas()
    popularity[known["item"].to_numpy()] = known["visitors"].to_numpy()
    # Items nobody interacted with in training are no model's candidates.
    offset = np.where(popularity > 0, 0.0, -np.inf).astype(np.float32)
    scorers = {"popularity": Scorer("constant", popularity[:, None], offset)}
    vectors = {"popularity": None}
    for kind, factors_file in trained.items():
        arrays = np.load(io.BytesIO(storage.read_bytes(factors_file)))  # a local path or a URI
        scorers[kind] = Scorer(
            str(arrays["kind"]), arrays["item_vectors"].astype(np.float32), offset,
            arrays["output_weights"].astype(np.float32) if "output_weights" in arrays else None,
            float(arrays["output_bias"]) if "output_bias" in arrays else 0.0,
        )
        if "context_vectors" in arrays:
            vectors[kind] = history_vectors_frame(histories, arrays["context_vectors"].astype(np.float32))
        else:
            table = arrays["visitor_vectors"]
            vectors[kind] = vectors_frame(spark, np.arange(len(table)), table)
    if als_model is not None:
        item_factors = als_model.itemFactors.toPandas()
        matrix = np.zeros((num_items, als_model.rank), np.float32)
        matrix[item_factors["id"].to_numpy()] = np.stack(item_factors["features"].to_numpy())
        scorers["als"] = Scorer("dot", matrix, offset)
        vectors["als"] = als_model.userFactors.select(
            F.col("id").alias("visitor"), F.col("features").cast("array<float>").alias("vector"))
    return scorers, vectors


def recommend_for(visitors, seen, vectors, scorer: Scorer, k: int, num_visitors: int, index=None):
    """Top-k for ``visitors`` (a DataFrame with ``visitor``), their training items excluded (Spark).

    Args:
        visitors: ``(visitor)`` rows to recommend for.
        seen: ``(visitor, seen array<int>)``: each visitor's training items, never recommended.
        vectors: ``(visitor, vector)`` of the model (:func:`build_scorers`), or None for a
            ``constant`` scorer.
        scorer: the model.
        k: list length.
        num_visitors: about how many visitors ``visitors`` holds (sizes the tasks).
        index: an :class:`tfos_lib.recsys.ann.ItemIndex` for :func:`top_n`, or None (exact products).

    Returns:
        :func:`top_n`'s ``(visitor, rank, item, score)`` DataFrame.
    """
    from pyspark.sql import functions as F

    frame = visitors.join(seen, "visitor", "left")
    if vectors is not None:
        frame = frame.join(vectors, "visitor")
    else:
        frame = frame.withColumn("vector", F.array().cast("array<float>"))
    # Scoring is the heavy part: spread it over enough tasks (about 20,000 visitors each, at least one per core).
    spark = visitors.sparkSession
    partitions = max(spark.sparkContext.defaultParallelism, -(-num_visitors // 20_000))
    return top_n(frame.select("visitor", "vector", "seen").repartition(partitions, "visitor"), scorer, k, index=index)


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

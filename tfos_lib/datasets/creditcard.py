"""Kaggle's credit-card transactions (``creditcard.csv``): reading them into Spark, checking them, generating them.

The format (Dal Pozzolo et al., "mlg-ulb/creditcardfraud"; 284,807 rows, 492 frauds)::

    "Time","V1","V2",...,"V28","Amount","Class"
    0,-1.3598071336738,-0.0727811733098497,...,-0.0210530534538215,149.62,"0"

``Time`` is seconds since the first transaction (two days), ``V1``..``V28`` are
PCA components, ``Amount`` is in euros and ``Class`` is ``"1"`` for a fraud.

:func:`read_transactions` reads it with an explicit schema and refuses a wrong
header (missing, extra or reordered columns), values that are not finite numbers
and classes other than 0/1, naming the line. Exact duplicate rows (the real file
has 1,081) are counted and dropped, the first copy kept: a copy on each side of a
train/test split would leak.

:func:`write_default_data` writes a synthetic file in the same format at the real
size, so the job runs offline (see its docstring for how it is made).
"""

from __future__ import annotations

import csv
import math
import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "COLUMNS",
    "CREDITCARD_FILE",
    "FEATURES",
    "CreditCardDataError",
    "find_creditcard_file",
    "generate_transactions",
    "read_transactions",
    "write_creditcard_csv",
    "write_default_data",
]

CREDITCARD_FILE = "creditcard.csv"
COMPONENTS = tuple(f"V{i}" for i in range(1, 29))
COLUMNS = ("Time", *COMPONENTS, "Amount", "Class")
#: The columns a model sees (the book drops ``Time``).
FEATURES = (*COMPONENTS, "Amount")
_MAX_PROBLEMS = 10
_EXPECTED = f"Kaggle's creditcard.csv: the quoted header {','.join(repr(c) for c in COLUMNS[:2])},...,'Class' and " \
    "31 numbers per line, Class 0 or 1"


class CreditCardDataError(ValueError):
    """The transactions file is malformed; the message names the line and what was expected."""


def find_creditcard_file(data_dir: str) -> str:
    """``data_dir/creditcard.csv`` (or ``data_dir`` itself when it is a file)."""
    from tfos_lib.datasets.files import find_data_file

    return find_data_file(
        data_dir, CREDITCARD_FILE, _EXPECTED,
        "Download it from https://www.kaggle.com/mlg-ulb/creditcardfraud and unzip it there, or omit --data-dir "
        "to use the generated default data.",
    )


def read_transactions(spark: SparkSession, path: str) -> tuple[DataFrame, dict]:
    """Reads and checks the file. Runs on the driver; the work is Spark's.

    Returns:
        ``(rows, counts)``: a cached DataFrame ``row long`` (file order), ``Time``,
        ``V1``..``V28``, ``Amount`` (doubles) and ``Class`` (int), without duplicate
        rows; ``counts`` has ``rows_read``, ``duplicates_dropped``, ``rows`` and ``frauds``.

    Raises:
        CreditCardDataError: an empty file, a header other than Kaggle's, or lines
            with missing, non-numeric or non-finite values or a class other than 0/1
            (the first ones listed with their line numbers).
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    name = os.path.basename(path)
    first = spark.read.text(path).first()
    if first is None:
        raise CreditCardDataError(f"{name} is empty; expected {_EXPECTED}.")
    header = [c.strip() for c in next(csv.reader([first.value]))]
    if header != list(COLUMNS):
        missing = [c for c in COLUMNS if c not in header]
        extra = [c for c in header if c not in COLUMNS]
        found = f"missing {missing}" if missing else ""
        found += (", " if found and extra else "") + (f"extra {extra}" if extra else "")
        raise CreditCardDataError(
            f"{name}, line 1 (the header): {found or 'the columns are out of order'}; found {len(header)} columns "
            f"{header[:4]}...{header[-2:]}. Expected {len(COLUMNS)} columns in Kaggle's order: Time, V1..V28, "
            "Amount, Class."
        )
    schema = T.StructType([T.StructField(c, T.DoubleType()) for c in COLUMNS]
                          + [T.StructField("_corrupt", T.StringType())])
    raw = (
        spark.read.csv(path, schema=schema, header=True, mode="PERMISSIVE", columnNameOfCorruptRecord="_corrupt")
        .withColumn("row", F.monotonically_increasing_id())  # grows with the line order of the file
        .cache()
    )
    try:
        not_finite = F.array_compact(F.array(*[
            F.when(F.col(c).isNull() | F.isnan(c) | (F.abs(c) == math.inf), F.lit(c)) for c in COLUMNS
        ]))
        problem = (
            F.when(F.col("_corrupt").isNotNull(),
                   F.format_string("is not 31 numbers: '%s'", F.substring("_corrupt", 1, 120)))
            .when(F.size(not_finite) > 0,
                  F.format_string("has no finite number in %s", F.array_join(not_finite, ", ")))
            .when(~F.col("Class").isin(0.0, 1.0), F.format_string("has Class %s; expected \"0\" or \"1\"", "Class"))
        )
        problems = raw.select("row", problem.alias("problem")).where(F.col("problem").isNotNull())
        count = problems.count()
        if count:
            first_ones = problems.orderBy("row").limit(_MAX_PROBLEMS).collect()
            # Line numbers of the listed rows only: line = 2 + rows before it (one small job on the cached rows).
            before = raw.select(*[F.sum((F.col("row") < p.row).cast("long")) for p in first_ones]).first()
            listed = "\n".join(f"  line {2 + before[i]}: {p.problem}" for i, p in enumerate(first_ones))
            raise CreditCardDataError(
                f"{name}: {count} line(s) are not valid transactions. Expected {_EXPECTED}; fix or remove "
                f"them. The first ones:\n{listed}"
            )
        rows_read = raw.count()
        rows = (
            raw.groupBy(*COLUMNS).agg(F.min("row").alias("row"))  # exact duplicates: keep the first copy
            .select("row", *[F.col(c) for c in COLUMNS[:-1]], F.col("Class").cast("int").alias("Class"))
            # As many partitions as the file was read in (not spark.sql.shuffle.partitions' 200 tiny ones).
            .coalesce(max(raw.rdd.getNumPartitions(), spark.sparkContext.defaultParallelism))
            .cache()
        )
        totals = rows.agg(F.count(F.lit(1)).alias("rows"), F.sum("Class").alias("frauds")).first()
    finally:
        raw.unpersist()
    if not totals["rows"]:
        raise CreditCardDataError(f"{name} has a header but no transactions; expected {_EXPECTED}.")
    counts = {"rows_read": rows_read, "duplicates_dropped": rows_read - totals["rows"], "rows": totals["rows"],
              "frauds": int(totals["frauds"])}
    return rows, counts


# ---------------------------------------------------------------------------------------------
# Writing, and the offline default data.

#: (share of normal transactions, log-amount mean, log-amount sd): everyday shopping, groceries,
#: online subscriptions, travel and large purchases, cash-like small payments.
BEHAVIOURS = ((0.38, 3.0, 1.0), (0.24, 3.8, 0.8), (0.16, 2.4, 0.6), (0.14, 5.0, 1.1), (0.08, 1.2, 0.9))
#: Components (0-based, V1 = 0) a fraud moves, and by how many of that component's standard deviations.
FRAUD_SHIFTS = {13: -5.0, 11: -4.0, 9: -3.5, 16: -4.0, 3: 2.5, 10: 2.5, 2: -2.0}


def generate_transactions(rows: int = 284_807, frauds: int = 492, duplicates: int = 1_081, seed: int = 0):
    """Synthetic transactions with Kaggle's columns, ordered by ``Time``. Returns a float64 array ``(rows, 31)``.

    Normal transactions come from a mixture of behaviours (:data:`BEHAVIOURS`), each
    with its own centre and correlations in the 28 components, heavy tails (Student t)
    and its own amounts; component scales fall from V1 to V28 as PCA's do. Frauds
    move a few components (:data:`FRAUD_SHIFTS`) by a random fraction and spend
    small test amounts or large ones; about 15% barely move and look normal. Times
    follow a day/night cycle over two days (frauds less so). ``duplicates`` rows are
    exact copies of others, as in the real file.
    """
    rng = np.random.default_rng(seed)
    dup_frauds = min(frauds // 2, round(duplicates * frauds / rows))
    unique = rows - duplicates
    n_fraud, n_normal = frauds - dup_frauds, unique - (frauds - dup_frauds)
    if n_normal <= 0 or n_fraud <= 0 or duplicates < 0:
        raise ValueError(f"cannot make {rows} rows with {frauds} frauds and {duplicates} duplicates.")
    scale = np.linspace(2.0, 0.35, 28)
    shares = np.array([b[0] for b in BEHAVIOURS])
    centres = rng.normal(0, 0.9, (len(BEHAVIOURS), 28)) * scale
    mixing = [np.linalg.qr(rng.normal(size=(28, 28)))[0] * rng.uniform(0.4, 0.8, 28) for _ in BEHAVIOURS]

    def draw(n, kinds):
        t = rng.standard_t(6, (n, 28))
        x = np.empty((n, 28))
        for k, q in enumerate(mixing):
            chosen = kinds == k
            x[chosen] = centres[k] + (t[chosen] @ q) * scale
        log_amount = np.array([BEHAVIOURS[k][1] for k in kinds]) + rng.normal(size=n) * [BEHAVIOURS[k][2] for k in kinds]
        x[:, 1] -= 0.35 * (log_amount - 3.2)  # V2 falls with the amount, as in the real data
        return x, np.round(np.exp(log_amount), 2)

    normal_kinds = rng.choice(len(BEHAVIOURS), n_normal, p=shares / shares.sum())
    x_normal, amount_normal = draw(n_normal, normal_kinds)
    amount_normal[rng.random(n_normal) < 0.006] = 0.0  # card checks of 0.00
    x_fraud, _ = draw(n_fraud, rng.choice(len(BEHAVIOURS), n_fraud, p=shares / shares.sum()))
    strength = np.where(rng.random(n_fraud) < 0.15, rng.uniform(0.0, 0.2, n_fraud), rng.uniform(0.4, 1.6, n_fraud))
    for component, shift in FRAUD_SHIFTS.items():
        x_fraud[:, component] += strength * shift * scale[component] * rng.uniform(0.6, 1.4, n_fraud)
    amount_fraud = np.where(rng.random(n_fraud) < 0.6, np.round(rng.uniform(0.5, 10, n_fraud), 2),
                            np.round(rng.lognormal(5.2, 1.0, n_fraud), 2))
    amount_fraud[rng.random(n_fraud) < 0.1] = 1.0
    seconds = np.arange(172_800)
    day_night = 0.15 + (1 - np.cos(2 * np.pi * (seconds / 86_400 - 0.3))) / 2  # quiet around 04:00
    time_normal = rng.choice(seconds, n_normal, p=day_night / day_night.sum())
    flatter = np.sqrt(day_night)
    time_fraud = rng.choice(seconds, n_fraud, p=flatter / flatter.sum())
    table = np.column_stack([
        np.concatenate([time_normal, time_fraud]),
        np.concatenate([x_normal, x_fraud]),
        np.concatenate([amount_normal, amount_fraud]),
        np.concatenate([np.zeros(n_normal), np.ones(n_fraud)]),
    ])
    copies = np.concatenate([rng.choice(n_normal, duplicates - dup_frauds, replace=False),
                             n_normal + rng.choice(n_fraud, dup_frauds, replace=False)])
    table = np.concatenate([table, table[copies]])
    return table[np.argsort(table[:, 0], kind="stable")]


def write_creditcard_csv(path: str, table: np.ndarray) -> str:
    """Writes ``table`` (31 columns in :data:`COLUMNS` order) as Kaggle does: quoted header and class."""
    if table.ndim != 2 or table.shape[1] != len(COLUMNS):
        raise ValueError(f"write_creditcard_csv: expected {len(COLUMNS)} columns, got shape {table.shape}.")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    header = ",".join(f'"{c}"' for c in COLUMNS)
    np.savetxt(path, table, fmt=["%d"] + ["%.9g"] * 28 + ["%.2f", '"%d"'], delimiter=",", header=header,
               comments="")
    return path


def write_default_data(directory: str, seed: int = 0, **sizes) -> str:
    """Writes ``directory/creditcard.csv`` from :func:`generate_transactions`; returns its path."""
    return write_creditcard_csv(os.path.join(directory, CREDITCARD_FILE), generate_transactions(seed=seed, **sizes))

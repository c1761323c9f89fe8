"""Kaggle's Kepler labelled light curves (``exoTrain.csv``, ``exoTest.csv``): a validating Spark reader and a generator.

Format (Kaggle ``keplersmachines/kepler-labelled-time-series-data``): a header
``LABEL,FLUX.1,...,FLUX.3197`` and one star per line; ``LABEL`` is 2 for a
confirmed planet host and 1 otherwise; the 3,197 fluxes are Kepler long-cadence
(29.4 min) photometry of campaign 3, about 65 days. The real files have 5,087
(37 hosts) and 570 (5 hosts) rows, hosts first.

:func:`read_split` reads one file with Spark and an explicit schema and refuses
bad input with the file, the line and the fix. :func:`write_default_data` writes
synthetic files of the same format, sizes and positive counts (red-noise
variability, slow oscillations, flares, outliers, white noise; hosts get
periodic box-shaped transits, some near the noise level).
"""

from __future__ import annotations

import os

import numpy as np

NUM_FLUX = 3197
#: Kepler's long cadence in days (29.4 min).
CADENCE_DAYS = 0.020434
FLUX_COLUMNS = [f"FLUX.{i}" for i in range(1, NUM_FLUX + 1)]
HEADER = ["LABEL", *FLUX_COLUMNS]
FILES = {"train": "exoTrain.csv", "test": "exoTest.csv"}
#: The real files' sizes: (stars, planet hosts).
REAL_SIZES = {"train": (5087, 37), "test": (570, 5)}

__all__ = ["FILES", "HEADER", "NUM_FLUX", "read_split", "simulate_stars", "write_csv", "write_default_data"]

_FIX = "Give the files from Kaggle's keplersmachines/kepler-labelled-time-series-data unchanged, or omit --data-dir."


def _schema(num_flux: int, corrupt: bool = True):
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    fields = [StructField("LABEL", DoubleType()), *(StructField(f"FLUX_{i}", DoubleType()) for i in range(1, num_flux + 1))]
    return StructType(fields + ([StructField("_corrupt", StringType())] if corrupt else []))


def read_split(spark, path: str, *, num_flux: int = NUM_FLUX, require_positives: bool = True):
    """Reads one Kepler CSV with Spark (explicit schema, nothing inferred) and checks every row.

    Returns a DataFrame ``star long`` (an id increasing in file order), ``label int`` (1 =
    planet host, 0 = not: the file's LABEL - 1) and ``flux array<double>``.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: wrong or missing header columns; a row with the wrong field count or
            a non-numeric, empty or non-finite flux; a LABEL other than 1 or 2; no planet
            host (when ``require_positives``). Each names the file and the line.
    """
    from pyspark.sql import functions as F

    if "://" not in path and not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (expected a Kepler light-curve CSV). {_FIX}")
    expected = ["LABEL", *(f"FLUX.{i}" for i in range(1, num_flux + 1))]
    first = spark.read.text(path).first()
    header = first[0].strip().split(",") if first else []
    if header != expected:
        missing = [c for c in expected if c not in header][:5]
        extra = [c for c in header if c not in expected][:5]
        raise ValueError(
            f"{path}, line 1: the header must be LABEL,FLUX.1,...,FLUX.{num_flux} ({len(expected)} columns); found "
            f"{len(header)} columns (missing {missing}, unexpected {extra}, first {header[:3]}). {_FIX}"
        )
    raw = spark.read.csv(path, header=True, schema=_schema(num_flux), mode="PERMISSIVE",
                         columnNameOfCorruptRecord="_corrupt", enforceSchema=True)
    flux = F.array(*[F.col(f"FLUX_{i}") for i in range(1, num_flux + 1)])
    rows = raw.select(F.monotonically_increasing_id().alias("_id"), "LABEL", flux.alias("flux"), "_corrupt")
    bad_flux = F.exists("flux", lambda v: v.isNull() | F.isnan(v) | (F.abs(v) == float("inf")))
    checked = rows.select(
        "*",
        F.when(F.col("_corrupt").isNotNull(), F.lit("a wrong field count or a non-numeric value"))
        .when(F.col("LABEL").isNull() | bad_flux, F.lit("an empty, non-numeric or non-finite value"))
        .when(~F.col("LABEL").isin(1.0, 2.0), F.concat(F.lit("LABEL "), F.col("LABEL").cast("string"),
                                                      F.lit(" (expected 1 = no planet or 2 = planet host)")))
        .alias("_problem"),
    ).cache()
    problem = checked.where(F.col("_problem").isNotNull()).orderBy("_id").select("_problem", "LABEL", "flux").first()
    if problem is not None:
        checked.unpersist()
        line = _find_line(spark, path, problem, num_flux)
        raise ValueError(f"{path}, line {line}: {problem['_problem']}; every line needs LABEL (1 or 2) and "
                         f"{num_flux} finite numbers, comma-separated. Fix or remove that line. {_FIX}")
    stars = checked.select(F.col("_id").alias("star"), (F.col("LABEL") - 1).cast("int").alias("label"), "flux")
    counts = stars.groupBy().agg(F.count("*").alias("n"), F.sum("label").alias("pos")).first()
    checked.unpersist()
    if counts["n"] == 0:
        raise ValueError(f"{path}: no stars after the header. {_FIX}")
    if require_positives and not counts["pos"]:
        raise ValueError(f"{path}: none of its {counts['n']} stars is a planet host (LABEL 2); a split needs at "
                         f"least one to train or evaluate a detector. {_FIX}")
    return stars


def _find_line(spark, path: str, problem, num_flux: int) -> str:
    """The 1-based line of the first bad row (error path only: scans the file's text once)."""
    from pyspark.sql import functions as F

    lines = spark.read.text(path).select(F.monotonically_increasing_id().alias("i"), "value")
    for i, (_, value) in enumerate(lines.orderBy("i").toLocalIterator(), start=1):
        if i == 1:
            continue
        fields = value.split(",")
        try:
            numbers = np.array(fields, dtype=float)
        except ValueError:
            return str(i)
        if len(fields) != num_flux + 1 or not np.isfinite(numbers).all() or numbers[0] not in (1.0, 2.0):
            return str(i)
    return "?"


# ---------------------------------------------------------------------------------------------
# The offline default: synthetic light curves in the same format.


def simulate_stars(rng: np.random.Generator, num_stars: int, num_hosts: int, num_flux: int = NUM_FLUX):
    """``(labels, flux, transits)``: ``num_stars`` light curves, the first ``num_hosts`` with planets.

    ``transits`` lists ``(period_days, duration_days, depth, epoch_days)`` per host.
    """
    from scipy.signal import lfilter

    t = np.arange(num_flux) * CADENCE_DAYS
    flux = np.empty((num_stars, num_flux), np.float64)
    transits = []
    for s in range(num_stars):
        sigma = 10 ** rng.uniform(0.7, 2.5)  # white noise: 5 .. 300 e-/s, like Kepler's fluxes
        curve = sigma * rng.standard_normal(num_flux)
        # Red noise (granulation, spots): AR(1) with a correlation time of hours to days.
        phi = np.exp(-CADENCE_DAYS / rng.uniform(0.1, 2.0))
        curve += lfilter([1.0], [1.0, -phi], sigma * rng.uniform(0.02, 0.25) * rng.standard_normal(num_flux))
        for _ in range(rng.integers(0, 3)):  # rotation and pulsation: slow oscillations
            curve += sigma * 10 ** rng.uniform(-0.5, 1.0) * np.sin(2 * np.pi * t / rng.uniform(3, 40) + rng.uniform(0, 6.3))
        curve += sigma * rng.normal(0, 3) * (t / t[-1]) + sigma * rng.normal(0, 2) * (t / t[-1]) ** 2  # drift
        for _ in range(rng.poisson(1.0)):  # flares: fast rise, exponential decay
            start, tau = rng.integers(0, num_flux), rng.uniform(1, 8)
            tail = np.arange(num_flux - start)
            curve[start:] += sigma * rng.uniform(5, 60) * np.exp(-tail / tau)
        bad = rng.integers(0, num_flux, rng.poisson(2))  # cosmic rays, momentum dumps
        curve[bad] += sigma * rng.uniform(5, 30, len(bad)) * rng.choice([-1, 1], len(bad))
        if s < num_hosts:
            period = 10 ** rng.uniform(np.log10(0.7), np.log10(16.0))
            duration = min(rng.uniform(1.5, 12) / 24, 0.12 * period)
            in_transit_points = t[-1] / period * duration / CADENCE_DAYS
            snr = 10 ** rng.uniform(np.log10(7), np.log10(60))  # some hosts near the detection limit
            depth = snr * sigma / np.sqrt(max(in_transit_points, 1.0))
            epoch = rng.uniform(0, period)
            curve -= depth * (np.abs((t - epoch + period / 2) % period - period / 2) < duration / 2)
            transits.append((period, duration, depth, epoch))
        flux[s] = curve + sigma * rng.normal(0, 3)  # the files hold fluxes around an arbitrary zero
    labels = (np.arange(num_stars) < num_hosts).astype(np.int64)
    return labels, flux, transits


def write_csv(path: str, labels: np.ndarray, flux: np.ndarray) -> str:
    """Writes ``labels`` (1 = host) and ``flux`` in Kaggle's format: LABEL 2/1, fluxes with 2 decimals."""
    import pandas as pd

    frame = pd.DataFrame(np.round(flux, 2), columns=[f"FLUX.{i}" for i in range(1, flux.shape[1] + 1)])
    frame.insert(0, "LABEL", np.where(labels == 1, 2, 1))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    frame.to_csv(path, index=False, float_format="%.2f")
    return path


def write_default_data(directory: str, *, seed: int = 0, sizes: dict | None = None, num_flux: int = NUM_FLUX) -> dict:
    """Writes ``exoTrain.csv`` and ``exoTest.csv`` under ``directory`` (kept when already there); returns their paths.

    ``sizes``: split -> (stars, hosts); default :data:`REAL_SIZES`.
    """
    sizes = sizes or REAL_SIZES
    paths = {}
    for offset, (split, (num_stars, num_hosts)) in enumerate(sorted(sizes.items())):
        path = os.path.join(directory, FILES[split])
        marker = f"{path}.{seed}-{num_stars}-{num_hosts}-{num_flux}.ok"
        if not os.path.exists(marker):
            rng = np.random.default_rng([seed, offset])
            labels, flux, _ = simulate_stars(rng, num_stars, num_hosts, num_flux)
            write_csv(path, labels, flux)
            open(marker, "w").close()
        paths[split] = path
    return paths

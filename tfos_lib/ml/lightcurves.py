"""Light-curve features a planet hunter uses, per star, vectorised in Spark executors (mapInPandas over Arrow batches).

Per star: robust normalisation (median, MAD), detrending by a running median,
a 3-point median against single-point outliers, clipping of upward outliers (flares) and extreme dips; then

* ``fft``: the periodogram of the detrended curve (``|rfft|``), averaged over
  log-spaced frequency bands;
* ``bls``: a box-least-squares transit search (astropy's ``BoxLeastSquares``) over
  periods from 0.5 days to a third of the baseline: best period, duration, depth,
  depth SNR, the signal detection efficiency (SDE) of its peak, and the transit count;
* a few robust statistics of the detrended curve.

``raw`` keeps the book's route: the 3,197 fluxes as they are.
The functions on arrays are pure (no Spark); :func:`add_features` maps them over a DataFrame.
"""

from __future__ import annotations

import numpy as np

from tfos_lib.datasets.kepler import CADENCE_DAYS

FEATURE_SETS = ("transit", "fft", "raw")
BLS_NAMES = ["bls_period", "bls_duration", "bls_depth", "bls_depth_snr", "bls_sde", "bls_transits"]
STAT_NAMES = ["std", "skew", "min", "frac_below_3", "mad_raw"]
DURATIONS_DAYS = np.array([0.04, 0.08, 0.13, 0.2, 0.3])


def detrend(flux: np.ndarray, window: int = 25, clip: tuple[float, float] = (-20.0, 3.0)):
    """``(normalised, detrended)``: flux in units of its MAD around its median, and that minus a running median.

    ``window`` (25 cadences, about 12 hours) keeps transits up to about 6 hours whole and
    removes most stellar variability slower than that.

    ``detrended`` is re-scaled to unit MAD and clipped to ``clip`` (upward outliers are
    flares and cosmic rays; a transit only dims the star).
    """
    from scipy.ndimage import median_filter

    flux = np.asarray(flux, np.float64)
    normalised = (flux - np.median(flux)) / _mad(flux)
    residual = normalised - median_filter(normalised, size=window, mode="nearest")
    residual = median_filter(residual, size=3, mode="nearest")  # single-point spikes and dips: not transits
    residual = residual / _mad(residual)
    return normalised, np.clip(residual, *clip)


def _mad(x: np.ndarray) -> float:
    mad = 1.4826 * np.median(np.abs(x - np.median(x)))
    return float(mad) if mad > 0 else float(np.std(x)) or 1.0


def fft_bands(detrended: np.ndarray, num_bands: int) -> np.ndarray:
    """Mean ``|rfft|`` (scaled by 1/sqrt(n)) of the DC-free curve in ``num_bands`` log-spaced frequency bands."""
    magnitude = np.abs(np.fft.rfft(detrended - detrended.mean()))[1:] / np.sqrt(len(detrended))
    # Band i holds rfft bins edges[i] .. edges[i+1] - 1 (bin 0, the mean, is dropped).
    edges = np.unique(np.geomspace(1, len(magnitude) + 1, num_bands + 1).astype(int))
    bands = np.array([magnitude[a - 1:b - 1].mean() for a, b in zip(edges[:-1], edges[1:])])
    return np.pad(bands, (0, num_bands - len(bands)))  # fewer bands only when there are fewer bins than bands


def period_grid(num_points: int, num_periods: int = 2500, minimum: float = 0.5) -> np.ndarray:
    """Trial periods (days), uniform in frequency, from ``minimum`` to a third of the baseline (>= 3 transits)."""
    baseline = num_points * CADENCE_DAYS
    return 1.0 / np.linspace(3.0 / baseline, 1.0 / minimum, num_periods)


def bls_search(detrended: np.ndarray, periods: np.ndarray | None = None) -> dict:
    """The strongest box-shaped dip: its period, duration, depth (in MADs), depth SNR, SDE and transit count."""
    from astropy.timeseries import BoxLeastSquares

    t = np.arange(len(detrended)) * CADENCE_DAYS
    periods = period_grid(len(detrended)) if periods is None else periods
    durations = DURATIONS_DAYS[DURATIONS_DAYS < periods.min()]
    result = BoxLeastSquares(t, detrended).power(periods, durations, objective="snr")
    power = np.nan_to_num(np.asarray(result.power, np.float64))
    best = int(np.argmax(power))
    spread = power.std()
    return {
        "bls_period": float(result.period[best]),
        "bls_duration": float(result.duration[best]),
        "bls_depth": float(result.depth[best]),
        "bls_depth_snr": float(result.depth_snr[best]),
        "bls_sde": float((power[best] - power.mean()) / spread) if spread > 0 else 0.0,
        "bls_transits": float(len(t) * CADENCE_DAYS / result.period[best]),
        "bls_epoch": float(result.transit_time[best]),
    }


def statistics(flux: np.ndarray, detrended: np.ndarray) -> list[float]:
    """Robust statistics in :data:`STAT_NAMES` order."""
    centred = detrended - detrended.mean()
    std = centred.std() or 1.0
    return [float(std), float(np.mean(centred**3) / std**3), float(detrended.min()),
            float(np.mean(detrended < -3)), float(np.log10(_mad(np.asarray(flux, np.float64))))]


def feature_names(features: str, fft_bins: int, num_flux: int) -> list[str]:
    """The columns :func:`star_features` returns for ``features`` (one of :data:`FEATURE_SETS`)."""
    if features == "raw":
        return [f"flux_{i}" for i in range(1, num_flux + 1)]
    fft = [f"fft_{i}" for i in range(fft_bins)]
    return STAT_NAMES + fft + (BLS_NAMES if features == "transit" else [])


def star_features(flux: np.ndarray, features: str, fft_bins: int, periods: np.ndarray | None = None) -> np.ndarray:
    """One star's feature vector in :func:`feature_names` order."""
    if features == "raw":
        return np.asarray(flux, np.float64)
    _, detrended = detrend(flux)
    values = statistics(flux, detrended) + list(fft_bands(detrended, fft_bins))
    if features == "transit":
        found = bls_search(detrended, periods)
        values += [found[name] for name in BLS_NAMES]
    return np.array(values, np.float64)


def add_features(stars, features: str, fft_bins: int, num_flux: int, partitions: int | None = None):
    """``stars`` (``star``, ``label``, ``flux``) plus ``features array<double>``, computed in the executors.

    ``mapInPandas`` over Arrow batches: each batch's stars are processed with numpy,
    never row by row through the JVM. ``partitions``: spread the stars over this many
    tasks first (the transit search is the expensive part).
    """
    from pyspark.sql.types import ArrayType, DoubleType, StructField, StructType

    periods = period_grid(num_flux)
    schema = StructType(stars.schema.fields + [StructField("features", ArrayType(DoubleType()))])

    def compute(frames):
        for frame in frames:
            yield frame.assign(features=[star_features(np.asarray(f), features, fft_bins, periods) for f in frame.flux])

    if partitions:
        stars = stars.repartition(partitions)
    return stars.mapInPandas(compute, schema)

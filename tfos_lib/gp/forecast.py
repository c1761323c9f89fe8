"""Scoring and plotting probabilistic forecasts: point errors, interval coverage, Gaussian NLPD.

Pure numpy and matplotlib; runs on the driver. A forecast is a Gaussian per time
step (``mean``, ``sd``); its central 95% band is ``mean +- 1.96 sd``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tfos_lib import report

__all__ = ["Z_95", "band", "coverage", "gaussian_nlpd", "plot_forecast", "point_errors"]

#: The standard normal's 97.5% quantile: mean +- Z_95 * sd holds 95% of a Gaussian.
Z_95 = 1.959963984540054


def _pair(truth, prediction) -> tuple[np.ndarray, np.ndarray]:
    truth, prediction = np.asarray(truth, float), np.asarray(prediction, float)
    if truth.shape != prediction.shape or truth.size == 0:
        raise ValueError(f"need equal, non-empty shapes; got truth {truth.shape} and prediction {prediction.shape}.")
    return truth, prediction


def point_errors(truth: Sequence[float], prediction: Sequence[float]) -> dict[str, float]:
    """Root mean squared and mean absolute error, in the units of the data."""
    truth, prediction = _pair(truth, prediction)
    error = prediction - truth
    return {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}


def band(mean: Sequence[float], sd: Sequence[float], z: float = Z_95) -> tuple[np.ndarray, np.ndarray]:
    """The central interval ``mean +- z * sd`` (95% by default)."""
    mean, sd = np.asarray(mean, float), np.asarray(sd, float)
    return mean - z * sd, mean + z * sd


def coverage(truth: Sequence[float], lower: Sequence[float], upper: Sequence[float]) -> float:
    """Fraction of true values inside ``[lower, upper]`` (a calibrated 95% band gives about 0.95)."""
    truth, lower = _pair(truth, lower)
    upper = np.asarray(upper, float)
    return float(np.mean((truth >= lower) & (truth <= upper)))


def gaussian_nlpd(truth: Sequence[float], mean: Sequence[float], sd: Sequence[float]) -> float:
    """Mean negative log predictive density of ``truth`` under ``N(mean, sd**2)``, per point (nats).

    Lower is better. Unlike RMSE it punishes a forecast that is confidently wrong
    (tiny ``sd``) and one that hedges with a needlessly wide band.
    """
    truth, mean = _pair(truth, mean)
    sd = np.asarray(sd, float)
    if np.any(sd <= 0):
        raise ValueError("every predictive standard deviation must be > 0.")
    z = (truth - mean) / sd
    return float(np.mean(0.5 * math.log(2 * math.pi) + np.log(sd) + 0.5 * z**2))


def plot_forecast(
    path: str | Path,
    *,
    forecast_x: Sequence[float],
    mean: Sequence[float],
    lower: Sequence[float],
    upper: Sequence[float],
    history: tuple[Sequence[float], Sequence[float]] | None = None,
    truth: tuple[Sequence[float], Sequence[float]] | None = None,
    baselines: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    markers: Mapping[str, float] | None = None,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    note: str | None = None,
) -> Path:
    """Plots history, truth, the predicted mean and its band (the book's chapter 6 layout) into a PNG.

    Args:
        path: output PNG path.
        forecast_x, mean, lower, upper: the forecast and its band.
        history: ``(x, y)`` of the data the model saw, drawn in grey.
        truth: ``(x, y)`` of the held-out actual values, drawn in blue.
        baselines: label -> ``(x, y)`` of naive forecasts, drawn as thin dotted lines.
        markers: label -> x of vertical dotted lines (quarter starts, say).
        title, xlabel, ylabel: texts.
        note: a line of text in the plot's corner (e.g. "no ground truth").

    Returns:
        The path written.
    """
    fig = report.new_figure((12, 6))
    ax = fig.subplots()
    if history is not None and len(history[0]):
        ax.plot(history[0], history[1], color="0.45", linewidth=1, label="history (training)")
    if truth is not None and len(truth[0]):
        ax.plot(truth[0], truth[1], color="tab:blue", linewidth=1.5, label="actual")
    ax.fill_between(forecast_x, lower, upper, color="tab:red", alpha=0.2, label="95% confidence interval")
    ax.plot(forecast_x, mean, color="tab:red", linestyle="--", linewidth=1.5, label="predicted")
    for (label, (x, y)), style in zip((baselines or {}).items(), (":", "-.", (0, (1, 3)))):
        ax.plot(x, y, color="0.2", linestyle=style, linewidth=1, label=label)
    for label, x in (markers or {}).items():
        ax.axvline(x, color="0.6", linestyle=":", linewidth=1)
        ax.annotate(label, (x, 1), xycoords=("data", "axes fraction"), xytext=(3, -12), textcoords="offset points",
                    color="0.4", fontsize=9)
    if note:
        ax.text(0.01, 0.02, note, transform=ax.transAxes, fontsize=9, color="0.3")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)  # outside: never over the data
    return report.save_figure(fig, path)  # the module's attribute: tests record what it draws

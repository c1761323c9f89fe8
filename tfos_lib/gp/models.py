"""The backtest's GP forecasters: the book's kernel, and kernels whose hyperparameters are learned with priors.

Imports GPflow (and so TensorFlow) at import time: import this module only inside
executor functions, never at a job's top level.

Every ``fit_*`` takes the rows a forecaster knows (see
:func:`tfos_lib.gp.backtest.training_rows`) and the horizons to predict (trading
days after the last known day, or the window's days of the year for the book's
representation), and returns the arguments of a
:class:`~tfos_lib.gp.backtest.Predictive` (``space``, ``loc``, ``sd``, ``df``,
``noise``) and a dict describing the fit.

The learned models work on log prices of one continuous trading-day axis: input
``x = (t - t_last) / 252`` (years before the last known day, negative), target
``(log price - log last price) / s`` with ``s`` the training std of log prices. The
prior mean is 0, i.e. the last price: far from the data a forecast reverts to
"no change" with the prior's variance, like a random walk that stops widening.
"""

from __future__ import annotations

import json
import math
import time

import gpflow
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfos_lib.gp.model import FastGradientGPR
from tfos_lib.gp.scoring import YEAR_DAYS, Window, price_mapping

__all__ = ["fit_book", "fit_learned"]

STUDENT_T_DF = 4.0
# "walk-regime": the recent regime is the last half year (126 trading days); the forecast's volatility is the
# even mix of the recent and older regimes'; it trains on the last 4 years (backtest.HISTORY_YEARS; the drift
# is that history's). All three chosen on the 2010-2013 quarters with the random walk's closed form (README,
# stock section), not on the later windows.
REGIME_RECENT_YEARS = 0.5
REGIME_FORWARD_WEIGHT = 0.5


def _lognormal(median: float, sigma: float):
    f64 = lambda v: tf.constant(v, tf.float64)  # noqa: E731
    return tfp.distributions.LogNormal(f64(math.log(median)), f64(sigma))


def _minimize(model, max_iter: int) -> dict:
    started = time.perf_counter()
    result = gpflow.optimizers.Scipy().minimize(model.training_loss, model.trainable_variables,
                                                options={"maxiter": max_iter})
    values = {name: np.asarray(v).tolist() for name, v in gpflow.utilities.read_values(model).items()
              if np.size(v) <= 4}  # not a VGP's variational parameters
    return {"fit_seconds": time.perf_counter() - started, "iterations": int(result.nit),
            "converged": bool(result.success), "hyperparameters": json.dumps(values)}


def fit_book(rows, years: dict[int, dict], window: Window, days: np.ndarray, max_iter: int) -> tuple[dict, dict]:
    """The book's model: per-year standardised prices on ``[year, day]``, RBF(63, 1) + White(1e-10), GPR.

    ``years``: :func:`tfos_lib.gp.backtest.book_years` of ``rows``; ``days``: the window's
    trading days of its year. Back to prices as :func:`tfos_lib.gp.scoring.price_mapping`
    says; the band is Gaussian in prices.
    """
    rows = rows[rows.day < YEAR_DAYS]
    first = np.array([years[y]["first_price"] for y in rows.year])
    scale = np.array([years[y]["scale"] for y in rows.year])
    if np.any(scale == 0):
        raise ValueError("a training year has constant prices; the book's standardisation divides by its std.")
    x = rows[["year", "day"]].to_numpy(np.float64)
    y = ((rows.price.to_numpy(float) - first) / scale)[:, None]
    kernel = gpflow.kernels.SquaredExponential(variance=63.0, lengthscales=1.0) + gpflow.kernels.White(variance=1e-10)
    model = FastGradientGPR((x, y), kernel=kernel)
    info = _minimize(model, max_iter)
    x_new = np.column_stack([np.full(len(days), float(window.year)), np.asarray(days, np.float64)])
    mean, variance = (v.numpy().ravel() for v in model.predict_y(x_new))
    mapping = price_mapping(window, years)
    predictive = {"space": "price", "loc": mapping["anchor"] + mapping["scale"] * mean,
                  "sd": mapping["scale"] * np.sqrt(variance)}
    return predictive, {**info, "train_points": len(rows)}


class PinnedBrownian(gpflow.kernels.Kernel):
    """Brownian motion in both directions from ``x = 0`` (the last known day), pinned to 0 there.

    ``k(x, x') = variance * min(|x|, |x'|)`` when ``x`` and ``x'`` lie on the same side of 0,
    else 0. Forward it is a random walk started at the last price; backward the
    training days are the same kind of walk, so the marginal likelihood learns the
    walk's volatility from them. With a drift (a linear mean, or a linear kernel) this
    is the GP form of the random walk with drift; other kernels added to it model what
    a walk cannot (e.g. short-term reversion).
    """

    def __init__(self, variance: float = 1.0):
        super().__init__()
        self.variance = gpflow.Parameter(variance, transform=gpflow.utilities.positive())

    def K(self, X, X2=None):
        X2 = X if X2 is None else X2
        a, b = X[:, :1], tf.transpose(X2[:, :1])
        same_side = tf.cast(a * b > 0, a.dtype)
        return self.variance * same_side * tf.minimum(tf.abs(a), tf.abs(b))

    def K_diag(self, X):
        return self.variance * tf.abs(X[:, 0])


class TwoRegimeBrownian(gpflow.kernels.Kernel):
    """:class:`PinnedBrownian` with its own volatility for the last ``recent`` years and for the history before.

    Backward from ``x = 0`` the walk's variance per year is ``recent_variance`` over
    ``|x| <= recent`` and ``old_variance`` beyond, both learned by marginal likelihood
    (volatility clusters). Forward, the next days' variance per year is
    ``forward_weight * recent_variance + (1 - forward_weight) * old_variance``: whether
    the recent regime persists is not in the history a fit sees, so the forecast
    hedges between the two (``forward_weight`` is fixed, chosen on the 2010-2013 windows).
    """

    def __init__(self, recent: float = 0.5, forward_weight: float = 0.5, variance: float = 1.0):
        super().__init__()
        self.recent, self.forward_weight = float(recent), float(forward_weight)
        self.recent_variance = gpflow.Parameter(variance, transform=gpflow.utilities.positive())
        self.old_variance = gpflow.Parameter(variance, transform=gpflow.utilities.positive())

    def _integrated(self, s):
        """The variance accumulated from 0 to ``|x| = s`` (``s >= 0``) on the backward side."""
        near = tf.minimum(s, self.recent)
        return self.recent_variance * near + self.old_variance * (s - near)

    def _forward(self):
        return self.forward_weight * self.recent_variance + (1 - self.forward_weight) * self.old_variance

    def K(self, X, X2=None):
        X2 = X if X2 is None else X2
        a, b = X[:, :1], tf.transpose(X2[:, :1])
        s = tf.minimum(tf.abs(a), tf.abs(b))
        ahead = tf.cast((a > 0) & (b > 0), a.dtype)
        behind = tf.cast((a < 0) & (b < 0), a.dtype)
        return ahead * self._forward() * s + behind * self._integrated(s)

    def K_diag(self, X):
        x = X[:, 0]
        return tf.where(x > 0, self._forward() * x, self._integrated(tf.abs(x)))


def _kernel(kind: str):
    kernels = gpflow.kernels
    if kind == "walk-regime":
        walk = TwoRegimeBrownian(recent=REGIME_RECENT_YEARS, forward_weight=REGIME_FORWARD_WEIGHT)
        walk.recent_variance.prior = _lognormal(1.0, 1.5)
        walk.old_variance.prior = _lognormal(1.0, 1.5)
        white = kernels.White(variance=1e-3)
        white.variance.prior = _lognormal(1e-3, 1.5)
        return walk + white  # the drift: a learned mean (fit_learned), the walk's own estimate, not shrunk
    if kind.startswith("walk"):
        walk = PinnedBrownian(variance=1.0)
        walk.variance.prior = _lognormal(1.0, 1.5)
        white = kernels.White(variance=1e-3)
        white.variance.prior = _lognormal(1e-3, 1.5)
        # The drift as a random slope through the last known day: its uncertainty widens the band,
        # and the marginal likelihood shrinks it toward 0 when the history does not support it.
        drift = kernels.Linear(variance=0.1)
        drift.variance.prior = _lognormal(0.1, 1.5)
        if kind == "walk":
            return walk + drift + white
        if kind == "walk-fixed-drift":
            return walk + white
        reversion = kernels.Matern12(variance=0.05, lengthscales=0.05)  # weeks: short-term wandering around the walk
        reversion.lengthscales.prior = _lognormal(0.05, 1.0)
        reversion.variance.prior = _lognormal(0.05, 1.0)
        return walk + reversion + white
    trend = kernels.SquaredExponential(variance=1.0, lengthscales=1.0)
    trend.lengthscales.prior = _lognormal(1.0, 0.7)  # about a year (0.25-4 years at 2 sd)
    trend.variance.prior = _lognormal(1.0, 1.0)
    if kind == "periodic":
        base = kernels.SquaredExponential(variance=0.1, lengthscales=1.0)
        base.lengthscales.prior = _lognormal(1.0, 0.5)
        base.variance.prior = _lognormal(0.1, 1.0)
        second = kernels.Periodic(base, period=1.0)  # the calendar year
        gpflow.set_trainable(second.period, False)
    else:
        second = kernels.Matern12(variance=0.1, lengthscales=0.1)  # short-term: random-walk-like wandering
        second.lengthscales.prior = _lognormal(0.1, 1.0)
        second.variance.prior = _lognormal(0.1, 1.0)
    white = kernels.White(variance=1e-3)
    white.variance.prior = _lognormal(1e-3, 1.5)
    if kind == "ou":
        walk = kernels.Matern12(variance=1.0, lengthscales=2.0)
        walk.lengthscales.prior = _lognormal(2.0, 1.0)
        walk.variance.prior = _lognormal(1.0, 1.0)
        return walk + white
    return trend + second + white


def fit_learned(spec: tuple[str, str, str], rows, horizons: np.ndarray, max_iter: int, stride: int) -> tuple[dict, dict]:
    """A learned GP on the known rows (every ``stride``-th day counted back from the last one).

    ``spec``: ``(kernel, likelihood, space)``, a value of :data:`tfos_lib.gp.backtest.LEARNED_MODELS`.
    """
    kind, likelihood, space = spec
    prices = rows.price.to_numpy(float)
    t = np.arange(len(prices)) - (len(prices) - 1)
    keep = slice(None, None, -stride)  # the last known day always stays
    t, prices = t[keep][::-1], prices[keep][::-1]
    values = np.log(prices) if space == "log" else prices
    origin, spread = values[-1], float(np.std(values))
    if not spread > 0:
        raise ValueError("the training prices are constant; nothing to learn a scale from.")
    x = (t / YEAR_DAYS)[:, None].astype(np.float64)
    y = ((values - origin) / spread)[:, None]
    kernel = _kernel(kind)
    # "walk" draws its drift as a kernel; these two learn it as a fixed slope through the last known day.
    # The others revert to the last price.
    mean = None
    if kind in ("walk-fixed-drift", "walk-ou", "walk-regime"):
        mean = gpflow.mean_functions.Linear(A=np.zeros((1, 1)), b=np.zeros(1))
        gpflow.set_trainable(mean.b, False)
    if likelihood == "gaussian":
        model = FastGradientGPR((x, y), kernel=kernel, mean_function=mean, noise_variance=1e-3)
        model.likelihood.variance.prior = _lognormal(1e-3, 1.5)
    else:
        lik = gpflow.likelihoods.StudentT(scale=0.03, df=STUDENT_T_DF)
        lik.scale.prior = _lognormal(0.03, 1.0)
        model = gpflow.models.VGP((x, y), kernel=kernel, likelihood=lik, mean_function=mean)
    info = _minimize(model, max_iter)
    x_new = (np.asarray(horizons, np.float64) / YEAR_DAYS)[:, None]
    if likelihood == "gaussian":
        mean, variance = (v.numpy().ravel() for v in model.predict_y(x_new))
        predictive = {"space": space, "loc": origin + spread * mean, "sd": spread * np.sqrt(variance)}
    else:
        mean, variance = (v.numpy().ravel() for v in model.predict_f(x_new))
        predictive = {"space": space, "loc": origin + spread * mean, "sd": spread * np.sqrt(variance),
                      "df": STUDENT_T_DF, "noise": spread * float(model.likelihood.scale.numpy())}
    return predictive, {**info, "train_points": len(y)}


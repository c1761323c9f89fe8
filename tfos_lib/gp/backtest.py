"""A rolling-origin backtest of probabilistic price forecasts: windows, training slices, naive baselines, scores.

Every quarter (the book's 63 trading days) and every year from a start year to the
data's end is its own forecasting problem, trained only on the days before it.
This module is the part without TensorFlow: which windows exist, what a model may
train on, the naive forecasts (last value, training years' average curve, random
walk with drift), the predictive distributions every model reduces to
(:class:`Predictive`: Gaussian or Student-t noise, in price or log-price space),
per-day scores (point error, central intervals, log density, PIT) and their
aggregation, and the calibration plots. The fits live in :mod:`tfos_lib.gp.models`.

A history is a pandas DataFrame of one ticker sorted by date, with columns
``year``, ``day`` (the d-th trading day of its year, from 0) and ``price``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tfos_lib.gp.scoring import QUARTER_DAYS, YEAR_DAYS, Window, baseline_curve, price_mapping

__all__ = [
    "DAY_COLUMNS", "GP_MODELS", "HISTORY_YEARS", "LEARNED_MODELS", "LEVELS", "NAIVE_MODELS", "Predictive", "aggregate", "average_curve_forecast", "backtest_windows", "book_years",
    "evaluate", "forecast_days", "plan_batches", "last_value_forecast", "plot_calibration", "plot_over_time", "random_walk_forecast",
    "choose_default", "fit_costs", "paired_difference", "plot_forecasts", "run_batch", "summarize", "training_rows", "window_scores", "window_time", "write_predictions",
]

#: Nominal levels of the central intervals scored (and drawn in the calibration plot's markers).
LEVELS = (0.5, 0.8, 0.95)
#: Forecasts that need no fit: computed in the same tasks as the GPs, scored the same way.
NAIVE_MODELS = ("last-value", "average-curve", "random-walk")
#: The per-day lists :func:`evaluate` returns (one value per forecast day).
DAY_COLUMNS = ("point", "actual", *(f"{side}_{round(level * 100)}" for level in LEVELS for side in ("lower", "upper")),
               "logpdf", "pit")
SLACK_DAYS = 5  # a window may miss this many of its trading days at the data's end (2018Q3 has 62 of 63)
#: GP models fitted by marginal likelihood with priors (:mod:`tfos_lib.gp.models`): name -> (kernel, likelihood,
#: space). "sum": RBF trend + Matern 1/2 (short-term wandering) + white noise; "periodic": RBF trend + a
#: yearly periodic + white; "ou": one long Matern 1/2 (Ornstein-Uhlenbeck, random-walk-like) + white;
#: "student-t": "sum" with a Student-t likelihood (variational); "sum-price": "sum" on prices, not log prices;
#: "walk": a Brownian motion pinned at the last day + a random drift + white (the random walk as a GP);
#: "walk-fixed-drift": the drift as a learned mean instead; "walk-ou": that + a short Matern 1/2;
#: "walk-regime": "walk-fixed-drift" with one volatility for the last half year and one before (volatility
#: clusters), on 4 years of history (HISTORY_YEARS).
LEARNED_MODELS = {
    "sum": ("sum", "gaussian", "log"),
    "periodic": ("periodic", "gaussian", "log"),
    "student-t": ("sum", "student-t", "log"),
    "ou": ("ou", "gaussian", "log"),
    "ou-t": ("ou", "student-t", "log"),
    "sum-price": ("sum", "gaussian", "price"),
    "walk": ("walk", "gaussian", "log"),
    "walk-ou": ("walk-ou", "gaussian", "log"),
    "walk-fixed-drift": ("walk-fixed-drift", "gaussian", "log"),
    "walk-regime": ("walk-regime", "gaussian", "log"),
}
#: Models that train on more years than ``--lookback-years`` (chosen on the 2010-2013 quarters; see models.py).
HISTORY_YEARS = {"walk-regime": 4}
#: Every GP model: the book's kernel (the reference) and the learned ones.
GP_MODELS = ("book", *LEARNED_MODELS)


def backtest_windows(start_year: int, days_per_year: Mapping[int, int]) -> list[Window]:
    """Every quarter and every year from ``start_year`` that the data covers (all but ``SLACK_DAYS`` of its days).

    ``days_per_year``: trading days in the data per year (one ticker). Sorted by
    first day, the year before its first quarter.
    """
    windows = []
    for year in sorted(y for y in days_per_year if y >= start_year):
        for name in [str(year)] + [f"{year}Q{q}" for q in range(1, 5)]:
            window = Window.parse(name)
            if days_per_year[year] >= window.end_day - SLACK_DAYS:
                windows.append(window)
    return windows


def plan_batches(windows: Mapping[str, Sequence[str]], models: Sequence[str], per_task: int) -> dict[tuple, list[str]]:
    """``(ticker, model, batch) -> window names``: each ticker's windows in runs of ``per_task``, for every model."""
    return {(ticker, model, start // per_task): list(names[start:start + per_task])
            for ticker, names in sorted(windows.items()) for model in models for start in range(0, len(names), per_task)}


def training_rows(history, window: Window, lookback_days: int | None = None):
    """The rows a forecaster of ``window`` knows: strictly before its first day; the last ``lookback_days`` only."""
    before = (history.year < window.year) | ((history.year == window.year) & (history.day < window.first_day))
    rows = history[before]
    return rows if lookback_days is None else rows.iloc[-lookback_days:]


def forecast_days(history, window: Window):
    """The window's rows (its actual prices) and each one's horizon in trading days after the last known day."""
    rows = history[(history.year == window.year) & (history.day >= window.first_day) & (history.day < window.end_day)]
    return rows, rows.day.to_numpy() - window.first_day + 1


def book_years(rows) -> dict[int, dict]:
    """The book's per-year constants of training rows: first price, population std, last price, days."""
    out = {}
    for year, group in rows.groupby("year", sort=True):
        prices = group.price.to_numpy(float)
        out[int(year)] = {"first_price": prices[0], "scale": float(np.std(prices)), "last_price": prices[-1],
                          "days": len(prices)}
    return out


# ---------------------------------------------------------------------------------------------
# Predictive distributions and their scores.


@dataclass(frozen=True)
class Predictive:
    """Per forecast day: ``value = loc + sd * N(0, 1) [+ noise * t(df)]`` in price or log-price ``space``.

    ``df=None``: Gaussian (``sd`` is the total standard deviation). Otherwise a
    Gaussian latent plus Student-t noise (scale ``noise``, ``df`` degrees of
    freedom), integrated by Gauss-Hermite quadrature. In log space, prices are
    ``exp(value)``. The point forecast is the median, ``loc`` mapped to prices.
    """

    space: str
    loc: np.ndarray
    sd: np.ndarray
    df: float | None = None
    noise: float = 0.0

    def to_price(self, value):
        return np.exp(value) if self.space == "log" else value

    def _value(self, price):
        return np.log(price) if self.space == "log" else price

    def _nodes(self):
        x, w = np.polynomial.hermite.hermgauss(40)
        return self.loc[:, None] + math.sqrt(2) * self.sd[:, None] * x[None, :], w / math.sqrt(math.pi)

    def cdf(self, price) -> np.ndarray:
        value = self._value(np.asarray(price, float))
        from scipy import stats

        if self.df is None:
            return stats.norm.cdf(value, self.loc, self.sd)
        f, w = self._nodes()
        return np.sum(w * stats.t.cdf((value[:, None] - f) / self.noise, self.df), axis=1)

    def logpdf(self, price) -> np.ndarray:
        """Log density of actual prices (per price unit: a log-space density gets the Jacobian ``-log price``)."""
        from scipy import stats

        price = np.asarray(price, float)
        value = self._value(price)
        if self.df is None:
            out = stats.norm.logpdf(value, self.loc, self.sd)
        else:
            f, w = self._nodes()
            dens = stats.t.logpdf((value[:, None] - f) / self.noise, self.df) - math.log(self.noise)
            top = dens.max(axis=1, keepdims=True)
            out = top[:, 0] + np.log(np.sum(w * np.exp(dens - top), axis=1))
        return out - np.log(price) if self.space == "log" else out

    def quantile(self, q: float) -> np.ndarray:
        """The ``q`` quantile per day, in prices (bisection on the CDF for Student-t noise)."""
        from scipy import stats

        if self.df is None:
            return self.to_price(stats.norm.ppf(q, self.loc, self.sd))
        reach = 8 * self.sd + self.noise * stats.t.ppf(0.9999, self.df)
        lo, hi = self.loc - reach, self.loc + reach
        for _ in range(60):
            mid = (lo + hi) / 2
            below = self.cdf(self.to_price(mid)) < q
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return self.to_price((lo + hi) / 2)


def evaluate(predictive: Predictive | None, point, actual) -> dict[str, list]:
    """Per-day scores of one window: point forecast, central intervals (``LEVELS``), log density, PIT.

    ``predictive=None`` (a point forecast only): intervals, log density and PIT are NaN.
    """
    actual = np.asarray(actual, float)
    nan = np.full(len(actual), np.nan)
    out = {"point": np.asarray(point, float), "actual": actual}
    for level in LEVELS:
        tail = (1 - level) / 2
        key = f"{round(level * 100)}"
        out[f"lower_{key}"] = predictive.quantile(tail) if predictive else nan
        out[f"upper_{key}"] = predictive.quantile(1 - tail) if predictive else nan
    out["logpdf"] = predictive.logpdf(actual) if predictive else nan
    out["pit"] = predictive.cdf(actual) if predictive else nan
    return {k: [float(v) for v in np.asarray(values, float)] for k, values in out.items()}


def window_scores(days: Mapping[str, Sequence[float]]) -> dict[str, float | None]:
    """RMSE, MAE, NLPD, coverage and mean width of each central interval, from :func:`evaluate`'s per-day lists."""
    actual, point = np.asarray(days["actual"]), np.asarray(days["point"])
    out = {"days": len(actual), "rmse": float(np.sqrt(np.mean((point - actual) ** 2))),
           "mae": float(np.mean(np.abs(point - actual)))}
    logpdf = np.asarray(days["logpdf"])
    out["nlpd"] = None if np.isnan(logpdf).all() else float(-np.mean(logpdf))
    for level in LEVELS:
        key = f"{round(level * 100)}"
        lower, upper = np.asarray(days[f"lower_{key}"]), np.asarray(days[f"upper_{key}"])
        probabilistic = not np.isnan(lower).all()
        out[f"coverage_{key}"] = float(np.mean((actual >= lower) & (actual <= upper))) if probabilistic else None
        out[f"width_{key}"] = float(np.mean(upper - lower)) if probabilistic else None
    return out


def aggregate(rows: Sequence[Mapping]) -> dict:
    """Means of :func:`window_scores` over windows (each window counts once), and how many windows."""
    out: dict = {"windows": len(rows)}
    if not rows:
        return out
    for name in rows[0]:
        if name == "days":
            out["days"] = int(sum(r["days"] for r in rows))
            continue
        values = [r[name] for r in rows if r[name] is not None]
        out[name] = float(np.mean(values)) if values else None
    return out


def summarize(records: Sequence[Mapping], gp_models: Sequence[str], band: tuple[float, float] = (0.85, 0.99)) -> dict:
    """Scores every (ticker, window, model) record of :func:`tfos_lib.gp.models.run_batch` and aggregates them.

    Records need a ``ticker``. Returns ``per_window`` (ticker -> model -> window ->
    scores), ``table`` (one row per ticker and model: means over its quarter windows
    and over its year windows), ``pit`` (model -> every day's PIT, for the
    calibration plot), ``failed`` (every failed record's key and reason) and
    ``default_model``: among ``gp_models``, those whose 95% band covers within
    ``band`` averaged over each ticker's quarters, the one with the lowest mean
    quarter NLPD over the tickers.
    """
    per_window: dict = {}
    kinds: dict = {}
    pit: dict = {}
    failed = []
    for r in records:
        if r["status"] != "ok":
            failed.append({"ticker": r["ticker"], "model": r["model"], "window": r["window"], "reason": r["reason"]})
            continue
        scores = window_scores(r)
        per_window.setdefault(r["ticker"], {}).setdefault(r["model"], {})[r["window"]] = scores
        kind = "quarters" if "Q" in r["window"] else "years"
        kinds.setdefault((r["ticker"], r["model"], kind), []).append(scores)
        if not np.isnan(r["pit"]).all():
            pit.setdefault(r["model"], []).extend(r["pit"])
    table = []
    for ticker, model in sorted({(t, m) for t, m, _ in kinds}):
        table.append({"ticker": ticker, "model": model,
                      **{kind: aggregate(kinds.get((ticker, model, kind), [])) for kind in ("quarters", "years")},
                      "nlpd_vs_random_walk": paired_difference(per_window[ticker], model, "random-walk")})
    return {"per_window": per_window, "table": table, "pit": pit, "failed": failed,
            "default_model": choose_default(table, gp_models, band)}


def paired_difference(by_model: Mapping[str, Mapping[str, Mapping]], model: str, reference: str) -> dict | None:
    """``model``'s quarter NLPD minus ``reference``'s, window by window: mean, standard error and count.

    A mean below zero by more than about two standard errors says ``model`` forecasts
    better than ``reference`` on these windows; within that, the two are not told apart.
    """
    ours, theirs = by_model.get(model, {}), by_model.get(reference, {})
    diffs = [ours[w]["nlpd"] - theirs[w]["nlpd"] for w in ours
             if "Q" in w and w in theirs and ours[w]["nlpd"] is not None and theirs[w]["nlpd"] is not None]
    if model == reference or len(diffs) < 2:
        return None
    return {"mean": float(np.mean(diffs)), "se": float(np.std(diffs, ddof=1) / np.sqrt(len(diffs))), "windows": len(diffs)}


def choose_default(table: Sequence[Mapping], gp_models: Sequence[str], band: tuple[float, float]) -> dict:
    """The default model: calibrated (95% coverage within ``band`` on every ticker's quarters), then best mean NLPD."""
    low, high = band
    summary = {}
    for model in gp_models:
        rows = [r["quarters"] for r in table if r["model"] == model and r["quarters"].get("nlpd") is not None]
        if rows:
            summary[model] = {"nlpd": float(np.mean([q["nlpd"] for q in rows])),
                              "coverage_95": {r["ticker"]: r["quarters"]["coverage_95"] for r in table if r["model"] == model},
                              "calibrated": all(low <= q["coverage_95"] <= high for q in rows)}
    if not summary:
        return {"name": None, "why": "no model produced a scored forecast", "candidates": summary}
    calibrated = [m for m in summary if summary[m]["calibrated"]]
    pool = calibrated or list(summary)
    best = min(pool, key=lambda m: summary[m]["nlpd"])
    if calibrated:
        why = (f"the lowest mean NLPD over the backtest's quarters ({summary[best]['nlpd']:.3f}, mean over tickers) among the "
               f"models whose 95% band covers within [{low}, {high}] on every ticker: {sorted(calibrated)}")
    else:
        why = (f"no model's 95% band covers within [{low}, {high}] on every ticker's quarters; "
               f"this one has the lowest mean NLPD over the backtest's quarters ({summary[best]['nlpd']:.3f})")
    return {"name": best, "calibrated": bool(calibrated), "why": why, "candidates": summary}


# ---------------------------------------------------------------------------------------------
# Naive forecasts (no fit).


def last_value_forecast(train, horizons) -> tuple[None, np.ndarray]:
    """The last known price carried forward: a point forecast, no band."""
    return None, np.full(len(horizons), float(train.price.iloc[-1]))


def average_curve_forecast(train, window: Window, days) -> tuple[None, np.ndarray]:
    """The training years' mean normalised curve (the book's units), continued from the last known price."""
    years = book_years(train)
    if any(y["scale"] == 0 for y in years.values()):
        raise ValueError("a training year has constant prices; the book's standardisation divides by its std.")
    curves = {}
    for year, group in train.groupby("year"):
        if year < window.year:
            y = (group.price.to_numpy(float) - years[year]["first_price"]) / years[year]["scale"]
            for d, v in zip(group.day.to_numpy(), y):
                curves.setdefault(int(d), []).append(v)
    average, value = {}, np.nan
    for d in range(YEAR_DAYS):  # a day no training year reached (the 252nd of two short years) keeps the day before's
        value = float(np.mean(curves[d])) if d in curves else value
        average[d] = value
    known = years[max(years)]
    last = {"price": known["last_price"], "day": known["days"] - 1}
    return None, baseline_curve(window, np.asarray(days), price_mapping(window, years), average, last)


def random_walk_forecast(train, horizons) -> tuple[Predictive, np.ndarray]:
    """A random walk with drift in log prices: ``log p(h) ~ N(log p_last + h mu, h sigma^2)``.

    ``mu`` and ``sigma``: mean and std (ddof=1) of the training days' daily log returns.
    The honest probabilistic baseline: its band widens like historical volatility.
    """
    logs = np.log(train.price.to_numpy(float))
    returns = np.diff(logs)
    mu, sigma = float(np.mean(returns)), float(np.std(returns, ddof=1))
    horizons = np.asarray(horizons, float)
    predictive = Predictive("log", logs[-1] + horizons * mu, sigma * np.sqrt(horizons))
    return predictive, np.exp(predictive.loc)


def run_batch(rows, model: str, window_names: list[str], *, lookback_years: int, stride: int, max_iter: int) -> list[dict]:
    """Forecasts and scores ``window_names`` of one ticker with one model (``"naive"``: the three naive ones).

    ``rows``: the ticker's history (``year``, ``day``, ``price``; any order). Each
    window trains only on :func:`~tfos_lib.gp.backtest.training_rows`. A fit that
    raises or predicts non-finite values is a record with ``status="failed"`` and
    its ``reason``, never dropped. Returns one record per (window, model).
    """
    history = rows.sort_values(["year", "day"]).reset_index(drop=True)
    lookback = max(lookback_years, HISTORY_YEARS.get(model, 0)) * YEAR_DAYS
    records = []
    for name in window_names:
        window = Window.parse(name)
        target, horizons = forecast_days(history, window)
        recent = training_rows(history, window, lookback)
        if model == "naive":
            forecasts = {"last-value": lambda: last_value_forecast(recent, horizons),
                         "average-curve": lambda: average_curve_forecast(
                             training_rows(history, window)[lambda r: r.year >= window.year - lookback_years],
                             window, target.day.to_numpy()),
                         "random-walk": lambda: random_walk_forecast(recent, horizons)}
        elif model == "book":
            from tfos_lib.gp.models import fit_book

            def forecasts_book():
                known = training_rows(history, window)
                known = known[known.year >= window.year - lookback_years]
                params, info = fit_book(known, book_years(known), window, target.day.to_numpy(), max_iter)
                predictive = Predictive(**params)
                return predictive, predictive.to_price(predictive.loc), info
            forecasts = {"book": forecasts_book}
        else:
            from tfos_lib.gp.models import fit_learned

            def forecasts_learned():
                params, info = fit_learned(LEARNED_MODELS[model], recent, horizons, max_iter, stride)
                predictive = Predictive(**params)
                return predictive, predictive.to_price(predictive.loc), info
            forecasts = {model: forecasts_learned}
        for label, make in forecasts.items():
            record = {"window": name, "model": label, "status": "ok", "reason": None, "error": None,
                      "train_points": None, "iterations": None, "converged": None, "fit_seconds": None,
                      "hyperparameters": None, "days": target.day.astype(int).tolist(),
                      **{key: [] for key in DAY_COLUMNS}}
            try:
                made = make()
                predictive, point = made[0], made[1]
                if not np.all(np.isfinite(point)):
                    raise FloatingPointError("the point forecast has non-finite values")
                info = made[2] if len(made) > 2 else {"train_points": len(recent)}
                record.update(info)
                if predictive is not None and not (np.all(np.isfinite(predictive.loc))
                                                   and np.all(np.isfinite(predictive.sd) & (predictive.sd > 0))):
                    raise FloatingPointError("the forecast has non-finite values or a zero standard deviation")
                record.update(evaluate(predictive, point, target.price.to_numpy(float)))
            except Exception as error:  # noqa: BLE001 - a failed fit is a result with its reason
                import traceback

                record.update(status="failed", reason=f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}",
                              error=traceback.format_exc(limit=5))
            records.append(record)
    return records


# ---------------------------------------------------------------------------------------------
# Plots (driver).


def plot_calibration(path, pits: Mapping[str, np.ndarray]) -> None:
    """Nominal vs observed coverage of central intervals, one line per model, over all windows' days."""
    from tfos_lib.report import new_figure, save_figure

    nominal = np.linspace(0.05, 0.99, 40)
    fig = new_figure((7, 6))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", label="calibrated")
    for model, pit in pits.items():
        pit = np.asarray(pit)
        observed = [np.mean(np.abs(pit - 0.5) <= level / 2) for level in nominal]
        ax.plot(nominal, observed, marker=".", markersize=3, label=f"{model} ({len(pit)} days)")
    ax.axhspan(0.85, 0.99, xmin=0.9, color="tab:green", alpha=0.1)
    ax.set(xlabel="nominal coverage of the central interval", ylabel="observed coverage (all backtest days)",
           title="Calibration over the backtest", xlim=(0, 1), ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    save_figure(fig, path)


def plot_over_time(path, ticker: str, series: Mapping[str, Sequence[tuple]]) -> None:
    """95% coverage and NLPD per quarter window over time, one line per model; ``series``: model -> [(x, cov, nlpd)]."""
    from tfos_lib.report import new_figure, save_figure

    fig = new_figure((11, 7))
    top, bottom = fig.subplots(2, 1, sharex=True)
    for model, points in series.items():
        points = sorted(points)
        x = [p[0] for p in points]
        top.plot(x, [p[1] for p in points], marker=".", linewidth=1, label=model)
        bottom.plot(x, [p[2] for p in points], marker=".", linewidth=1, label=model)
    top.axhline(0.95, color="0.5", linestyle=":")
    top.set(ylabel="95% band coverage", title=f"{ticker}: each quarter forecast from the days before it", ylim=(-0.02, 1.02))
    bottom.set(ylabel="NLPD (nats per day, prices)", xlabel="quarter (year + (quarter - 1) / 4)")
    bottom.set_yscale("symlog")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_figure(fig, path)


def plot_forecasts(output_dir: str, records: Sequence[Mapping], model: str, windows: Sequence[str], history) -> dict:
    """``model``'s forecast of each of ``windows`` per ticker, with the last value and the random walk; PNG names.

    ``history``: ``ticker, year, day, price`` rows of the years shown (each window's year and the one before).
    """
    from tfos_lib.gp import forecast

    ok = [r for r in records if r["status"] == "ok" and r["window"] in windows]
    written = {}
    for r in (r for r in ok if r["model"] == model):
        window = Window.parse(r["window"])
        mine = history[history.ticker == r["ticker"]]
        if window.first_day:  # the window's year up to the window
            past = mine[(mine.year == window.year) & (mine.day < window.first_day)]
            x = past.day.to_numpy()
        else:  # the year before, at negative days
            past = mine[mine.year == window.year - 1]
            x = past.day.to_numpy() - len(past)
        naive = {n["model"]: (r["days"], n["point"]) for n in ok if (n["ticker"], n["window"]) == (r["ticker"], r["window"])
                 and n["model"] in ("last-value", "random-walk")}
        png = f"{r['ticker']}_{r['window']}_backtest_{model}.png"
        forecast.plot_forecast(
            f"{output_dir}/{png}", forecast_x=r["days"], mean=r["point"], lower=r["lower_95"], upper=r["upper_95"],
            history=(x, past.price.to_numpy()), truth=(r["days"], r["actual"]), baselines=naive,
            title=f"{r['ticker']}: {window.label}, model {model!r} trained on the days before it",
            xlabel=f"trading day of {window.year}", ylabel="Adj Close",
        )
        written[f"{r['ticker']}/{r['window']}"] = png
    return written


def write_predictions(path: str, records: Sequence[Mapping]) -> None:
    """One CSV row per (ticker, model, window, day) of the successful records: actual, point, 95% band, PIT."""
    import pandas as pd

    columns = ("actual", "point", "lower_95", "upper_95", "pit")
    rows = [(r["ticker"], r["model"], r["window"], d, *(r[c][i] for c in columns))
            for r in records if r["status"] == "ok" for i, d in enumerate(r["days"])]
    pd.DataFrame(rows, columns=["ticker", "model", "window", "day", *columns]).to_csv(path, index=False, float_format="%.6f")


def fit_costs(records: Sequence[Mapping], gp_models: Sequence[str]) -> dict:
    """How many fits (records of ``gp_models``) and naive forecasts, failures by reason, fit seconds (median, p95)."""
    fits = [r for r in records if r["model"] in gp_models]
    seconds = [r["fit_seconds"] for r in fits if r["status"] == "ok"]
    failed: dict[str, int] = {}
    for r in records:
        if r["status"] != "ok":
            failed[r["reason"]] = failed.get(r["reason"], 0) + 1

    def spread(values):
        return {"median": float(np.median(values)), "p95": float(np.percentile(values, 95))} if values else None

    return {
        "fits": len(fits), "naive_forecasts": len(records) - len(fits), "failed": sum(failed.values()),
        "failed_by_reason": failed,
        "fit_seconds": {**(spread(seconds) or {"median": None, "p95": None}),
                        "by_model": {m: spread([r["fit_seconds"] for r in fits if r["model"] == m and r["status"] == "ok"])
                                     for m in gp_models}},
    }


def window_time(window: Window) -> float:
    """A window's start as a fractional year (for plots)."""
    return window.year + window.first_day / (4 * QUARTER_DAYS)

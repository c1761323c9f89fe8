"""Scoring and plotting GP price forecasts per (ticker, window), in prices rather than the model's units.

A forecaster that models each calendar year of a price series separately
(standardised within the year and shifted to start at 0, trading day ``d`` of
year ``y`` as the input ``[y, d]``) predicts in normalised units. This module
takes such forecasts, one :class:`Window` each (a whole year or one of its
63-trading-day quarters), back to prices, scores them against the actual prices
where the data has them (RMSE, MAE, 95% band coverage, NLPD; see
:mod:`tfos_lib.gp.forecast`) next to two naive baselines (the last known price
carried forward; the training years' average curve), and plots each.

Runs on the driver: numpy, pandas, matplotlib, and Spark only to collect the
small per-(ticker, window) tables. Used by ``jobs/stock_gp.py`` (book chapter 6);
the fits it scores are :func:`tfos_lib.parallel.run_tasks` result rows with
``ticker`` and ``window`` keys and ``days``, ``mean`` and ``variance`` columns.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

from tfos_lib import parallel
from tfos_lib.gp import forecast

__all__ = [
    "BASELINE_LABELS", "QUARTER_DAYS", "YEAR_DAYS", "Window", "baseline_curve", "collect_inputs", "plot",
    "price_mapping", "report_window", "score", "summarize", "table_row",
]

YEAR_DAYS = 252  # the book's trading days per year; later days are dropped
QUARTER_DAYS = YEAR_DAYS // 4
BASELINE_LABELS = {"last_value": "last value", "year_average": "training years' average curve"}


@dataclass(frozen=True)
class Window:
    """A forecast period: all of ``year`` (``"2017"``) or one of its 63-day quarters (``"2018Q4"``).

    Training uses full years up to ``year - 1``, plus, for a quarter, the days of
    ``year`` before it.
    """

    name: str
    year: int
    first_day: int  # first trading day of the year predicted
    end_day: int  # one past the last

    @classmethod
    def parse(cls, text: str) -> Window:
        match = re.fullmatch(r"\s*(\d{4})(?:[Qq]([1-4]))?\s*", text)
        if not match:
            raise ValueError(f"--windows: {text!r} is not a window; use a year (2017) or a quarter (2018Q4).")
        year, quarter = int(match.group(1)), match.group(2)
        if quarter is None:
            return cls(str(year), year, 0, YEAR_DAYS)
        q = int(quarter)
        return cls(f"{year}Q{q}", year, QUARTER_DAYS * (q - 1), QUARTER_DAYS * q)

    @property
    def label(self) -> str:
        days = f"trading days {self.first_day}-{self.end_day - 1}"
        return f"{self.name} ({days} of {self.year})" if self.first_day or self.end_day != YEAR_DAYS else self.name



def price_mapping(window: Window, years: dict[int, dict]) -> dict:
    """How normalised predictions become prices: ``price = anchor + scale * y``.

    A quarter's year is partly known, so its own first price and std apply (the
    model's units exactly). A whole new year's std and first price are unknown
    when forecasting; the last training year's std and last price stand in.
    """
    if window.first_day:
        year = years[window.year]
        return {"anchor": year["first_price"], "scale": year["scale"],
                "how": f"{window.year}'s first price and std of its known days (the model's own units)"}
    year = years[window.year - 1]
    return {"anchor": year["last_price"], "scale": year["scale"],
            "how": f"last price of {window.year - 1} and its std ({window.year}'s are unknown when forecasting)"}


def baseline_curve(window: Window, days: np.ndarray, mapping: dict, average: dict[int, float], last: dict) -> np.ndarray:
    """The training years' mean normalised curve, continued from the last known price (a naive forecast).

    ``price(d) = last price + scale * (curve(d) - curve(last known day))``; a new
    year's curve starts at 0, like every normalised year.
    """
    start = average.get(last["day"], np.nan) if window.first_day else 0.0
    curve = np.array([average.get(int(d), np.nan) for d in days])
    return last["price"] + mapping["scale"] * (curve - start)


def score(window: Window, fit: dict, mapping: dict, truth: dict[int, float], baselines: dict[str, np.ndarray]) -> dict:
    """Metrics in price units for one (ticker, window); ``truth`` maps trading day -> actual price."""
    days = np.asarray(fit["days"])
    mean = mapping["anchor"] + mapping["scale"] * np.asarray(fit["mean"])
    sd = mapping["scale"] * np.sqrt(np.asarray(fit["variance"]))
    lower, upper = forecast.band(mean, sd)
    scored = np.array([int(d) in truth for d in days])
    base = {"period": window.label, "predicted_days": len(days), "scored_days": int(scored.sum())}
    if not scored.any():
        return {**base, "ground_truth": False}
    actual = np.array([truth[int(d)] for d in days[scored]])
    errors = {}
    for name, values in baselines.items():
        usable = np.isfinite(values[scored])
        errors[name] = forecast.point_errors(actual[usable], values[scored][usable]) if usable.any() else None
    return {
        **base,
        "ground_truth": True,
        "gp": {
            **forecast.point_errors(actual, mean[scored]),
            "coverage_95": forecast.coverage(actual, lower[scored], upper[scored]),
            "nlpd": forecast.gaussian_nlpd(actual, mean[scored], sd[scored]),
            "band_halfwidth_mean": float(np.mean(upper - lower) / 2),
        },
        "baselines": errors,
    }


def plot(path, ticker: str, window: Window, fit: dict, mapping: dict, history: tuple, truth: dict,
         baselines: dict[str, np.ndarray], note: str | None) -> None:
    """One (ticker, window) figure like the book's: history, truth, mean and 95% band, here in prices."""
    days = np.asarray(fit["days"])
    mean = mapping["anchor"] + mapping["scale"] * np.asarray(fit["mean"])
    lower, upper = forecast.band(mean, mapping["scale"] * np.sqrt(np.asarray(fit["variance"])))
    truth_days = sorted(truth)
    forecast.plot_forecast(
        path, forecast_x=days, mean=mean, lower=lower, upper=upper, history=history,
        truth=(truth_days, [truth[d] for d in truth_days]),
        baselines={BASELINE_LABELS[name]: (days, values) for name, values in baselines.items()},
        markers={f"Q{q + 1}": q * QUARTER_DAYS for q in range(4)},
        title=f"{ticker}: {window.label} predicted by a GP trained on {fit['train_points']} days",
        xlabel=f"trading day of {window.year}" + ("" if window.first_day else f" (negative: {window.year - 1})"),
        ylabel="Adj Close", note=note,
    )


def collect_inputs(days, years_df, truth_df, average_df, windows: list[Window]) -> dict:
    """Brings the small per-(ticker, window) tables the scoring and plots need to the driver."""
    from pyspark.sql import functions as F

    out = {"years": {}, "truth": {}, "dates": {}, "average": {}, "history": {}}
    for row in years_df.collect():
        out["years"].setdefault((row.ticker, row.window), {})[row.year] = row.asDict()
    for row in truth_df.collect():
        out["truth"].setdefault((row.ticker, row.window), {})[row.day] = row.price
        out["dates"].setdefault((row.ticker, row.window), {})[row.day] = str(row.date)
    for row in average_df.collect():
        out["average"].setdefault((row.ticker, row.window), {})[row.day] = row.y
    shown = sorted({w.year - 1 for w in windows} | {w.year for w in windows})
    for row in days.where(F.col("year").isin(shown)).select("ticker", "year", "day", "price").collect():
        out["history"].setdefault((row.ticker, row.year), {})[row.day] = row.price
    ends = days.groupBy("ticker", "file").agg(F.max("date").alias("date"), F.max_by("line", "date").alias("line"))
    out["ends"] = {row.ticker: {"file": row.file, "last_date": str(row.date), "last_line": row.line} for row in ends.collect()}
    return out


def report_window(output_dir: str, fit, window: Window, inputs: dict) -> tuple[dict, list[tuple]]:
    """Scores and plots one successful fit; returns its metrics.json entry and its predictions.csv rows.

    ``fit`` is a successful result row of :func:`tfos_lib.parallel.run_tasks`; ``inputs``
    comes from :func:`collect_inputs`. The plot is written to ``output_dir``.
    """
    key = (fit.ticker, window.name)
    fit_dict = fit.asDict()
    years = inputs["years"][key]
    mapping = price_mapping(window, years)
    known = years[max(years)]
    last = {"price": known["last_price"], "day": known["days"] - 1}
    days = np.asarray(fit_dict["days"])
    average = inputs["average"].get(key, {})
    baselines = {"last_value": np.full(len(days), last["price"]), "year_average": baseline_curve(window, days, mapping, average, last)}
    truth = inputs["truth"].get(key, {})
    scores = score(window, fit_dict, mapping, truth, baselines)
    note = None
    if not scores["ground_truth"]:
        end = inputs["ends"][fit.ticker]
        note = f"no ground truth: {end['file']} ends {end['last_date']} (line {end['last_line']}), before {window.label}"
        scores["note"] = (
            f"{note}. The forecast is plotted but cannot be scored without prices past the file's end; "
            "the quarter before it (e.g. 2018Q3 for 2018Q4) is a held-out window with truth."
        )
    if window.first_day:  # history: the window's year up to the window
        hist = inputs["history"].get((fit.ticker, window.year), {})
        hist_days = [d for d in sorted(hist) if d < window.first_day]
        history = (hist_days, [hist[d] for d in hist_days])
    else:  # history: the year before, at negative days
        hist = inputs["history"].get((fit.ticker, window.year - 1), {})
        hist_days = [d for d in sorted(hist) if d < YEAR_DAYS]
        history = ([d - len(hist_days) for d in hist_days], [hist[d] for d in hist_days])
    png = f"{fit.ticker}_{window.name}_predicted.png"
    plot(f"{output_dir}/{png}", fit.ticker, window, fit_dict, mapping, history, truth, baselines, note)
    entry = {
        "status": "ok", **scores, "price_mapping": mapping, "plot": png,
        "fit": {name: fit_dict[name] for name in ("train_points", "converged", "optimizer_message", "iterations",
                                                    "log_marginal_likelihood", "fit_seconds")}
        | {"hyperparameters": json.loads(fit_dict["hyperparameters"]), "executor": fit.executor, "task_seconds": fit.seconds},
    }
    mean = mapping["anchor"] + mapping["scale"] * np.asarray(fit_dict["mean"])
    lower, upper = forecast.band(mean, mapping["scale"] * np.sqrt(np.asarray(fit_dict["variance"])))
    dates = inputs["dates"].get(key, {})
    rows = [(fit.ticker, window.name, int(d), dates.get(int(d)), truth.get(int(d)), m, lo, hi)
            for d, m, lo, hi in zip(days, mean, lower, upper)]
    return entry, rows


def table_row(ticker: str, window: str, entry: dict) -> dict:
    """One line of the summary table (metrics.json "table", the log)."""
    gp, baselines = entry["gp"], entry["baselines"]
    return {
        "ticker": ticker, "window": window, "days": entry["scored_days"], "gp_rmse": gp["rmse"], "gp_mae": gp["mae"],
        "coverage_95": gp["coverage_95"], "nlpd": gp["nlpd"],
        "last_value_rmse": (baselines["last_value"] or {}).get("rmse"),
        "year_average_rmse": (baselines["year_average"] or {}).get("rmse"),
    }


def summarize(output_dir: str, fits: list, windows: dict[str, Window], inputs: dict) -> tuple[dict, list[dict], dict]:
    """Scores and plots every fit, writes predictions.csv; returns (results, table, failed keys -> traceback).

    ``fits``: the result rows of :func:`tfos_lib.parallel.run_tasks` keyed by
    ``(ticker, window)``, failed ones included; ``windows``: name -> :class:`Window`.
    """
    import pandas as pd

    results, table, failed, predictions = {}, [], {}, []
    for fit in fits:
        if fit.status != parallel.OK:
            failed[f"{fit.ticker}/{fit.window}"] = fit.error
            results.setdefault(fit.ticker, {})[fit.window] = {"status": "failed", "error": fit.error, "executor": fit.executor}
            continue
        entry, rows = report_window(output_dir, fit, windows[fit.window], inputs)
        results.setdefault(fit.ticker, {})[fit.window] = entry
        predictions += rows
        if entry["ground_truth"]:
            table.append(table_row(fit.ticker, fit.window, entry))
    columns = ["ticker", "window", "day", "date", "actual", "mean", "lower_95", "upper_95"]
    pd.DataFrame(predictions, columns=columns).to_csv(f"{output_dir}/predictions.csv", index=False, float_format="%.6f")
    return results, table, failed

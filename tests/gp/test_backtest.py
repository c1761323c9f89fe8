"""The rolling-origin backtest's pure parts: windows, what a fit may see, naive baselines by hand, scores."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tfos_lib.gp import backtest as bt
from tfos_lib.gp.scoring import Window


def _history(days_per_year: dict[int, int], seed=0) -> pd.DataFrame:
    rows = [(y, d) for y, n in sorted(days_per_year.items()) for d in range(n)]
    frame = pd.DataFrame(rows, columns=["year", "day"])
    frame["price"] = 100 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.01, len(frame))))
    return frame


def test_windows_are_every_quarter_and_year_the_data_covers():
    names = [w.name for w in bt.backtest_windows(2016, {2015: 252, 2016: 252, 2017: 251, 2018: 188})]
    assert names == ["2016", "2016Q1", "2016Q2", "2016Q3", "2016Q4", "2017", "2017Q1", "2017Q2", "2017Q3", "2017Q4",
                     "2018Q1", "2018Q2", "2018Q3"]  # 2018 (188 days) is no whole year; Q3 has 62 of its 63
    assert [w.name for w in bt.backtest_windows(2018, {2018: 120})] == ["2018Q1"]  # Q2 would miss 6 days


def test_no_training_day_on_or_after_the_window_start():
    history = _history({2015: 252, 2016: 253, 2017: 251, 2018: 188})
    position = {(y, d): i for i, (y, d) in enumerate(zip(history.year, history.day))}
    for window in bt.backtest_windows(2016, history.groupby("year").size().to_dict()):
        target, horizons = bt.forecast_days(history, window)
        start = position[(window.year, window.first_day)]
        for lookback in (None, 504):
            train = bt.training_rows(history, window, lookback)
            assert train.index.max() == start - 1, window  # everything before it, up to the day before
            assert len(train) == (start if lookback is None else min(start, lookback))
        assert target.index.min() == start and horizons[0] == 1 and np.all(np.diff(horizons) == 1)
        assert ((target.year == window.year) & (target.day < window.end_day)).all()
    q1 = Window.parse("2017Q1")  # the 253rd day of 2016 belongs to the training days of 2017
    assert bt.training_rows(history, q1).iloc[-1][["year", "day"]].tolist() == [2016, 252]


def test_naive_baselines_against_hand_computed_values():
    train = pd.DataFrame({"year": [2016] * 3 + [2017] * 3, "day": [0, 1, 2] * 2,
                          "price": [100.0, 110.0, 99.0, 100.0, 105.0, 126.0]})
    horizons = np.array([1, 4])
    _, point = bt.last_value_forecast(train, horizons)
    assert point.tolist() == [126.0, 126.0]
    # Random walk with drift on log prices: returns log(1.1), log(0.9), log(100/99), log(1.05), log(1.2).
    returns = np.log([1.1, 0.9, 100 / 99, 1.05, 1.2])
    mu, sigma = returns.mean(), returns.std(ddof=1)
    predictive, point = bt.random_walk_forecast(train, horizons)
    np.testing.assert_allclose(point, 126.0 * np.exp(mu * horizons))
    np.testing.assert_allclose(predictive.sd, sigma * np.sqrt(horizons))
    np.testing.assert_allclose(predictive.quantile(0.975), 126.0 * np.exp(mu * horizons + 1.959964 * sigma * np.sqrt(horizons)),
                               rtol=1e-6)
    # The training years' mean normalised curve from 2018's first day on, continued from the last price:
    # 2016 y = (p - 100) / std(100, 110, 99); 2017 y = (p - 100) / std(100, 105, 126); a new year scales by 2017's std.
    s16, s17 = np.std([100, 110, 99]), np.std([100, 105, 126])
    curve = [(0 + 0) / 2, (10 / s16 + 5 / s17) / 2, (-1 / s16 + 26 / s17) / 2]
    _, point = bt.average_curve_forecast(train, Window.parse("2018"), np.array([0, 1, 2]))
    np.testing.assert_allclose(point, 126.0 + s17 * np.array(curve))


def test_predictive_distributions_in_prices():
    loc, sd = np.log([100.0, 50.0]), np.array([0.1, 0.2])
    lognormal = bt.Predictive("log", loc, sd)
    prices = np.array([105.0, 40.0])
    np.testing.assert_allclose(lognormal.logpdf(prices), stats.lognorm.logpdf(prices, sd, scale=np.exp(loc)))
    np.testing.assert_allclose(lognormal.quantile(0.9), stats.lognorm.ppf(0.9, sd, scale=np.exp(loc)))
    # Student-t noise with a (nearly) exact latent: the t distribution itself.
    heavy = bt.Predictive("price", np.array([0.0]), np.array([1e-4]), df=4.0, noise=2.0)
    assert heavy.quantile(0.975)[0] == pytest.approx(2.0 * stats.t.ppf(0.975, 4), rel=1e-4)
    assert heavy.logpdf(np.array([3.0]))[0] == pytest.approx(stats.t.logpdf(1.5, 4) - math.log(2.0), rel=1e-4)
    days = bt.evaluate(bt.Predictive("price", np.zeros(4), np.ones(4)), np.zeros(4), [0.1, -0.5, 1.5, 3.0])
    scores = bt.window_scores(days)
    assert (scores["coverage_50"], scores["coverage_80"], scores["coverage_95"]) == (0.5, 0.5, 0.75)
    assert scores["width_95"] == pytest.approx(2 * 1.959964, rel=1e-6)
    assert scores["nlpd"] == pytest.approx(-np.mean(stats.norm.logpdf([0.1, -0.5, 1.5, 3.0])))
    assert days["pit"][0] == pytest.approx(stats.norm.cdf(0.1))
    point_only = bt.window_scores(bt.evaluate(None, [1.0, 2.0], [1.0, 4.0]))
    assert point_only["rmse"] == pytest.approx(math.sqrt(2)) and point_only["nlpd"] is None
    assert point_only["coverage_95"] is None


def test_failed_fits_are_reported_with_their_reason():
    history = _history({2017: 252, 2018: 188})
    history.loc[history.year == 2017, "price"] = 50.0  # constant: no volatility to build a band from
    records = bt.run_batch(history, "naive", ["2018Q1"], lookback_years=1, stride=3, max_iter=10)
    by_model = {r["model"]: r for r in records}
    assert sorted(by_model) == sorted(bt.NAIVE_MODELS)
    assert by_model["last-value"]["status"] == "ok" and by_model["last-value"]["point"] == [50.0] * 63
    assert by_model["random-walk"]["status"] == "failed"
    assert by_model["random-walk"]["reason"].startswith("FloatingPointError: the forecast has non-finite values")
    assert by_model["average-curve"]["status"] == "failed"  # std 0: the book's standardisation cannot divide


def test_default_model_is_the_best_calibrated_nlpd():
    def row(ticker, model, coverage, nlpd):
        return {"ticker": ticker, "model": model, "quarters": {"coverage_95": coverage, "nlpd": nlpd}, "years": {}}

    table = [row("A", "wide", 0.98, 3.0), row("B", "wide", 0.90, 3.0), row("A", "sharp", 0.70, 1.0),
             row("B", "sharp", 0.95, 1.0), row("A", "random-walk", 0.95, 0.5), row("B", "random-walk", 0.95, 0.5)]
    chosen = bt.choose_default(table, ["wide", "sharp"], (0.85, 0.99))
    assert chosen["name"] == "wide" and chosen["calibrated"] and "['wide']" in chosen["why"]
    assert chosen["candidates"]["sharp"]["coverage_95"] == {"A": 0.70, "B": 0.95}
    fallback = bt.choose_default(table[2:], ["sharp"], (0.85, 0.99))
    assert fallback["name"] == "sharp" and not fallback["calibrated"] and fallback["why"].startswith("no model")


def test_batches_cover_every_window_of_every_model_once():
    windows = {"A": ["2017", "2017Q1", "2017Q2"], "B": ["2018Q1"]}
    batches = bt.plan_batches(windows, ["naive", "ou"], 2)
    assert batches[("A", "ou", 0)] == ["2017", "2017Q1"] and batches[("A", "ou", 1)] == ["2017Q2"]
    assert len(batches) == 2 * (2 + 1)
    for model in ("naive", "ou"):
        for ticker, names in windows.items():
            assert [n for (t, m, _), b in sorted(batches.items()) if (t, m) == (ticker, model) for n in b] == names


def test_paired_difference_against_hand_computed_values():
    by_model = {"m": {"2017Q1": {"nlpd": 2.0}, "2017Q2": {"nlpd": 3.0}, "2017Q3": {"nlpd": 1.0}, "2017": {"nlpd": 9.0}},
                "random-walk": {"2017Q1": {"nlpd": 2.5}, "2017Q2": {"nlpd": 2.0}, "2017Q3": {"nlpd": 2.0},
                                "2017": {"nlpd": 0.0}}}
    diffs = np.array([-0.5, 1.0, -1.0])  # quarters only: the year window is not paired
    got = bt.paired_difference(by_model, "m", "random-walk")
    assert got["windows"] == 3 and got["mean"] == pytest.approx(diffs.mean())
    assert got["se"] == pytest.approx(diffs.std(ddof=1) / math.sqrt(3))
    assert bt.paired_difference(by_model, "random-walk", "random-walk") is None

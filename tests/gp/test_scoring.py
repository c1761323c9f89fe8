"""GP forecast scoring: windows, the way back to prices, scores against baselines, and the forecast metrics."""

from __future__ import annotations

import numpy as np
import pytest

from tfos_lib.gp import forecast, scoring


def test_windows_are_years_or_the_books_63_day_quarters():
    assert scoring.Window.parse("2017") == scoring.Window("2017", 2017, 0, 252)
    assert scoring.Window.parse("2018q4") == scoring.Window("2018Q4", 2018, 189, 252)
    assert scoring.Window.parse("2018Q3").label == "2018Q3 (trading days 126-188 of 2018)"
    with pytest.raises(ValueError, match="'2018Q5' is not a window"):
        scoring.Window.parse("2018Q5")


def test_forecast_scores():
    truth = np.array([1.0, 2.0, 3.0, 4.0])
    assert forecast.point_errors(truth, truth + [1, -1, 1, -1]) == {"rmse": 1.0, "mae": 1.0}
    lower, upper = forecast.band(truth + 0.5, np.ones(4))
    assert forecast.coverage(truth, lower, upper) == 1.0
    assert forecast.coverage(truth + 10, lower, upper) == 0.0
    # N(0, 1) at its mean: -log(1 / sqrt(2 pi)) = 0.9189...
    assert forecast.gaussian_nlpd([0.0], [0.0], [1.0]) == pytest.approx(0.5 * np.log(2 * np.pi))
    assert forecast.gaussian_nlpd([2.0], [0.0], [1.0]) == pytest.approx(0.5 * np.log(2 * np.pi) + 2)


def test_scores_are_in_price_units_and_a_window_without_truth_says_so():
    window = scoring.Window.parse("2018Q4")
    years = {2018: {"first_price": 100.0, "scale": 10.0, "last_price": 130.0}}
    mapping = scoring.price_mapping(window, years)
    assert (mapping["anchor"], mapping["scale"]) == (100.0, 10.0)
    days = list(range(189, 252))
    fit = {"days": days, "mean": [3.0] * len(days), "variance": [1.0] * len(days)}  # price 130 +- 19.6
    truth = {189: 130.0, 190: 140.0, 191: 160.0}
    baselines = {"last_value": np.full(len(days), 130.0), "year_average": np.full(len(days), np.nan)}
    scores = scoring.score(window, fit, mapping, truth, baselines)
    assert scores["ground_truth"] and scores["scored_days"] == 3 and scores["predicted_days"] == 63
    assert scores["gp"]["rmse"] == pytest.approx(np.sqrt((0 + 100 + 900) / 3))
    assert scores["gp"]["coverage_95"] == pytest.approx(2 / 3)
    assert scores["baselines"]["last_value"]["mae"] == pytest.approx(40 / 3)
    assert scores["baselines"]["year_average"] is None
    assert scoring.score(window, fit, mapping, {}, baselines) == {
        "period": window.label, "predicted_days": 63, "scored_days": 0, "ground_truth": False}
    # A whole new year: last year's last price and std stand in for the unknown ones.
    assert scoring.price_mapping(scoring.Window.parse("2019"), {2018: years[2018]})["anchor"] == 130.0


"""The chapter 6 job: Yahoo CSV reading and its errors, the book's preprocessing, GP fits in parallel, scored.

The scoring functions and the GP model have their own tests in tests/gp/."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs import stock_gp
from tfos_lib.datasets import stocks
from tfos_lib.datasets.stocks import StockDataError
from tfos_lib.gp import backtest as bt
from tfos_lib.gp import scoring

REPO = str(Path(__file__).resolve().parents[2])  # tests/<group>/test_x.py -> the repository


def _write(directory, start="2015-01-01", end="2018-09-28", names=("GROWTH", "INDUSTRIAL"), seed=0):
    tickers = {name: stocks.DEFAULT_TICKERS[name] for name in names}
    return stocks.write_default_data(str(directory), seed=seed, start=start, end=end, tickers=tickers)


def _lines(path):
    with open(path) as f:
        return f.read().splitlines()


def _rewrite(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _run(data, out, *options):
    return stock_gp.main(["--data-dir", str(data), "--output-dir", str(out), *options])


# ---------------------------------------------------------------------------------------------
# Pure parts.


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--num-workers", "2"], "unknown option(s) --num-workers"),
        (["--task-timeout", "0"], "--task-timeout must be > 0; got 0."),
        (["--windows", "2017,2017"], "lists a window twice"),
        (["--windows", "2008", "--train-start", "2008"], "no later than --train-start"),
        (["--kernel", "linear"], "invalid choice"),
        (["--backtest-models", "book,arima"], "--backtest-models 'book,arima': give distinct names among book, sum"),
        (["--lookback-years", "0"], "--lookback-years must be >= 1; got 0."),
    ],
)
def test_options_that_cannot_work_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as caught:
        stock_gp.main(argv)
    assert caught.value.code == 2 and message in capsys.readouterr().err


def test_generated_files_are_in_yahoos_format(tmp_path):
    paths = _write(tmp_path, start="2016-01-01", end="2017-12-31")
    lines = _lines(paths["INDUSTRIAL"])
    assert lines[0] == "Date,Open,High,Low,Close,Adj Close,Volume"
    assert lines[1].startswith("2016-01-04,") and len(lines[1].split(",")[1].split(".")[1]) == 6
    frame = pd.read_csv(paths["INDUSTRIAL"], parse_dates=["Date"])
    assert sorted(frame.Date.dt.year.value_counts().to_dict().items()) == [(2016, 252), (2017, 251)]  # NYSE calendar
    assert (frame.High >= frame[["Open", "Close"]].max(axis=1)).all() and (frame.Low <= frame[["Open", "Close"]].min(axis=1)).all()
    assert (frame["Adj Close"] < frame.Close).iloc[:-30].all()  # a dividend payer
    assert frame.Volume.dtype == np.int64 and (frame.Volume > 0).all()


# ---------------------------------------------------------------------------------------------
# Reading and checking the files (Spark, no TensorFlow).


def test_read_keeps_file_lines_and_skips_yahoos_null_days(spark, tmp_path):
    path = _write(tmp_path, start="2017-01-01", end="2017-03-31", names=("GROWTH",))["GROWTH"]
    lines = _lines(path)
    lines.insert(5, "2017-01-07,null,null,null,null,null,null")  # how Yahoo marks a day without prices
    _rewrite(path, lines)
    prices = stocks.read_prices(spark, stocks.find_csv_files(str(tmp_path)))
    rows = prices.orderBy("line").collect()
    assert len(rows) == len(lines) - 2 and rows[0].line == 2 and rows[0].ticker == "GROWTH" and rows[0].file == "GROWTH.csv"
    assert 6 not in [r.line for r in rows]
    assert rows[-1].price == pytest.approx(float(lines[-1].split(",")[5]))
    days = stock_gp.with_trading_days(prices).where("year = 2017").orderBy("date").collect()
    assert [r.day for r in days] == list(range(len(days)))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda ls: [ls[0].replace(",Adj Close", "")] + [",".join(l.split(",")[:5] + l.split(",")[6:]) for l in ls[1:]],
         r"GROWTH\.csv: line 1 \(the header\) has the columns .* without \['Adj Close'\]"),
        (lambda ls: ls[:9] + [",".join(ls[9].split(",")[:5] + ["abc"] + ls[9].split(",")[6:])] + ls[10:],
         r"GROWTH\.csv, line 10: Adj Close 'abc' is not a number"),
        (lambda ls: ls[:9] + [ls[9].replace(ls[9][:10], "2016-13-45")] + ls[10:],
         r"GROWTH\.csv, line 10: Date '2016-13-45' is not a date"),
        (lambda ls: ls[:19] + [ls[20], ls[19]] + ls[21:],
         r"GROWTH\.csv, line 21: has the date \S+, earlier than \S+ on line 20: rows must be sorted by date"),
        (lambda ls: ls[:30] + [ls[29]] + ls[30:], r"GROWTH\.csv, line 31: repeats the date \S+ of line 30"),
        (lambda ls: ls[:40] + [ls[40].rsplit(",", 2)[0]] + ls[41:], r"GROWTH\.csv, line 41: has 5 fields, the header has 7"),
        (lambda ls: ls[:50] + [ls[50].replace(ls[50].split(",")[5], "-1.5")] + ls[51:],
         r"GROWTH\.csv, line 51: Adj Close -1.5 is not a positive price"),
    ],
    ids=["missing-column", "non-numeric-price", "bad-date", "unsorted", "duplicate-date", "short-row", "negative-price"],
)
def test_bad_rows_are_named_by_file_and_line(spark, tmp_path, edit, message):
    path = _write(tmp_path, start="2016-01-01", end="2017-12-31")["GROWTH"]
    _rewrite(path, edit(_lines(path)))
    with pytest.raises(StockDataError, match=message):
        _run(tmp_path, tmp_path / "out", "--train-start", "2016", "--windows", "2017")


def test_history_starting_after_the_training_start_is_refused(spark, tmp_path):
    _write(tmp_path, start="2016-03-01", end="2017-12-31")
    with pytest.raises(StockDataError, match=r"GROWTH\.csv: the history starts 2016-03-01 \(line 2\).*--train-start 2017 or later"):
        _run(tmp_path, tmp_path / "out", "--train-start", "2016", "--windows", "2017")


def test_history_ending_before_the_window_is_refused(spark, tmp_path):
    _write(tmp_path, start="2016-01-01", end="2017-05-31")
    with pytest.raises(StockDataError, match=r"GROWTH\.csv: the history ends 2017-05-31 \(line 356\) with 103 trading days of 2017"):
        _run(tmp_path, tmp_path / "out", "--train-start", "2016", "--windows", "2017Q3")
    with pytest.raises(StockDataError, match=r"GROWTH\.csv: 103 trading days dated 2017 \(lines 254-356\); window 2018"):
        _run(tmp_path, tmp_path / "out", "--train-start", "2016", "--windows", "2018")


def test_missing_or_empty_data_is_named(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match="no .csv files"):
        _run(tmp_path, tmp_path / "out")
    (tmp_path / "EMPTY.csv").write_text("")
    with pytest.raises(StockDataError, match=r"EMPTY\.csv: the file is empty"):
        _run(tmp_path, tmp_path / "out")
    (tmp_path / "EMPTY.csv").write_text("Date,Open,High,Low,Close,Adj Close,Volume\n")
    with pytest.raises(StockDataError, match=r"EMPTY\.csv: no prices after the header"):
        _run(tmp_path, tmp_path / "out")


def test_book_preprocessing_on_the_real_files(spark, book_data):
    prices = stocks.read_prices(spark, stocks.find_csv_files(book_data("ch06")))
    days = stock_gp.with_trading_days(prices)
    per_year = {(r.ticker, r.year): r["count"] for r in days.groupBy("ticker", "year").count().collect()}
    book = dict(zip(range(2008, 2019), (253, 252, 252, 252, 250, 252, 252, 252, 252, 251, 188)))  # spec 6.2
    for ticker in ("GE", "GOOG", "NFLX"):
        assert {y: per_year[(ticker, y)] for y in book} == book
    windows = [scoring.Window.parse(w) for w in ("2017", "2018Q4")]
    stock_gp.check_history(days, windows, 2008)  # the book's two problems are accepted
    train, _, truth, _ = stock_gp.preprocess(spark, days, windows, 2008)
    sizes = {(r.ticker, r.window): r["count"] for r in train.groupBy("ticker", "window").count().collect()}
    # The book's N = 2,268 and 2,708 included mean-filled days (2012 has 250, 2017 251, 2018 188 of 189).
    assert {w for (t, w), n in sizes.items() if n == 9 * 252 - 2} == {"2017"}
    assert {w for (t, w), n in sizes.items() if n == 10 * 252 - 3 + 188} == {"2018Q4"}
    ge = train.where("ticker = 'GE' and window = '2017' and year = 2016").orderBy("day").toPandas()
    assert ge.y.iloc[0] == 0.0 and ge.y.std(ddof=0) == pytest.approx(1.0, abs=1e-12)  # np.std, not stddev_samp
    assert truth.where("window = '2018Q4'").count() == 0  # the data ends 2018-09-28


# ---------------------------------------------------------------------------------------------
# GP fits (TensorFlow, GPflow).



def test_smoke_default_data_and_a_window_without_ground_truth(spark, tmp_path, check_metrics_envelope, saved_figures):
    """No --data-dir: the synthetic files, which end 2018-09-28 like the book's; 2018Q4 cannot be scored."""
    out = tmp_path / "out"
    metrics = stock_gp.main(["--output-dir", str(out), "--train-start", "2017", "--windows", "2018Q4", "--max-iter", "30"])
    saved = json.loads((out / "metrics.json").read_text())
    check_metrics_envelope(saved, "stock_gp", training=False)
    results = saved["results"]
    assert saved["data"]["source"] == "synthetic (seed 0)" and results["failed"] == [] and results["table"] == []
    assert saved["data"]["tickers"] == 3 and saved["data"]["training_points"] == 3 * (251 + 188)
    assert sorted(results["forecasts"]) == sorted(stocks.DEFAULT_TICKERS)
    assert sorted(os.listdir(out / "default_data")) == sorted(f"{t}.csv" for t in stocks.DEFAULT_TICKERS)
    for ticker, windows in results["forecasts"].items():
        q4 = windows["2018Q4"]
        assert q4["status"] == "ok" and q4["ground_truth"] is False and "gp" not in q4
        assert f"{ticker}.csv ends 2018-09-28" in q4["note"] and "2018Q3" in q4["note"]
        assert q4["fit"]["train_points"] == 251 + 188 and q4["fit"]["iterations"] <= 30
        assert q4["fit"]["hyperparameters"][".likelihood.variance"] > 0
        (plot,) = saved_figures[f"{ticker}_2018Q4_predicted.png"]  # the forecast with no actual prices to draw
        assert "actual" not in plot["lines"] and len(plot["lines"]["predicted"]) == 63
        assert plot["lines"]["history (training)"] and "95% confidence interval" in plot["legend"]
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 3 * 63 and predictions.actual.isna().all()
    assert (predictions.lower_95 < predictions["mean"]).all() and (predictions["mean"] < predictions.upper_95).all()
    assert metrics["results"]["fits"]["count"] == 3


def _seasonal_csv(path, years=range(2014, 2019), end="2018-09-28"):
    """Every year the same smooth shape: a GP on [year, day] should carry it into the next year."""
    days = stocks.trading_days(f"{years[0]}-01-01", end)
    day = pd.Series(days).groupby(days.year).cumcount().to_numpy()
    noise = np.random.default_rng(0).normal(0, 0.2, len(day))
    close = 100 + 8 * np.sin(2 * np.pi * day / 252) + 3 * np.sin(6 * np.pi * day / 252) + noise
    frame = pd.DataFrame({"Date": days.strftime("%Y-%m-%d"), "Open": close, "High": close + 1, "Low": close - 1,
                          "Close": close, "Adj Close": close, "Volume": 1000})
    return stocks.write_yahoo_csv(path, frame)


def test_a_repeating_yearly_pattern_is_learned(spark, tmp_path):
    """Alignment, standardisation and the way back to prices together: the GP beats carrying the last price.

    (A quarter window is not asserted: the book standardises the window's year with its
    known days only, which distorts a half year's scale; see the README.)
    """
    _seasonal_csv(tmp_path / "WAVE.csv")
    metrics = _run(tmp_path, tmp_path / "out", "--train-start", "2015", "--windows", "2017")
    (row,) = metrics["results"]["table"]
    assert (row["ticker"], row["window"], row["days"]) == ("WAVE", "2017", 251)
    entry = metrics["results"]["forecasts"]["WAVE"]["2017"]
    assert 0 <= entry["gp"]["coverage_95"] <= 1 and np.isfinite(entry["gp"]["nlpd"])
    assert row["gp_rmse"] < 0.3 * row["last_value_rmse"], row
    assert row["year_average_rmse"] < 0.3 * row["last_value_rmse"], row  # the same pattern, as a baseline


def test_fits_spread_over_two_executors_on_local_cluster(tmp_path, book_data):
    """The README command with 2 executors, as a user runs it (its own Spark application), on the book's files."""
    data = book_data("ch06")
    out = tmp_path / "out"
    run = subprocess.run(
        [os.path.join(REPO, "spark-submit.sh"), "stock_gp", "--master", "local-cluster[2,1,2048]", "--",
         "--data-dir", data, "--output-dir", str(out), "--train-start", "2017", "--windows", "2018Q3"],
        capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stderr[-5000:]
    results = json.loads((out / "metrics.json").read_text())["results"]
    assert results["fits"]["count"] == 3 and results["failed"] == []
    assert len(results["fits"]["executors"]) == 2, results["fits"]  # 3 fits, 2 single-core executors
    assert [(r["window"], r["days"]) for r in results["table"]] == [("2018Q3", 62)] * 3  # day 188 is past the data


def test_tiny_backtest_in_spark_tasks(spark, tmp_path):
    """--backtest: every window of 2018 per ticker and model, in batches of Spark tasks (in this session: the
    2-executor spread is the test above's)."""
    data = tmp_path / "data"
    _write(data, start="2016-01-01")
    out = tmp_path / "out"
    _run(data, out, "--backtest", "--backtest-start", "2018", "--lookback-years", "1",
         "--backtest-models", "book,walk-regime", "--backtest-max-iter", "20", "--windows-per-task", "3")
    metrics = json.loads((out / "metrics.json").read_text())
    backtest = metrics["results"]["backtest"]
    assert backtest["windows"] == {t: ["2018Q1", "2018Q2", "2018Q3"] for t in ("GROWTH", "INDUSTRIAL")}
    cost = backtest["cost"]
    assert (cost["fits"], cost["naive_forecasts"], cost["failed"], cost["tasks"]) == (2 * 3 * 2, 2 * 3 * 3, 0, 2 * 3)
    assert len(cost["executors"]) == 1, cost  # local[2]: one executor, the driver
    assert 0 < cost["fit_seconds"]["median"] <= cost["fit_seconds"]["p95"]
    assert {(r["ticker"], r["model"]) for r in backtest["table"]} == {
        (t, m) for t in ("GROWTH", "INDUSTRIAL") for m in ("book", "walk-regime", *bt.NAIVE_MODELS)}
    for row in backtest["table"]:
        quarters = row["quarters"]
        assert quarters["windows"] == 3 and row["years"] == {"windows": 0}
        assert (quarters["nlpd"] is None) == (row["model"] in ("last-value", "average-curve"))
        paired = row["nlpd_vs_random_walk"]
        assert (paired is None) == (row["model"] in ("last-value", "average-curve", "random-walk"))
        if quarters["nlpd"] is not None:
            assert paired is None or paired["windows"] == 3
            assert 0 <= quarters["coverage_50"] <= quarters["coverage_80"] <= quarters["coverage_95"] <= 1
            assert quarters["width_50"] < quarters["width_80"] < quarters["width_95"]
    default = backtest["default_model"]
    assert default["name"] in ("book", "walk-regime") and default["why"]
    assert set(default["candidates"]) == {"book", "walk-regime"}
    # The files as written (the smoke test checks what forecast plots draw): each decodes to its figure's size.
    from PIL import Image

    sizes = {"calibration.png": (700, 600), "GROWTH_backtest.png": (1100, 700),
             f"GROWTH_2018Q3_backtest_{default['name']}.png": (1200, 600)}
    assert {png: Image.open(out / png).size for png in sizes} == sizes
    predictions = pd.read_csv(out / "backtest_predictions.csv")
    assert len(predictions) == 2 * 5 * (63 + 63 + 62)  # tickers x models (2 GP + 3 naive) x days scored

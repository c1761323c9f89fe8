"""Stock prices with Gaussian processes: one GPflow fit per ticker and window, fanned out over Spark executors.

Book: "TensorFlow Machine Learning Projects" (Packt, 2018), chapter 6. Each
calendar year of a stock is one series: its adjusted closes are standardised
within the year and shifted to start at 0, and day ``d`` of year ``y`` (the d-th
trading day, at most 252) is the input ``[y, d]`` of a GP regression with the
book's kernel, RBF(variance 63, lengthscale 1) + White(1e-10), fitted by maximum
likelihood (L-BFGS). The book trains on 2008-2016 to predict 2017, and on
2008-2018Q3 to predict 2018Q4, for GOOG, NFLX and GE, and shows only plots.

This job fits every (ticker, window) as one independent task with
``tfos_lib.parallel.run_tasks`` (one Spark task and one fresh process each), and
scores what the book did not: RMSE and MAE in price units, coverage of the 95%
band, mean negative log predictive density, against two naive baselines (the
last price carried forward; the average of the training years' normalised
curves). A quarter ``YYYYQn`` is the book's: trading days 63(n-1)..63n-1 of the year.

``--backtest`` asks which model to trust: a rolling-origin backtest forecasts
every quarter and every year from ``--backtest-start`` (2010) to the data's end,
each trained only on the ``--lookback-years`` before it, with the book's kernel
(the reference) and GPs whose hyperparameters are learned by marginal likelihood
with priors, on log prices (``tfos_lib.gp.models``): RBF trend + Matern 1/2 +
white ("sum"), RBF + yearly periodic + white ("periodic"), a long Matern 1/2 +
white ("ou"), a Brownian motion pinned at the last day + a random drift + white
("walk", the GP form of the random walk), that walk with one volatility learned for the
last half year and one before, its band their even mix, on 4 years of history ("walk-regime",
volatility clusters; the default), "sum" with a Student-t likelihood ("student-t"), and "sum"
on prices ("sum-price", to measure which space calibrates). One
``tfos_lib.parallel`` task per (ticker, model, batch of ``--windows-per-task``
windows). Scores per window and per ticker and model: RMSE, MAE, NLPD, coverage
and width of the 50/80/95% bands, for the naive forecasts too (last value,
average curve, random walk with drift); the default model is the best mean NLPD
among those whose 95% band covers 0.85-0.99 on every ticker's quarters. Measured on the
book's files (35 quarters 2010Q1-2018Q3 each; GE / GOOG / NFLX): "walk-regime" covers 0.93 /
0.96 / 0.91 with mean NLPD 1.99 / 5.15 / 3.78 nats/day, against the random walk's 2.07 / 5.17 /
3.88 and the book kernel's 22.1 / 26.0 / 25.0 (README: standard errors, the variants tried).

Data: one Yahoo Finance CSV per ticker (Date,Open,High,Low,Close,Adj Close,Volume)
in ``--data-dir``; the ticker is the file name. Without ``--data-dir``: three
synthetic tickers written in that format (``tfos_lib.datasets.stocks``).

Run::

    ./spark-submit.sh stock_gp                                            # synthetic data
    ./spark-submit.sh stock_gp --master 'local-cluster[2,1,2048]' -- --data-dir /data/ch06
    ./spark-submit.sh stock_gp -- --data-dir /data/ch06 --windows 2017 --kernel rbf-ard
    ./spark-submit.sh stock_gp --master 'local-cluster[2,1,2048]' -- --data-dir /data/ch06 --backtest

Writes to ``--output-dir``: metrics.json, predictions.csv (mean and 95% band per
day, in prices), one ``<TICKER>_<WINDOW>_predicted.png`` per ticker and window,
and, without ``--data-dir``, the synthetic CSVs in default_data/. With ``--backtest``:
metrics.json, backtest_predictions.csv, calibration.png, ``<TICKER>_backtest.png``
(coverage and NLPD per quarter) and the default model's forecasts of 2017 and 2018Q3. No model is
saved (neither does the book): a GP regression is its training data plus four
hyperparameters, which metrics.json records.
"""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import dataclass

import numpy as np

import tfos_lib
from tfos_lib import job, parallel, storage
from tfos_lib.datasets import stocks
from tfos_lib.gp import backtest as bt
from tfos_lib.gp.scoring import YEAR_DAYS, Window, collect_inputs, summarize

# History may stop this many trading days short of what a window asks for: the
# book's own Q4 2018 window has 188 of the 189 trading days of 2018's Q1-Q3.
SLACK_DAYS = 5
KERNELS = ("book", "rbf-ard", "matern32")
# What fit_fn returns for each (ticker, window): the typed columns of tfos_lib.parallel's results.
RESULT_SCHEMA = (
    "days array<int>, mean array<double>, variance array<double>, train_points long, converged boolean, iterations long, "
    "optimizer_message string, log_marginal_likelihood double, hyperparameters string, fit_seconds double"
)
# What one backtest task (ticker, model, batch of windows) returns: one record per (window, model), failed ones too.
BACKTEST_SCHEMA = (
    "fits array<struct<window string, model string, status string, reason string, error string, train_points long, "
    "iterations long, converged boolean, fit_seconds double, hyperparameters string, days array<int>, "
    + ", ".join(f"{name} array<double>" for name in bt.DAY_COLUMNS) + ">>"
)
BOOK_WINDOWS = ("2017", "2018Q3")  # the book's year and the held-out quarter before its 2018Q4: plotted
BOOK_REFERENCE = {
    "numbers": "none: the book reports no metric for chapter 6, only plots (normalised units)",
    "statements": {
        "NFLX 2017": "the model predicts values below the actuals (the actuals leave the band after ~day 75)",
        "GE 2017": "the model has captured an accurate trend (actuals inside a band of about +-3)",
        "GOOG 2017": "overall upward trend, very wide confidence bands",
        "all": "predictions mostly within the 95% confidence interval, but far from perfect",
    },
    "source": "chapter 6, L3715-L3811 of the seed text",
}


@dataclass(frozen=True)
class Config(job.JobConfig):
    """Options. Not a ``job.TrainingConfig``: every fit is one Spark task, and more executors run more
    fits at once, so the launcher's options (--num-workers, --backend, --epochs, ...) do not apply."""

    output_dir: str = job.option("output/stock_gp", "where results go")
    windows: str = job.option(
        "2017,2018Q3,2018Q4",
        "periods to forecast, comma-separated: a year (2017, the book's first problem) or a 63-trading-day quarter "
        "(2018Q4, the book's second; 2018Q3 is the held-out split with truth)",
    )
    train_start: int = job.option(2008, "first (full) training year, the book's 2008")
    kernel: str = job.option(
        "book",
        "book: RBF(variance 63, lengthscale 1) + White(1e-10) on [year, day]; rbf-ard: one lengthscale per input; "
        "matern32: Matern 3/2 + White",
        choices=KERNELS,
    )
    max_iter: int = job.option(1000, "L-BFGS iterations at most (GPflow 1's ScipyOptimizer default)", min=1)
    task_timeout: float | None = job.option(
        None, "seconds before a fit is killed and reported failed; omitted: no limit", greater_than=0
    )
    backtest: bool = job.option(
        False, "instead of --windows: a rolling-origin backtest of every quarter and year from --backtest-start to the "
        "data's end, each trained only on the days before it, per ticker and model, with naive baselines"
    )
    backtest_start: int = job.option(2010, "first year the backtest forecasts", min=1900)
    backtest_models: str = job.option(
        "book,sum,periodic,student-t,ou,walk,walk-regime,sum-price",
        f"GP models the backtest fits, comma-separated, among {', '.join(bt.GP_MODELS)} (the naive forecasts always run)",
    )
    lookback_years: int = job.option(2, "backtest: each fit trains on the last N*252 trading days before its window", min=1)
    stride: int = job.option(3, "backtest: the learned GPs train on every N-th day, counted back from the last", min=1)
    backtest_max_iter: int = job.option(100, "backtest: L-BFGS iterations at most per fit", min=1)
    windows_per_task: int = job.option(
        22, "backtest: windows one task fits in a row (each task is one fresh process and one TensorFlow import)", min=1
    )

    def __post_init__(self):
        super().__post_init__()
        windows = self.parsed_windows
        if len({w.name for w in windows}) != len(windows):
            raise ValueError(f"--windows lists a window twice: {self.windows!r}.")
        self.parsed_models  # noqa: B018 - validates --backtest-models
        late = [w.name for w in windows if w.year <= self.train_start]
        if late:
            raise ValueError(
                f"--windows {late} start no later than --train-start {self.train_start}: a window needs at least one "
                "full training year before it."
            )

    @property
    def parsed_models(self) -> list[str]:
        models = [m.strip() for m in self.backtest_models.split(",") if m.strip()]
        unknown = [m for m in models if m not in bt.GP_MODELS]
        if unknown or not models or len(set(models)) != len(models):
            raise ValueError(f"--backtest-models {self.backtest_models!r}: give distinct names among {', '.join(bt.GP_MODELS)}.")
        return models

    @property
    def parsed_windows(self) -> list[Window]:
        parts = [p for p in self.windows.split(",") if p.strip()]
        if not parts:
            raise ValueError("--windows is empty; give at least one, e.g. 2017.")
        return [Window.parse(p) for p in parts]


# ---------------------------------------------------------------------------------------------
# Data (driver; the work is Spark's).


def load_data(spark, cfg: Config):
    """Reads and checks the CSVs (or writes the synthetic ones first). Returns ``(prices, source)``."""
    if cfg.data_dir:
        files, source = stocks.find_csv_files(cfg.data_dir), f"yahoo-csv:{cfg.data_dir}"
    else:
        directory = storage.default_data_dir(cfg.output_dir, "default_data", dict(spark.sparkContext.getConf().getAll()))
        files, source = stocks.write_default_data(directory, seed=cfg.seed), f"synthetic (seed {cfg.seed})"
    return stocks.read_prices(spark, files), source


def with_trading_days(prices):
    """Adds ``year`` and ``day``, the book's alignment: day d is the d-th trading day (from 0) of its year."""
    from pyspark.sql import Window as W
    from pyspark.sql import functions as F

    by_year = W.partitionBy("ticker", "year").orderBy("date")
    return prices.withColumn("year", F.year("date")).withColumn("day", F.row_number().over(by_year) - 1)


def check_history(days, windows: list[Window], train_start: int) -> None:
    """Refuses windows the files cannot support, naming the file and line.

    Raises:
        stocks.StockDataError: history starts after ``train_start``'s first week,
            a training year has fewer than 252 - 5 trading days, or the data stops
            more than 5 trading days before a window starts.
    """
    import datetime

    from pyspark.sql import functions as F

    rows = (
        days.groupBy("ticker", "file", "year")
        .agg(F.count("*").alias("n"), F.min("date").alias("first_date"), F.min_by("line", "date").alias("first_line"),
             F.max("date").alias("last_date"), F.max_by("line", "date").alias("last_line"))
        .collect()
    )
    years: dict[str, dict[int, object]] = {}
    for row in rows:
        years.setdefault(row.ticker, {})[row.year] = row
    for ticker, by_year in sorted(years.items()):
        first = by_year[min(by_year)]
        last = by_year[max(by_year)]
        file = first.file
        if first.first_date > datetime.date(train_start, 1, 7):
            full = first.first_date.year + (first.first_date > datetime.date(first.first_date.year, 1, 7))
            raise stocks.StockDataError(
                f"{file}: the history starts {first.first_date} (line {first.first_line}), but training starts with "
                f"the full year {train_start} (--train-start). Use --train-start {full} or later, or a file with more history."
            )
        for window in windows:
            for year in range(train_start, window.year):
                row = by_year.get(year)
                n = row.n if row else 0
                if n < YEAR_DAYS - SLACK_DAYS:
                    where = f"lines {row.first_line}-{row.last_line}" if row else f"the file ends {last.last_date} (line {last.last_line})"
                    raise stocks.StockDataError(
                        f"{file}: {n} trading days dated {year} ({where}); window {window.name} trains on the full "
                        f"years {train_start}-{window.year - 1} and needs at least {YEAR_DAYS - SLACK_DAYS} in each."
                    )
            known = by_year[window.year].n if window.year in by_year else 0
            if window.first_day and known < window.first_day - SLACK_DAYS:
                raise stocks.StockDataError(
                    f"{file}: the history ends {last.last_date} (line {last.last_line}) with {known} trading days of "
                    f"{window.year}; window {window.label} trains on the {window.first_day} days before it "
                    f"(at least {window.first_day - SLACK_DAYS} needed)."
                )


def preprocess(spark, days, windows: list[Window], train_start: int):
    """The book's preprocessing, per (ticker, window), in Spark.

    Only what a forecaster knows before the window is used: full years
    ``train_start..year-1`` and the window's year up to the window. Each year is
    standardised with its own mean and population std (``np.std``'s ddof=0) and
    shifted to start at 0; that is ``y = (price - first price of the year) / std``.
    Days past 252 are dropped. Unlike the book, missing days are not filled with
    the year's mean (its plots show the jump that made): a GP needs no full grid.

    Returns:
        ``(train, years, truth, average)`` DataFrames: training points
        ``(ticker, window, year, day, y)``; per-year constants ``(ticker, window,
        year, first_price, scale, last_price, last_date, days)``; held-out prices
        ``(ticker, window, day, date, price)``; and the training years' mean curve
        ``(ticker, window, day, y)`` (a baseline).
    """
    from pyspark.sql import Window as W
    from pyspark.sql import functions as F

    windows_df = spark.createDataFrame(
        [(w.name, w.year, w.first_day, w.end_day) for w in windows],
        "window string, window_year int, first_day int, end_day int",
    )
    crossed = days.crossJoin(F.broadcast(windows_df))
    in_window_year = F.col("year") == F.col("window_year")
    known = crossed.where(
        (F.col("year") >= train_start)
        & ((F.col("year") < F.col("window_year")) | (in_window_year & (F.col("day") < F.col("first_day"))))
    )
    per_year = W.partitionBy("ticker", "window", "year")
    normalized = (
        known.withColumn("first_price", F.min_by("price", "day").over(per_year))
        .withColumn("scale", F.stddev_pop("price").over(per_year))
        .withColumn("y", F.try_divide(F.col("price") - F.col("first_price"), F.col("scale")))
    )
    points = normalized.where(F.col("day") < YEAR_DAYS)
    train = points.select("ticker", "window", "year", "day", "y")
    years = normalized.groupBy("ticker", "window", "year").agg(
        F.first("file").alias("file"), F.first("first_price").alias("first_price"), F.first("scale").alias("scale"),
        F.max_by("price", "day").alias("last_price"), F.max("date").alias("last_date"), F.count("*").alias("days"),
    )
    truth = crossed.where(in_window_year & (F.col("day") >= F.col("first_day")) & (F.col("day") < F.col("end_day")))
    truth = truth.select("ticker", "window", "day", "date", "price")
    average = (
        points.where(F.col("year") < F.col("window_year"))
        .groupBy("ticker", "window", "day")
        .agg(F.avg("y").alias("y"))
    )
    return train, years, truth, average


# ---------------------------------------------------------------------------------------------
# The model and the fit (one Spark task and one fresh process per ticker and window).


def build_model(cfg: Config, x: np.ndarray, y: np.ndarray):
    """The GP: inputs ``(N, 2)`` = [year, trading day], float64; targets ``(N, 1)`` normalised prices."""
    tfos_lib.import_tensorflow()
    import gpflow

    from tfos_lib.gp.model import FastGradientGPR

    kernels = gpflow.kernels
    if cfg.kernel == "book":
        # gpflow.kernels.RBF(2, lengthscales=1, variance=63) + White(2, variance=1e-10) in GPflow 1.
        base = kernels.SquaredExponential(variance=63.0, lengthscales=1.0)
    elif cfg.kernel == "rbf-ard":
        base = kernels.SquaredExponential(variance=63.0, lengthscales=[1.0, 1.0])
    else:
        base = kernels.Matern32(variance=63.0, lengthscales=1.0)
    # GPR adds a Gaussian likelihood (noise variance 1.0, trained), as GPflow 1's GPR did.
    return FastGradientGPR((x, y), kernel=base + kernels.White(variance=1e-10))


def fit_fn(task: parallel.Task, rows, cfg: Config) -> dict:
    """Runs in its own process on an executor: fits one (ticker, window) GP, predicts the window's days."""
    tfos_lib.import_tensorflow()
    import gpflow

    _, window_name = task.key
    window = Window.parse(window_name)
    rows = rows.sort_values(["year", "day"])
    x = rows[["year", "day"]].to_numpy(np.float64)
    y = rows[["y"]].to_numpy(np.float64)
    model = build_model(cfg, x, y)
    started = time.perf_counter()
    result = gpflow.optimizers.Scipy().minimize(
        model.training_loss, model.trainable_variables, options={"maxiter": cfg.max_iter}
    )
    fit_seconds = time.perf_counter() - started
    days = np.arange(window.first_day, window.end_day)
    x_new = np.column_stack([np.full(len(days), float(window.year)), days.astype(np.float64)])
    mean, variance = model.predict_y(x_new)  # includes the noise, as the book's band did
    hyperparameters = {name: np.asarray(value).tolist() for name, value in gpflow.utilities.read_values(model).items()}
    return {
        "days": days.tolist(),
        "mean": mean.numpy().ravel().tolist(),
        "variance": variance.numpy().ravel().tolist(),
        "train_points": len(rows),
        "converged": bool(result.success),
        "optimizer_message": str(result.message),
        "iterations": int(result.nit),
        "log_marginal_likelihood": float(model.log_marginal_likelihood().numpy()),
        "hyperparameters": json.dumps(hyperparameters),
        "fit_seconds": fit_seconds,
    }

# ---------------------------------------------------------------------------------------------
# The rolling-origin backtest (--backtest): one task per (ticker, model, batch of windows).


def backtest_fn(task: parallel.Task, rows, cfg: Config, batches: dict) -> dict:
    """Runs in its own process on an executor: one ticker's windows of one batch, with one model."""
    ticker, model, batch = task.key
    if model != "naive":
        tfos_lib.import_tensorflow()  # thread pools sized to the task before GPflow imports TensorFlow
    fits = bt.run_batch(rows, model, batches[(ticker, model, batch)], lookback_years=cfg.lookback_years,
                        stride=cfg.stride, max_iter=cfg.backtest_max_iter)
    return {"fits": fits}


def run_backtest(spark, cfg: Config, days) -> tuple[list[dict], dict]:
    """Fans the backtest out; returns every (ticker, window, model) record (failed tasks' windows too) and costs."""
    from pyspark.sql import functions as F

    models = cfg.parsed_models
    check_history(days, [Window.parse(f"{cfg.backtest_start}Q1")], cfg.backtest_start - cfg.lookback_years)
    history_years = max([cfg.lookback_years] + [bt.HISTORY_YEARS.get(m, 0) for m in models])  # where the data has it
    per_year: dict[str, dict[int, int]] = {}
    for row in days.groupBy("ticker", "year").count().collect():
        per_year.setdefault(row.ticker, {})[row.year] = row["count"]
    windows = {ticker: [w.name for w in bt.backtest_windows(cfg.backtest_start, years)] for ticker, years in per_year.items()}
    empty = sorted(t for t, names in windows.items() if not names)
    if empty:
        raise stocks.StockDataError(f"{empty[0]}: no window from --backtest-start {cfg.backtest_start} has data (the "
                                    f"history ends in {max(per_year[empty[0]])}); use an earlier --backtest-start.")
    batches = bt.plan_batches(windows, ("naive", *models), cfg.windows_per_task)
    tasks = spark.createDataFrame(list(batches), "ticker string, model string, batch int")
    rows = (days.where(F.col("year") >= cfg.backtest_start - history_years)
            .select("ticker", "year", "day", "price").join(F.broadcast(tasks), "ticker"))
    started = time.perf_counter()
    results = parallel.run_tasks(
        backtest_fn, rows, cfg, batches, key=["ticker", "model", "batch"], result_schema=BACKTEST_SCHEMA,
        spark=spark, output_dir=cfg.output_dir, timeout=cfg.task_timeout,
    ).collect()
    wall = time.perf_counter() - started
    records = []
    for result in results:
        key = (result.ticker, result.model, result.batch)
        if result.status == parallel.OK:
            records += [{**fit.asDict(recursive=True), "ticker": result.ticker} for fit in result.fits]
            continue
        reason = f"task failed: {parallel._last_line(result.error)}"  # a crash or a timeout: every fit of the batch
        for name in batches[key]:
            for model in bt.NAIVE_MODELS if result.model == "naive" else (result.model,):
                records.append({"ticker": result.ticker, "window": name, "model": model, "status": "failed",
                                "reason": reason, "error": result.error, "fit_seconds": None})
    cost = {**bt.fit_costs(records, models), "tasks": len(results), "windows_per_task": cfg.windows_per_task,
            "task_seconds": {"total": sum(r.seconds or 0 for r in results),
                             "median": float(np.median([r.seconds or 0 for r in results]))},
            "wall_seconds": wall, "executors": sorted({r.executor for r in results if r.executor})}
    return records, {"windows": windows, "cost": cost}


def report_backtest(cfg: Config, records: list[dict], info: dict, days) -> dict:
    """Scores, aggregates and plots the backtest; returns metrics.json's results."""
    from pyspark.sql import functions as F

    models = cfg.parsed_models
    summary = bt.summarize(records, models)
    out = cfg.output_dir
    bt.plot_calibration(f"{out}/calibration.png", {m: summary["pit"][m] for m in (*models, "random-walk") if m in summary["pit"]})
    plots = {"calibration": "calibration.png", "over_time": {}, "forecasts": {}}
    for ticker, by_model in summary["per_window"].items():
        series = {m: [(bt.window_time(Window.parse(w)), s["coverage_95"], s["nlpd"]) for w, s in by_model[m].items() if "Q" in w]
                  for m in (*models, "random-walk") if m in by_model}
        bt.plot_over_time(f"{out}/{ticker}_backtest.png", ticker, series)
        plots["over_time"][ticker] = f"{ticker}_backtest.png"
    best = summary["default_model"]["name"]
    years = sorted({int(w[:4]) for w in BOOK_WINDOWS} | {int(w[:4]) - 1 for w in BOOK_WINDOWS})
    history = days.where(F.col("year").isin(years)).select("ticker", "year", "day", "price").toPandas()
    plots["forecasts"] = bt.plot_forecasts(out, records, best, BOOK_WINDOWS, history)
    bt.write_predictions(f"{out}/backtest_predictions.csv", records)
    return {
        "settings": {"start": cfg.backtest_start, "lookback_years": cfg.lookback_years, "stride": cfg.stride,
                     "max_iter": cfg.backtest_max_iter, "models": models, "naive": list(bt.NAIVE_MODELS),
                     "levels": list(bt.LEVELS), "point_forecast": "the predictive median",
                     "nlpd": "nats per day of the actual price (a log-price model's density includes the Jacobian)"},
        "windows": info["windows"], "default_model": summary["default_model"], "table": summary["table"],
        "failed": summary["failed"], "cost": info["cost"], "plots": plots, "per_window": summary["per_window"],
    }


def require_gpflow() -> None:
    if importlib.util.find_spec("gpflow") is None:
        raise ModuleNotFoundError(
            "stock_gp fits with GPflow, which is not installed: pip install 'gpflow>=2.11,<2.12' "
            "'tensorflow-probability>=0.25,<0.26' (the 'gp' extra of tfos_lib), on the driver and the executors."
        )


def backtest_main(spark, cfg: Config, run, log, days, source: str) -> dict:
    """--backtest: fits, scores, plots, metrics.json, the table in the log."""
    require_gpflow()
    log.info("backtest from %d: models %s and the naive forecasts on %s", cfg.backtest_start, cfg.backtest_models, source)
    records, info = run_backtest(spark, cfg, days)
    results = report_backtest(cfg, records, info, days)
    metrics = run.write_metrics(
        data={"source": source, "tickers": len(info["windows"]),
              "windows": {t: len(w) for t, w in info["windows"].items()}},
        results={"backtest": results}, book_reference=BOOK_REFERENCE,
    )
    log.info("%-6s %-13s %8s %8s %8s %8s %16s %9s | years: %8s %8s", "ticker", "model", "cov95", "cov80", "cov50", "NLPD",
             "vs walk (se)", "RMSE", "cov95", "NLPD")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for row in results["table"]:
        q, y, vs = row["quarters"], row["years"], row["nlpd_vs_random_walk"]
        log.info("%-6s %-13s %8s %8s %8s %8s %16s %9.2f | years: %8s %8s", row["ticker"], row["model"],
                 fmt(q.get("coverage_95")), fmt(q.get("coverage_80")), fmt(q.get("coverage_50")), fmt(q.get("nlpd")),
                 "-" if vs is None else f"{vs['mean']:+.3f} ({vs['se']:.3f})", q.get("rmse", float("nan")),
                 fmt(y.get("coverage_95")), fmt(y.get("nlpd")))
    cost = results["cost"]
    log.info("default model: %s (%s)", results["default_model"]["name"], results["default_model"]["why"])
    log.info("%d GP fits (median %.2f s, p95 %.2f s) + %d naive forecasts in %d tasks on %d executor(s): %.0f s wall; "
             "%d failed %s; wrote %s/metrics.json", cost["fits"], cost["fit_seconds"]["median"] or 0,
             cost["fit_seconds"]["p95"] or 0, cost["naive_forecasts"], cost["tasks"], len(cost["executors"]),
             cost["wall_seconds"], cost["failed"], cost["failed_by_reason"] or "", cfg.output_dir)
    return metrics


def main(argv=None) -> dict:
    cfg = job.parse_config(Config, argv, description=__doc__.split("\n\n")[0])
    log = job.setup_logging()
    run = job.JobRun("stock_gp", cfg)
    windows = {w.name: w for w in cfg.parsed_windows}
    spark = job.spark_session("stock_gp")
    prices, source = load_data(spark, cfg)
    days = with_trading_days(prices).persist()
    if cfg.backtest:
        try:
            return backtest_main(spark, cfg, run, log, days, source)
        finally:
            days.unpersist()
            prices.unpersist()
    train, years_df, truth_df, average_df = preprocess(spark, days, list(windows.values()), cfg.train_start)
    train = train.persist()
    try:
        check_history(days, list(windows.values()), cfg.train_start)
        flat = years_df.where("scale = 0").select("file", "year").limit(1).collect()
        if flat:
            raise stocks.StockDataError(
                f"{flat[0].file}: every price dated {flat[0].year} is the same; a year needs movement to be standardised."
            )
        require_gpflow()
        log.info("fitting one GP per ticker and window (%s kernel) on %s", cfg.kernel, source)
        fits = parallel.run_tasks(  # tfos: one Spark task and one fresh TensorFlow process per (ticker, window)
            fit_fn, train, cfg, key=["ticker", "window"], result_schema=RESULT_SCHEMA, spark=spark,
            output_dir=cfg.output_dir, timeout=cfg.task_timeout,
        ).collect()
        inputs = collect_inputs(days, years_df, truth_df, average_df, list(windows.values()))
    finally:
        for frame in (train, days, prices):
            frame.unpersist()

    results, table, failed = summarize(cfg.output_dir, fits, windows, inputs)
    executors = sorted({f.executor for f in fits if f.executor})
    metrics = run.write_metrics(
        data={"source": source, "tickers": len(inputs["ends"]), "files": inputs["ends"],
              "windows": {w.name: w.label for w in windows.values()},
              "training_points": sum(f.train_points or 0 for f in fits)},
        results={
            "forecasts": results,
            "table": table,
            "failed": sorted(failed),
            "fits": {"count": len(fits), "executors": executors, "task_seconds_total": sum(f.seconds or 0 for f in fits)},
        },
        book_reference=BOOK_REFERENCE,
    )
    for row in table:
        log.info("%-10s %-7s GP RMSE %9.3f  coverage %.2f  NLPD %7.3f | last value %9.3f | year average %9.3f",
                 row["ticker"], row["window"], row["gp_rmse"], row["coverage_95"], row["nlpd"],
                 row["last_value_rmse"] or float("nan"), row["year_average_rmse"] or float("nan"))
    log.info("%d fit(s) on %d executor(s) in %.0f s; wrote %s/metrics.json", len(fits), len(executors),
             metrics["wall_seconds"], cfg.output_dir)
    if failed:
        raise parallel.TaskFailures(failed, len(fits))
    return metrics


if __name__ == "__main__":
    job.run_main(main)

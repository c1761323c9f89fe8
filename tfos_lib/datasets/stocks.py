"""Daily stock prices in Yahoo Finance's CSV format: reading them into Spark, checking them, generating them.

The format (one file per ticker, the ticker is the file name, oldest day first)::

    Date,Open,High,Low,Close,Adj Close,Volume
    2004-08-19,49.676899,51.693783,47.669952,49.845802,49.845802,44994500

Yahoo writes ``null`` in every field of a day it has no prices for; those rows are
skipped (the book's ``dropna()``). Anything else that is not a number, a date that
is not ``YYYY-MM-DD``, a row with the wrong number of fields, and dates out of
order or repeated are errors that name the file and line (line 1 is the header).

Fields are split on commas: Yahoo's files have no quoted fields.

:func:`write_default_data` writes realistic synthetic files in the same format
(a shared market factor with the 2008 crash, three tickers with their own drift,
volatility and dividends, the NYSE holiday calendar), so jobs run offline.
"""

from __future__ import annotations

import csv
import glob
import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "DEFAULT_TICKERS",
    "YAHOO_COLUMNS",
    "StockDataError",
    "find_csv_files",
    "generate_prices",
    "read_prices",
    "write_default_data",
    "write_yahoo_csv",
]

YAHOO_COLUMNS = ("Date", "Open", "High", "Low", "Close", "Adj Close", "Volume")
#: How many problems one error message lists before "... and N more".
_MAX_PROBLEMS = 10


class StockDataError(ValueError):
    """A price file is malformed; the message names the file and line."""


def find_csv_files(data_dir: str) -> dict[str, str]:
    """Ticker -> path of every ``*.csv`` in ``data_dir`` (the ticker is the file name without ``.csv``).

    Raises:
        FileNotFoundError: the directory does not exist or holds no CSV file.
    """
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"--data-dir {data_dir!r} is not a directory; expected one with <TICKER>.csv files.")
    paths = sorted(glob.glob(os.path.join(data_dir, "*.csv")) + glob.glob(os.path.join(data_dir, "*.CSV")))
    if not paths:
        raise FileNotFoundError(
            f"no .csv files in {data_dir!r}; expected one file per ticker (e.g. GOOG.csv) in Yahoo Finance's format "
            f"with the header {','.join(YAHOO_COLUMNS)}."
        )
    return {os.path.splitext(os.path.basename(p))[0]: os.path.abspath(p) for p in paths}


def read_prices(spark: SparkSession, files: Mapping[str, str], price_column: str = "Adj Close") -> DataFrame:
    """Reads the files into one DataFrame and checks every row. Runs on the driver; the work is Spark's.

    Args:
        spark: the session.
        files: ticker -> path (see :func:`find_csv_files`); paths Spark can read.
        price_column: the column to keep as ``price`` (the book uses ``Adj Close``).

    Returns:
        A cached DataFrame ``ticker string, file string, line long, date date, price double``
        with one row per trading day (``null`` days skipped), in file order.

    Raises:
        StockDataError: naming the file and line of the first problems found: a
            missing column, a wrong field count, a bad date, a price that is not a
            positive number, dates out of order or repeated, or an empty file.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    by_path = {os.path.abspath(path): ticker for ticker, path in files.items()}
    names = {ticker: os.path.basename(path) for ticker, path in files.items()}
    lines = spark.read.text(list(files.values())).select(
        F.input_file_name().alias("path"), F.monotonically_increasing_id().alias("_id"), "value"
    )
    # Within one file the ids grow with the line order, so their rank is the line number.
    lines = lines.withColumn("line", F.row_number().over(Window.partitionBy("path").orderBy("_id"))).drop("_id")
    lines = lines.persist()
    try:
        headers = {row.path: row.value for row in lines.where(F.col("line") == 1).select("path", "value").collect()}
        layouts = []
        for path, header in headers.items():
            ticker = _ticker_of(path, by_path)
            columns = [c.strip() for c in next(csv.reader([header]))]
            missing = [c for c in ("Date", price_column) if c not in columns]
            if missing:
                raise StockDataError(
                    f"{names[ticker]}: line 1 (the header) has the columns {columns}, without {missing}. "
                    f"Expected Yahoo Finance's header: {','.join(YAHOO_COLUMNS)}."
                )
            layouts.append((path, ticker, names[ticker], columns.index("Date"), columns.index(price_column), len(columns)))
        empty = sorted(set(files) - {layout[1] for layout in layouts})
        if empty:
            raise StockDataError(f"{names[empty[0]]}: the file is empty; expected the header {','.join(YAHOO_COLUMNS)} and one line per day.")
        layout_df = spark.createDataFrame(
            layouts, "path string, ticker string, file string, date_index int, price_index int, num_columns int"
        )
        fields = F.split(F.col("value"), ",", -1)
        parsed = (
            lines.where((F.col("line") > 1) & (F.trim("value") != ""))
            .join(F.broadcast(layout_df), "path")
            .select(
                "ticker", "file", "line", F.size(fields).alias("num_fields"), "num_columns",
                F.trim(F.try_element_at(fields, F.col("date_index") + 1)).alias("date_text"),
                F.trim(F.try_element_at(fields, F.col("price_index") + 1)).alias("price_text"),
            )
            .withColumn("date", F.try_to_date("date_text", "yyyy-MM-dd"))
            .withColumn("price", F.col("price_text").try_cast("double"))
        )
        previous = Window.partitionBy("ticker").orderBy("line")
        checked = (
            # Yahoo's marker for a day without prices; the book drops these rows.
            parsed.where(F.coalesce(F.lower("price_text"), F.lit("")) != "null")
            .withColumn("previous_date", F.lag("date").over(previous))
            .withColumn("previous_line", F.lag("line").over(previous))
        )
        problem = (
            F.when(
                F.col("num_fields") != F.col("num_columns"),
                F.format_string("has %d fields, the header has %d", "num_fields", "num_columns"),
            )
            .when(F.col("date").isNull(), F.format_string("Date '%s' is not a date like 2018-09-28", "date_text"))
            .when(
                F.col("price").isNull() | F.isnan("price") | (F.abs("price") == float("inf")),
                F.format_string(f"{price_column} '%s' is not a number", "price_text"),
            )
            .when(F.col("price") <= 0, F.format_string(f"{price_column} %s is not a positive price", "price_text"))
            .when(
                F.col("date") == F.col("previous_date"),
                F.format_string("repeats the date %s of line %d", F.col("date").cast("string"), "previous_line"),
            )
            .when(
                F.col("date") < F.col("previous_date"),
                F.format_string(
                    "has the date %s, earlier than %s on line %d: rows must be sorted by date, oldest first",
                    F.col("date").cast("string"), F.col("previous_date").cast("string"), "previous_line",
                ),
            )
        )
        problems = (
            checked.select("file", "line", problem.alias("problem"))
            .where(F.col("problem").isNotNull())
            .orderBy("file", "line")
            .limit(_MAX_PROBLEMS + 1)
            .collect()
        )
        if problems:
            listed = "\n".join(f"  {p.file}, line {p.line}: {p.problem}" for p in problems[:_MAX_PROBLEMS])
            more = "\n  ... and more" if len(problems) > _MAX_PROBLEMS else ""
            raise StockDataError(
                f"{problems[0].file}, line {problems[0].line}: {problems[0].problem}.\n"
                f"Expected Yahoo Finance's format ({','.join(YAHOO_COLUMNS)}; one line per trading day, oldest first; "
                f"'null' for days without prices). Problems found:\n{listed}{more}"
            )
        prices = checked.select("ticker", "file", F.col("line").cast("long"), "date", "price").persist()
        present = {row.ticker for row in prices.select("ticker").distinct().collect()}
        for ticker in sorted(set(files) - present):
            prices.unpersist()
            raise StockDataError(f"{names[ticker]}: no prices after the header (line 1); expected one line per trading day.")
        return prices
    finally:
        lines.unpersist()


def _ticker_of(uri: str, by_path: Mapping[str, str]) -> str:
    """Maps Spark's ``input_file_name()`` (a ``file:`` URI) back to the ticker it was read for."""
    from urllib.parse import unquote, urlparse

    path = unquote(urlparse(uri).path) if "://" in uri or uri.startswith("file:") else uri
    if path in by_path:
        return by_path[path]
    base = os.path.basename(path)
    matches = [t for p, t in by_path.items() if os.path.basename(p) == base]
    if len(matches) == 1:
        return matches[0]
    raise RuntimeError(f"Spark read {uri!r}, which is none of the files asked for (please report this).")


# ---------------------------------------------------------------------------------------------
# Writing, and the offline default data.

#: name -> (drift per year, volatility per year, beta to the market, dividend yield, start price)
DEFAULT_TICKERS: dict[str, tuple[float, float, float, float, float]] = {
    "GROWTH": (0.30, 0.45, 1.3, 0.0, 4.0),  # a fast-growing, volatile stock (NFLX-like)
    "LARGECAP": (0.10, 0.22, 1.0, 0.0, 300.0),  # a steady large cap (GOOG-like)
    "INDUSTRIAL": (-0.04, 0.25, 1.1, 0.035, 30.0),  # a dividend payer in decline (GE-like)
}


def trading_days(start: str, end: str) -> pd.DatetimeIndex:
    """NYSE trading days between ``start`` and ``end`` (weekdays without the exchange's regular holidays)."""
    import pandas as pd
    from pandas.tseries import holiday as h
    from pandas.tseries.offsets import CustomBusinessDay

    class NyseHolidays(h.AbstractHolidayCalendar):
        rules = [
            h.Holiday("New Year's Day", month=1, day=1, observance=h.sunday_to_monday),
            h.USMartinLutherKingJr,
            h.USPresidentsDay,
            h.GoodFriday,
            h.USMemorialDay,
            h.Holiday("Independence Day", month=7, day=4, observance=h.nearest_workday),
            h.USLaborDay,
            h.USThanksgivingDay,
            h.Holiday("Christmas", month=12, day=25, observance=h.nearest_workday),
        ]

    return pd.date_range(start, end, freq=CustomBusinessDay(calendar=NyseHolidays()))


def generate_prices(
    days: pd.DatetimeIndex,
    market_returns: np.ndarray,
    drift: float,
    volatility: float,
    beta: float,
    dividend_yield: float,
    start_price: float,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """One ticker's daily OHLCV with Yahoo's columns: a geometric random walk around the market.

    ``Close`` is the traded price; ``Adj Close`` discounts past prices by the
    dividends paid since, so it is below ``Close`` early on when ``dividend_yield > 0``.
    """
    import pandas as pd

    n = len(days)
    step = 1 / 252
    own = rng.normal((drift - 0.5 * volatility**2) * step, volatility * math.sqrt(step), n)
    log_close = math.log(start_price) + np.cumsum(beta * market_returns + own)
    close = np.exp(log_close)
    previous = np.concatenate([[close[0]], close[:-1]])
    open_ = previous * np.exp(rng.normal(0, 0.25 * volatility * math.sqrt(step), n))
    spread = np.abs(rng.normal(0, 0.5 * volatility * math.sqrt(step), n))
    high = np.maximum(open_, close) * np.exp(spread)
    low = np.minimum(open_, close) * np.exp(-spread)
    years_to_end = (days[-1] - days).days.to_numpy() / 365.25
    adj_close = close * np.exp(-dividend_yield * years_to_end)
    volume = np.round(rng.lognormal(math.log(5e6 / math.sqrt(start_price)), 0.4, n)).astype(np.int64)
    return pd.DataFrame(
        {"Date": days.strftime("%Y-%m-%d"), "Open": open_, "High": high, "Low": low, "Close": close,
         "Adj Close": adj_close, "Volume": volume}
    )


def write_yahoo_csv(path: str, frame: pd.DataFrame) -> str:
    """Writes ``frame`` (Yahoo's columns) as Yahoo does: prices with 6 decimals, integer volume."""
    missing = [c for c in YAHOO_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"write_yahoo_csv: the frame lacks the columns {missing}.")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    frame.loc[:, list(YAHOO_COLUMNS)].to_csv(path, index=False, float_format="%.6f")
    return path


def write_default_data(
    directory: str, seed: int = 0, start: str = "2006-01-01", end: str = "2018-09-28", tickers: Mapping | None = None
) -> dict[str, str]:
    """Writes one synthetic Yahoo-format CSV per ticker into ``directory``; returns ticker -> path.

    The default span ends where the book's data ends (2018-09-28), so the book's
    windows (2017, Q4 2018) and the held-out Q3 2018 apply unchanged. The market
    factor falls hard from September 2008 to March 2009, as in the book's data.
    """
    tickers = DEFAULT_TICKERS if tickers is None else tickers
    rng = np.random.default_rng(seed)
    days = trading_days(start, end)
    crash = (days >= "2008-09-01") & (days < "2009-03-10")
    step = 1 / 252
    market_drift = np.where(crash, -1.2, 0.08)
    market_vol = np.where(crash, 0.55, 0.14)
    market = rng.normal((market_drift - 0.5 * market_vol**2) * step, market_vol * math.sqrt(step))
    paths = {}
    for name, (drift, volatility, beta, dividend_yield, start_price) in tickers.items():
        frame = generate_prices(days, market, drift, volatility, beta, dividend_yield, start_price, rng)
        paths[name] = write_yahoo_csv(os.path.join(directory, f"{name}.csv"), frame)
    return paths

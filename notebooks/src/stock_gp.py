# %% [markdown]
# # Stock prices with Gaussian processes (chapter 6)
#
# Chapter 6 standardises each calendar year of a stock's adjusted closes, fits one GPflow regression with an RBF
# kernel (length scale 63, variance 1) on `[year, day]` per ticker and forecasts 2017 (trained on 2008-2016) and
# 2018Q4 for GOOG, NFLX and GE; it shows plots only. The `stock_gp` job (`jobs/stock_gp.py`) fits every (ticker,
# window) as its own Spark task with `tfos_lib.parallel` and scores what the book did not: RMSE, coverage of the
# 95% band and NLPD against naive forecasts. `--backtest` (see the README) asks which model to trust over every
# quarter since 2010.
#
# **Data**: one Yahoo Finance CSV per ticker (`Date,Open,High,Low,Close,Adj Close,Volume`) in `data_dir`; empty:
# three synthetic tickers in that format.
# %% [parameters]
data_dir = ""  # directory with one Yahoo Finance CSV per ticker; empty: three synthetic tickers
windows = "2017,2018Q3,2018Q4"  # periods to forecast: years or 63-trading-day quarters
train_start = 2008  # first training year (the book's: 2008)
max_iter = 1000  # L-BFGS iterations at most per fit
output_dir = "output/notebooks/stock_gp"  # metrics.json, predictions.csv and the plots
mlflow = False  # log the run to MLflow (MLFLOW_TRACKING_URI)
# %% [ci]
windows, train_start, max_iter = "2018Q3", 2016, 30
# %% [pip]
gp
# %% [markdown]
# ## The data in Spark
# `load_data` reads and checks the CSVs (or writes the synthetic ones first); each ticker's span:
# %%
from pyspark.sql import functions as F

from jobs import stock_gp
from tfos_lib import job, notebook

args = notebook.argv(data_dir=data_dir, windows=windows, train_start=train_start, max_iter=max_iter,
                     output_dir=output_dir, mlflow=mlflow, overwrite=True)
cfg = job.parse_config(stock_gp.Config, args)  # the job's own options and checks
prices, source = stock_gp.load_data(spark, cfg)
print(source)
prices.groupBy("ticker").agg(F.min("date").alias("first"), F.max("date").alias("last"),
                             F.count("*").alias("days")).orderBy("ticker").toPandas()
# %% [markdown]
# ## One GP fit per ticker and window, fanned out over the executors
# `stock_gp.main` is the job itself: each (ticker, window) is one Spark task running its own GPflow fit; the
# driver scores the forecasts against the actual prices and the naive baselines.
# %%
metrics = stock_gp.main(args)
# %% [markdown]
# ## Results: the book's model against the naive forecasts
# %%
import pandas as pd

pd.DataFrame(metrics["results"]["table"])
# %%
notebook.show_plots(cfg.output_dir);

# Databricks notebook source
# MAGIC %pip install --quiet "..[gp]"

# COMMAND ----------

# MAGIC %md
# MAGIC # Stock prices with Gaussian processes (chapter 6)
# MAGIC
# MAGIC Chapter 6 standardises each calendar year of a stock's adjusted closes, fits one GPflow regression with an RBF
# MAGIC kernel (length scale 63, variance 1) on `[year, day]` per ticker and forecasts 2017 (trained on 2008-2016) and
# MAGIC 2018Q4 for GOOG, NFLX and GE; it shows plots only. The `stock_gp` job (`jobs/stock_gp.py`) fits every (ticker,
# MAGIC window) as its own Spark task with `tfos_lib.parallel` and scores what the book did not: RMSE, coverage of the
# MAGIC 95% band and NLPD against naive forecasts. `--backtest` (see the README) asks which model to trust over every
# MAGIC quarter since 2010.
# MAGIC
# MAGIC **Data**: one Yahoo Finance CSV per ticker (`Date,Open,High,Low,Close,Adj Close,Volume`) in `data_dir`; empty:
# MAGIC three synthetic tickers in that format.

# COMMAND ----------

from tfos_lib import notebook  # installed by `pip install -e .` (Jupyter) or the %pip cell (Databricks)

ROOT = notebook.use_repository_root()  # the clone's root: working directory and on sys.path (`import jobs`)
spark = notebook.spark_session()  # Databricks' session, else local[2]

# COMMAND ----------

# Parameters: one widget each (the Jupyter form's `parameters` cell).
dbutils.widgets.text('data_dir', "", "data_dir: directory with one Yahoo Finance CSV per ticker; empty: three synthetic tickers")
dbutils.widgets.text('windows', "2017,2018Q3,2018Q4", "windows: periods to forecast: years or 63-trading-day quarters")
dbutils.widgets.text('train_start', "2008", "train_start: first training year (the book's: 2008)")
dbutils.widgets.text('max_iter', "1000", "max_iter: L-BFGS iterations at most per fit")
dbutils.widgets.text('output_dir', "output/notebooks/stock_gp", "output_dir: metrics.json, predictions.csv and the plots")
dbutils.widgets.dropdown('mlflow', "false", ["true", "false"], "mlflow: log the run to MLflow (MLFLOW_TRACKING_URI)")

data_dir = dbutils.widgets.get('data_dir')
windows = dbutils.widgets.get('windows')
train_start = int(dbutils.widgets.get('train_start'))
max_iter = int(dbutils.widgets.get('max_iter'))
output_dir = dbutils.widgets.get('output_dir')
mlflow = dbutils.widgets.get('mlflow') == "true"

# COMMAND ----------

# MAGIC %md
# MAGIC ## The data in Spark
# MAGIC `load_data` reads and checks the CSVs (or writes the synthetic ones first); each ticker's span:

# COMMAND ----------

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

# COMMAND ----------

# MAGIC %md
# MAGIC ## One GP fit per ticker and window, fanned out over the executors
# MAGIC `stock_gp.main` is the job itself: each (ticker, window) is one Spark task running its own GPflow fit; the
# MAGIC driver scores the forecasts against the actual prices and the naive baselines.

# COMMAND ----------

metrics = stock_gp.main(args)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Results: the book's model against the naive forecasts

# COMMAND ----------

import pandas as pd

pd.DataFrame(metrics["results"]["table"])

# COMMAND ----------

notebook.show_plots(cfg.output_dir);

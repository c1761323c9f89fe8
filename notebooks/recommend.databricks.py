# Databricks notebook source
# MAGIC %pip install --quiet ..

# COMMAND ----------

# MAGIC %md
# MAGIC # Product recommendations from a click log (chapter 11)
# MAGIC
# MAGIC Chapter 11 regresses Retailrocket's event codes (view 1, add-to-cart 2, purchase 3) with MSE from a visitor and
# MAGIC an item embedding, by matrix factorisation and by a small network, and reports a test MSE of 0.0571; it never
# MAGIC recommends anything. The `recommend` job (`jobs/recommend.py`) keeps the book's setup for comparison and ranks:
# MAGIC both models train data-parallel with `tfos_lib` on implicit feedback, beside Spark's ALS and popularity, judged
# MAGIC on each visitor's latest items.
# MAGIC
# MAGIC **Data**: Retailrocket's `events.csv` from `data_dir`; empty: a generated file in that format.

# COMMAND ----------

from tfos_lib import notebook  # installed by `pip install -e .` (Jupyter) or the %pip cell (Databricks)

ROOT = notebook.use_repository_root()  # the clone's root: working directory and on sys.path (`import jobs`)
spark = notebook.spark_session()  # Databricks' session, else local[2]

# COMMAND ----------

# Parameters: one widget each (the Jupyter form's `parameters` cell).
dbutils.widgets.text('data_dir', "", "data_dir: directory with events.csv; empty: a generated file")
dbutils.widgets.text('generated_events', "200000", "generated_events: rows of the generated events.csv (without data_dir)")
dbutils.widgets.text('epochs', "5", "epochs: passes over the training interactions, per ranking model")
dbutils.widgets.text('batch_size', "1024", "batch_size: global batch: rows (book setup) or positives (ranking)")
dbutils.widgets.text('als_iterations', "10", "als_iterations: ALS iterations (the baseline)")
dbutils.widgets.dropdown('tune_als', "true", ["true", "false"], "tune_als: tune ALS's rank, regParam and alpha on the validation split (7 fits), as the job does")
dbutils.widgets.text('num_workers', "2", "num_workers: TensorFlow workers, one Spark task each")
dbutils.widgets.text('output_dir', "output/notebooks/recommend", "output_dir: metrics.json, the models and the plots")
dbutils.widgets.dropdown('mlflow', "false", ["true", "false"], "mlflow: log the run to MLflow (MLFLOW_TRACKING_URI)")

data_dir = dbutils.widgets.get('data_dir')
generated_events = int(dbutils.widgets.get('generated_events'))
epochs = int(dbutils.widgets.get('epochs'))
batch_size = int(dbutils.widgets.get('batch_size'))
als_iterations = int(dbutils.widgets.get('als_iterations'))
tune_als = dbutils.widgets.get('tune_als') == "true"
num_workers = int(dbutils.widgets.get('num_workers'))
output_dir = dbutils.widgets.get('output_dir')
mlflow = dbutils.widgets.get('mlflow') == "true"

# COMMAND ----------

# MAGIC %md
# MAGIC ## The data in Spark
# MAGIC `events_source` finds (or generates) `events.csv`; `retailrocket.read_events` validates it in Spark:

# COMMAND ----------

from jobs import recommend
from tfos_lib import job, notebook
from tfos_lib.datasets import retailrocket

args = notebook.argv(data_dir=data_dir, generated_events=generated_events, epochs=epochs, batch_size=batch_size,
                     als_iterations=als_iterations, tune_als=tune_als, num_workers=num_workers,
                     output_dir=output_dir, mlflow=mlflow,
                     overwrite=True)
cfg = job.parse_config(recommend.Config, args)  # the job's own options and checks
path, source = recommend.events_source(cfg, job.setup_logging(), dict(spark.sparkContext.getConf().getAll()))
events = retailrocket.read_events(spark, path, cfg.max_bad_fraction).events
events.groupBy("event").count().toPandas()

# COMMAND ----------

events.limit(5).toPandas()

# COMMAND ----------

# MAGIC %md
# MAGIC ## Training, data-parallel
# MAGIC `recommend.main` is the job itself: MF and the network train to rank on `num_workers` Spark tasks, then in the
# MAGIC book's MSE setup; ALS trains in Spark ML; every model ranks all items for the held-out visitors.

# COMMAND ----------

metrics = recommend.main(args)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Results beside the book's

# COMMAND ----------

import pandas as pd

pd.DataFrame(metrics["results"]["ranking"]).T

# COMMAND ----------

notebook.book_vs_ours(metrics, {"network MSE, book setup": "book_mse.models.nn.test_mse",
                                "constant-mean MSE": "book_mse.constant_mean_mse"})

# COMMAND ----------

notebook.show_plots(cfg.output_dir);

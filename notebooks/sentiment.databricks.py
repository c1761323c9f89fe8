# Databricks notebook source
# MAGIC %pip install --quiet ..

# COMMAND ----------

# MAGIC %md
# MAGIC # Sentiment of short reviews (chapter 3)
# MAGIC
# MAGIC Chapter 3 trains Embedding(8) -> GRU(16) -> GRU(8) -> GRU(4) -> sigmoid on the SI650 review sentences and scores
# MAGIC four probes in a TensorFlow.js page ("Awesome movie" 0.9957, "Terrible Movie" 0.0023, ...); it reports no
# MAGIC accuracy. The `sentiment` job (`jobs/sentiment.py`) trains the same network data-parallel with `tfos_lib`,
# MAGIC tests it honestly on a split by distinct sentence (the book's random row split leaks: the file repeats its
# MAGIC sentences) and exports it to TensorFlow.js with a web page.
# MAGIC
# MAGIC **Data**: `sentiment.txt` (`label<TAB>sentence`) from `data_dir`; empty: a generated file in that format.

# COMMAND ----------

from tfos_lib import notebook  # installed by `pip install -e .` (Jupyter) or the %pip cell (Databricks)

ROOT = notebook.use_repository_root()  # the clone's root: working directory and on sys.path (`import jobs`)
spark = notebook.spark_session()  # Databricks' session, else local[2]

# COMMAND ----------

# Parameters: one widget each (the Jupyter form's `parameters` cell).
dbutils.widgets.text('data_dir', "", "data_dir: directory with sentiment.txt (label<TAB>sentence); empty: a generated file")
dbutils.widgets.text('synthetic_rows', "2000", "synthetic_rows: rows of the generated file (without data_dir)")
dbutils.widgets.text('epochs', "15", "epochs: passes over the training data (the book's: 15)")
dbutils.widgets.text('num_workers', "2", "num_workers: TensorFlow workers, one Spark task each")
dbutils.widgets.dropdown('random_split', "true", ["true", "false"], "random_split: also train on the book's leaky random row split, for comparison")
dbutils.widgets.text('output_dir', "output/notebooks/sentiment", "output_dir: metrics.json, the model, the web page and the plots")
dbutils.widgets.dropdown('mlflow', "false", ["true", "false"], "mlflow: log the run to MLflow (MLFLOW_TRACKING_URI)")

data_dir = dbutils.widgets.get('data_dir')
synthetic_rows = int(dbutils.widgets.get('synthetic_rows'))
epochs = int(dbutils.widgets.get('epochs'))
num_workers = int(dbutils.widgets.get('num_workers'))
random_split = dbutils.widgets.get('random_split') == "true"
output_dir = dbutils.widgets.get('output_dir')
mlflow = dbutils.widgets.get('mlflow') == "true"

# COMMAND ----------

# MAGIC %md
# MAGIC ## The data in Spark
# MAGIC `load_data` reads (or generates) the file and tokenises it in Spark; a few rows and the label balance:

# COMMAND ----------

from jobs import sentiment
from tfos_lib import job, notebook

args = notebook.argv(data_dir=data_dir, synthetic_rows=synthetic_rows, epochs=epochs, num_workers=num_workers,
                     random_split=random_split, output_dir=output_dir, mlflow=mlflow, overwrite=True)
cfg = job.parse_config(sentiment.Config, args)  # the job's own options and checks
rows, source = sentiment.load_data(spark, cfg)
print(f"{source}: {rows.count()} rows, {rows.select('sentence').distinct().count()} distinct sentences")
display_rows = rows.limit(8).toPandas()
display_rows

# COMMAND ----------

# MAGIC %md
# MAGIC ## Training, data-parallel, and the web page
# MAGIC `sentiment.main` is the job itself: per split it builds the vocabulary from the training rows, trains the GRU
# MAGIC on `num_workers` Spark tasks (one log line per epoch), scores the held-out rows and the book's four probes, and
# MAGIC writes the TensorFlow.js page to `<output_dir>/web/`.

# COMMAND ----------

metrics = sentiment.main(args)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Results beside the book's

# COMMAND ----------

notebook.book_vs_ours(metrics, {"held-out accuracy (split by sentence)": "test_accuracy",
                                "held-out AUC": "test_auc"})

# COMMAND ----------

import pandas as pd

pd.DataFrame(metrics["results"]["probes"]).T  # the book's four probes: its scores and ours

# COMMAND ----------

notebook.show_plots(cfg.output_dir);

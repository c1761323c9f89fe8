# Databricks notebook source
# MAGIC %pip install --quiet ..

# COMMAND ----------

# MAGIC %md
# MAGIC # Credit-card fraud with an autoencoder (chapter 7)
# MAGIC
# MAGIC Chapter 7 trains a 29-14-7-7-29 autoencoder on normal transactions of Kaggle's `creditcard.csv` and flags a
# MAGIC transaction when its reconstruction error passes a threshold: at recall 0.8 it catches 97 of 120 frauds with
# MAGIC 1,082 false alarms (precision 0.082). The `fraud` job (`jobs/fraud.py`) trains the same autoencoder
# MAGIC data-parallel with `tfos_lib`, splits by time and picks every threshold on validation rows, and compares it
# MAGIC with two baselines on the same split: MLlib's logistic regression and the Mahalanobis distance.
# MAGIC
# MAGIC **Data**: `creditcard.csv` from `data_dir`; empty: a generated file in that format at the real size.

# COMMAND ----------

from tfos_lib import notebook  # installed by `pip install -e .` (Jupyter) or the %pip cell (Databricks)

ROOT = notebook.use_repository_root()  # the clone's root: working directory and on sys.path (`import jobs`)
spark = notebook.spark_session()  # Databricks' session, else local[2]

# COMMAND ----------

# Parameters: one widget each (the Jupyter form's `parameters` cell).
dbutils.widgets.text('data_dir', "", "data_dir: directory with creditcard.csv; empty: a generated file (284,807 rows)")
dbutils.widgets.text('split', "time", "split: time: train on earlier, test on later transactions; random: the book's shuffle")
dbutils.widgets.text('epochs', "20", "epochs: passes over the normal training transactions (the book's: 100)")
dbutils.widgets.text('num_workers', "2", "num_workers: TensorFlow workers, one Spark task each")
dbutils.widgets.text('output_dir', "output/notebooks/fraud", "output_dir: metrics.json, the model and the plots")
dbutils.widgets.dropdown('mlflow', "false", ["true", "false"], "mlflow: log the run to MLflow (MLFLOW_TRACKING_URI)")

data_dir = dbutils.widgets.get('data_dir')
split = dbutils.widgets.get('split')
epochs = int(dbutils.widgets.get('epochs'))
num_workers = int(dbutils.widgets.get('num_workers'))
output_dir = dbutils.widgets.get('output_dir')
mlflow = dbutils.widgets.get('mlflow') == "true"

# COMMAND ----------

# MAGIC %md
# MAGIC ## The data in Spark
# MAGIC `load_data` reads and validates the CSV in Spark (duplicates dropped); `split_rows` splits it by time:

# COMMAND ----------

from jobs import fraud
from tfos_lib import job, notebook

args = notebook.argv(data_dir=data_dir, split=split, epochs=epochs, num_workers=num_workers,
                     output_dir=output_dir, mlflow=mlflow, overwrite=True)
cfg = job.parse_config(fraud.Config, args)  # the job's own options and checks
rows, counts, source = fraud.load_data(spark, cfg)
parts, sizes = fraud.split_rows(rows, cfg)
print(source, counts)
sizes

# COMMAND ----------

rows.select("Time", "V1", "V2", "V3", "Amount", "Class").limit(5).toPandas()

# COMMAND ----------

# MAGIC %md
# MAGIC ## Training, data-parallel
# MAGIC `fraud.main` is the job itself: the autoencoder trains on `num_workers` Spark tasks (one log line per epoch
# MAGIC with the validation PR-AUC), the baselines fit in Spark ML, and the saved model scores the test rows in the
# MAGIC executors.

# COMMAND ----------

metrics = fraud.main(args)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Results beside the book's

# COMMAND ----------

import pandas as pd

pd.DataFrame({name: {"PR-AUC": m["pr_auc"], "ROC-AUC": m["roc_auc"], **m["at_validation_threshold"]}
              for name, m in metrics["results"]["models"].items()}).T

# COMMAND ----------

notebook.book_vs_ours(metrics, {"autoencoder PR-AUC": "models.autoencoder.pr_auc"})

# COMMAND ----------

notebook.show_plots(cfg.output_dir);

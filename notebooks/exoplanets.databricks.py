# Databricks notebook source
# MAGIC %pip install --quiet ..

# COMMAND ----------

# MAGIC %md
# MAGIC # Exoplanets with distributed boosted trees (chapter 2)
# MAGIC
# MAGIC Chapter 2 trains TensorFlow's boosted trees (100 trees of depth 6) on Kaggle's Kepler light curves and reports
# MAGIC accuracy 0.9912: exactly the share of stars without a planet, because its model answers "no planet" for
# MAGIC every star (recall 0). The `exoplanets` job (`jobs/exoplanets.py`) computes features per star in the
# MAGIC executors (detrending, FFT bands and a box-least-squares transit search, `tfos_lib.ml.lightcurves`) and
# MAGIC trains gradient-boosted trees distributed over `tfos_lib` workers with YDF (or Spark MLlib's
# MAGIC `GBTClassifier`), choosing its threshold on held-out training stars.
# MAGIC
# MAGIC **Data**: Kaggle's `exoTrain.csv` and `exoTest.csv` (`LABEL,FLUX.1,…,FLUX.3197`) from `data_dir`; empty:
# MAGIC generated light curves in that format at the real sizes (5,087 + 570 stars, 37 + 5 planet hosts).

# COMMAND ----------

from tfos_lib import notebook  # installed by `pip install -e .` (Jupyter) or the %pip cell (Databricks)

ROOT = notebook.use_repository_root()  # the clone's root: working directory and on sys.path (`import jobs`)
spark = notebook.spark_session()  # Databricks' session, else local[2]

# COMMAND ----------

# Parameters: one widget each (the Jupyter form's `parameters` cell).
dbutils.widgets.text('data_dir', "", "data_dir: directory with exoTrain.csv and exoTest.csv; empty: generated files at the real sizes")
dbutils.widgets.text('engine', "ydf", "engine: ydf: distributed YDF on the tfos_lib workers; mllib: Spark MLlib's GBTClassifier")
dbutils.widgets.text('features', "transit", "features: transit: statistics + FFT bands + transit search; fft: no search; raw: the book's fluxes")
dbutils.widgets.text('num_trees', "100", "num_trees: boosting rounds (the book's: 100)")
dbutils.widgets.text('num_workers', "2", "num_workers: YDF workers, one Spark task each")
dbutils.widgets.text('output_dir', "output/notebooks/exoplanets", "output_dir: metrics.json, the model and the plots")
dbutils.widgets.dropdown('mlflow', "false", ["true", "false"], "mlflow: log the run to MLflow (MLFLOW_TRACKING_URI)")

data_dir = dbutils.widgets.get('data_dir')
engine = dbutils.widgets.get('engine')
features = dbutils.widgets.get('features')
num_trees = int(dbutils.widgets.get('num_trees'))
num_workers = int(dbutils.widgets.get('num_workers'))
output_dir = dbutils.widgets.get('output_dir')
mlflow = dbutils.widgets.get('mlflow') == "true"

# COMMAND ----------

# MAGIC %md
# MAGIC ## The data in Spark
# MAGIC `load_data` reads both CSVs with an explicit 3,198-column schema and checks every row; a few stars' first
# MAGIC fluxes and the class balance:

# COMMAND ----------

from pyspark.sql import functions as F

from jobs import exoplanets
from tfos_lib import job, notebook

args = notebook.argv(data_dir=data_dir, engine=engine, features=features, num_trees=num_trees,
                     num_workers=num_workers, output_dir=output_dir, mlflow=mlflow, overwrite=True)
cfg = job.parse_config(exoplanets.Config, args)  # the job's own options and checks
train_stars, test_stars, source = exoplanets.load_data(spark, cfg)
print(source)
train_stars.groupBy("label").count().toPandas().set_index("label").T

# COMMAND ----------

train_stars.select("star", "label", *[F.col("flux")[i].alias(f"flux_{i + 1}") for i in range(6)]).limit(5).toPandas()

# COMMAND ----------

# MAGIC %md
# MAGIC ## Features in the executors, trees on the workers
# MAGIC `exoplanets.main` is the job itself: a pandas UDF computes each star's features, YDF's distributed learner
# MAGIC trains on the `tfos_lib` workers (one Spark barrier task each), and the saved model scores the test stars in
# MAGIC the executors.

# COMMAND ----------

metrics = exoplanets.main(args)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Results beside the book's

# COMMAND ----------

notebook.book_vs_ours(metrics, {"test PR-AUC": "test_pr_auc", "test recall": "test_recall",
                                "test precision": "test_precision", "majority class PR-AUC":
                                "majority_baseline.test_pr_auc", "feature seconds": "feature_seconds"})

# COMMAND ----------

notebook.show_plots(cfg.output_dir, ["curves.png", "light_curves.png"]);

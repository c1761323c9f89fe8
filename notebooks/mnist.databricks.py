# Databricks notebook source
# MAGIC %pip install --quiet ..

# COMMAND ----------

# MAGIC %md
# MAGIC # MNIST handwritten digits on Spark (chapters 1 and 12)
# MAGIC
# MAGIC *TensorFlow Machine Learning Projects* opens with a Keras softmax regression on MNIST (chapter 1: 0.9097 test
# MAGIC accuracy after 5 epochs of SGD) and trains a CNN with TensorFlowOnSpark in chapter 12 (75% after 1,000 steps of
# MAGIC SGD at 0.001). This notebook runs the `mnist` job's own functions (`jobs/mnist.py`): the data read into Spark,
# MAGIC the CNN (or `logreg`) trained data-parallel by `tfos_lib` in Spark tasks, then scored where the data lives.
# MAGIC
# MAGIC **Data**: the four MNIST IDX files from `data_dir`; empty, the offline default: scikit-learn's 1,797 real
# MAGIC 8x8 handwritten digits upscaled to 28x28 (a stratified 75/25 split).

# COMMAND ----------

from tfos_lib import notebook  # installed by `pip install -e .` (Jupyter) or the %pip cell (Databricks)

ROOT = notebook.use_repository_root()  # the clone's root: working directory and on sys.path (`import jobs`)
spark = notebook.spark_session()  # Databricks' session, else local[2]

# COMMAND ----------

# Parameters: one widget each (the Jupyter form's `parameters` cell).
dbutils.widgets.text('data_dir', "", "data_dir: directory with the four MNIST IDX files; empty: the offline default digits")
dbutils.widgets.text('model', "cnn", "model: logreg (chapter 1) or cnn (chapter 12)")
dbutils.widgets.text('epochs', "10", "epochs: passes over the training data")
dbutils.widgets.text('num_workers', "2", "num_workers: TensorFlow workers, one Spark task each")
dbutils.widgets.text('output_dir', "output/notebooks/mnist", "output_dir: metrics.json, the model and the plots (a path or a URI)")
dbutils.widgets.dropdown('mlflow', "false", ["true", "false"], "mlflow: log the run to MLflow (MLFLOW_TRACKING_URI)")

data_dir = dbutils.widgets.get('data_dir')
model = dbutils.widgets.get('model')
epochs = int(dbutils.widgets.get('epochs'))
num_workers = int(dbutils.widgets.get('num_workers'))
output_dir = dbutils.widgets.get('output_dir')
mlflow = dbutils.widgets.get('mlflow') == "true"

# COMMAND ----------

# MAGIC %md
# MAGIC ## The data in Spark
# MAGIC `load_data` reads the IDX files (or the default digits) into two DataFrames of 784 pixels scaled to [0, 1]
# MAGIC in Spark; here are a few training rows and the class balance.

# COMMAND ----------

import numpy as np

from jobs import mnist
from tfos_lib import job, notebook, report

args = notebook.argv(data_dir=data_dir, model=model, epochs=epochs, num_workers=num_workers,
                     output_dir=output_dir, mlflow=mlflow, overwrite=True)
cfg = job.parse_config(mnist.Config, args)  # the job's own options and checks
train_df, test_df, source = mnist.load_data(spark, cfg)
print(f"{source}: {train_df.count()} training rows, {test_df.count()} test rows")
train_df.groupBy("label").count().orderBy("label").toPandas().set_index("label").T

# COMMAND ----------

rows = train_df.limit(16).collect()
grid = report.plot_image_grid(f"{ROOT}/build/notebooks/mnist_samples.png",
                              np.array([r.image for r in rows]).reshape(-1, 28, 28), [str(r.label) for r in rows])
notebook.show_plots(str(grid.parent), [grid.name]);

# COMMAND ----------

# MAGIC %md
# MAGIC ## Training, data-parallel
# MAGIC `mnist.main` is the `spark-submit` job itself: it trains on `num_workers` Spark tasks with
# MAGIC `MultiWorkerMirroredStrategy`, logging one line per epoch (loss, accuracy, the held-out test rows' scores)
# MAGIC as the chief reports it, then exports the SavedModel and scores the test DataFrame in the executors.

# COMMAND ----------

metrics = mnist.main(args)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Results beside the book's

# COMMAND ----------

notebook.book_vs_ours(metrics, {"test accuracy": "test_accuracy", "test accuracy (DataFrame scoring)":
                                "dataframe_test_accuracy", "examples per second": "examples_per_second"})

# COMMAND ----------

notebook.show_plots(cfg.output_dir, ["training_curves.png", "confusion_matrix.png"]);

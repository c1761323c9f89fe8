# Databricks notebook source
# MAGIC %pip install --quiet ..

# COMMAND ----------

# MAGIC %md
# MAGIC # MNIST to TensorFlow Lite (chapter 4)
# MAGIC
# MAGIC Chapter 4 trains a Keras CNN on MNIST (99.24% test accuracy after 12 epochs), freezes the graph and converts
# MAGIC it with `toco` to a `.tflite` file for an Android app. Both tools are gone. The `tflite` job
# MAGIC (`jobs/tflite.py`) trains the same CNN data-parallel with `tfos_lib`, exports a SavedModel in TF Serving's
# MAGIC layout, converts it with `tf.lite.TFLiteConverter` to float32, float16 and full-integer int8 (calibrated on
# MAGIC training rows), and scores every file over the test DataFrame in the executors with LiteRT's interpreter:
# MAGIC accuracy, agreement with Keras, size and one-image latency.
# MAGIC
# MAGIC **Data**: the four MNIST (or Fashion-MNIST) IDX files from `data_dir`; empty: scikit-learn's real 8x8
# MAGIC handwritten digits upscaled to 28x28.

# COMMAND ----------

from tfos_lib import notebook  # installed by `pip install -e .` (Jupyter) or the %pip cell (Databricks)

ROOT = notebook.use_repository_root()  # the clone's root: working directory and on sys.path (`import jobs`)
spark = notebook.spark_session()  # Databricks' session, else local[2]

# COMMAND ----------

# Parameters: one widget each (the Jupyter form's `parameters` cell).
dbutils.widgets.text('data_dir', "", "data_dir: directory with the four IDX files; empty: the offline default digits")
dbutils.widgets.text('epochs', "12", "epochs: passes over the training data (the book's: 12)")
dbutils.widgets.text('calibration_rows', "500", "calibration_rows: training rows that calibrate the int8 model")
dbutils.widgets.text('latency_images', "200", "latency_images: test images timed one at a time per variant")
dbutils.widgets.text('num_workers', "2", "num_workers: TensorFlow workers, one Spark task each")
dbutils.widgets.text('output_dir', "output/notebooks/tflite", "output_dir: metrics.json, the SavedModel, the .tflite files and the plots")
dbutils.widgets.dropdown('mlflow', "false", ["true", "false"], "mlflow: log the run to MLflow (MLFLOW_TRACKING_URI)")

data_dir = dbutils.widgets.get('data_dir')
epochs = int(dbutils.widgets.get('epochs'))
calibration_rows = int(dbutils.widgets.get('calibration_rows'))
latency_images = int(dbutils.widgets.get('latency_images'))
num_workers = int(dbutils.widgets.get('num_workers'))
output_dir = dbutils.widgets.get('output_dir')
mlflow = dbutils.widgets.get('mlflow') == "true"

# COMMAND ----------

# MAGIC %md
# MAGIC ## The data in Spark
# MAGIC `load_data` reads the IDX files (or the default digits) into DataFrames of raw pixels (0..255); the scaling
# MAGIC is inside the model's graph, so a phone app feeds raw pixels too.

# COMMAND ----------

import numpy as np

from jobs import tflite
from tfos_lib import job, notebook, report

args = notebook.argv(data_dir=data_dir, epochs=epochs, calibration_rows=calibration_rows,
                     latency_images=latency_images, num_workers=num_workers, output_dir=output_dir, mlflow=mlflow,
                     overwrite=True)
cfg = job.parse_config(tflite.Config, args)  # the job's own options and checks
train_df, test_df, source = tflite.load_data(spark, cfg)
print(f"{source}: {train_df.count()} training rows, {test_df.count()} test rows")
rows = train_df.limit(16).collect()
grid = report.plot_image_grid(f"{ROOT}/build/notebooks/tflite_samples.png",
                              np.array([r.pixels for r in rows]).reshape(-1, 28, 28) / 255.0,
                              [str(r.label) for r in rows])
notebook.show_plots(str(grid.parent), [grid.name]);

# COMMAND ----------

# MAGIC %md
# MAGIC ## Training, export and conversion
# MAGIC `tflite.main` is the job itself: the CNN trains on `num_workers` Spark tasks, the chief exports the SavedModel
# MAGIC and converts it three ways, and each `.tflite` file scores the test DataFrame in the executors.

# COMMAND ----------

metrics = tflite.main(args)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Results beside the book's

# COMMAND ----------

import pandas as pd

pd.DataFrame(metrics["results"]["variants"]).T

# COMMAND ----------

notebook.book_vs_ours(metrics, {"Keras test accuracy": "keras_test_accuracy",
                                "int8 test accuracy": "variants.int8.accuracy",
                                "int8 size vs float32": "variants.int8.size_vs_float32"})

# COMMAND ----------

notebook.show_plots(cfg.output_dir, ["training_curves.png"]);

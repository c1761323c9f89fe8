# Databricks notebook source
# MAGIC %pip install --quiet ..

# COMMAND ----------

# MAGIC %md
# MAGIC # Capsule networks on real Fashion-MNIST (chapter 10)
# MAGIC
# MAGIC Chapter 10 builds Sabour et al.'s CapsNet (1,152 primary capsules, 10 class capsules of 16 dimensions, 3
# MAGIC routing-by-agreement iterations, margin loss and a reconstruction decoder; 8,215,568 parameters) for
# MAGIC Fashion-MNIST and claims "over 99%" test accuracy; the book's own repository logs 90.5% after 20 epochs. The
# MAGIC `capsnet` job (`jobs/capsnet.py`, layers in `tfos_lib.ml.capsules`) trains the same model data-parallel
# MAGIC with `tfos_lib`, beside a plain CNN of similar size trained the same way, and scores both on the real
# MAGIC 10,000 test images.
# MAGIC
# MAGIC **Data**: Fashion-MNIST's four IDX files from `data_dir`; empty: Debian's `dataset-fashion-mnist`
# MAGIC (`/usr/share/datasets/fashion-mnist`). The book's split: the first 55,000 training images train, the last
# MAGIC 5,000 validate.

# COMMAND ----------

from tfos_lib import notebook  # installed by `pip install -e .` (Jupyter) or the %pip cell (Databricks)

ROOT = notebook.use_repository_root()  # the clone's root: working directory and on sys.path (`import jobs`)
spark = notebook.spark_session()  # Databricks' session, else local[2]

# COMMAND ----------

# Parameters: one widget each (the Jupyter form's `parameters` cell).
dbutils.widgets.text('data_dir', "", "data_dir: directory with Fashion-MNIST's four IDX files; empty: the Debian package's")
dbutils.widgets.text('epochs', "1", "epochs: passes over the training images (the book's: 10)")
dbutils.widgets.text('train_rows', "55000", "train_rows: the first N training images train")
dbutils.widgets.text('validation_rows', "5000", "validation_rows: the last N training images validate after each epoch")
dbutils.widgets.text('routing_iterations', "3", "routing_iterations: routing-by-agreement iterations (the paper's: 3)")
dbutils.widgets.text('num_workers', "2", "num_workers: TensorFlow workers, one Spark task each")
dbutils.widgets.text('output_dir', "output/notebooks/capsnet", "output_dir: metrics.json, the models and the plots (a path or a URI)")
dbutils.widgets.dropdown('mlflow', "false", ["true", "false"], "mlflow: log the run to MLflow (MLFLOW_TRACKING_URI)")

data_dir = dbutils.widgets.get('data_dir')
epochs = int(dbutils.widgets.get('epochs'))
train_rows = int(dbutils.widgets.get('train_rows'))
validation_rows = int(dbutils.widgets.get('validation_rows'))
routing_iterations = int(dbutils.widgets.get('routing_iterations'))
num_workers = int(dbutils.widgets.get('num_workers'))
output_dir = dbutils.widgets.get('output_dir')
mlflow = dbutils.widgets.get('mlflow') == "true"

# COMMAND ----------

# MAGIC %md
# MAGIC ## The data in Spark
# MAGIC `load_data` reads the IDX files and makes the book's three splits as DataFrames, the pixels scaled to [0, 1]
# MAGIC in Spark; here are the class balance of the training split and a few of its images.

# COMMAND ----------

import numpy as np

from jobs import capsnet
from tfos_lib import job, notebook, report

args = notebook.argv(data_dir=data_dir, epochs=epochs, train_rows=train_rows, validation_rows=validation_rows,
                     routing_iterations=routing_iterations, num_workers=num_workers, output_dir=output_dir,
                     mlflow=mlflow, overwrite=True)
cfg = job.parse_config(capsnet.Config, args)  # the job's own options and checks
frames, source = capsnet.load_data(spark, cfg)
print(source, {name: frame.count() for name, frame in frames.items()})
frames["train"].groupBy("label").count().orderBy("label").toPandas().set_index("label").T

# COMMAND ----------

rows = frames["train"].limit(16).collect()
grid = report.plot_image_grid(f"{ROOT}/build/notebooks/capsnet_samples.png",
                              np.array([r.image for r in rows]).reshape(-1, 28, 28),
                              [capsnet.CLASSES[r.label] for r in rows])
notebook.show_plots(str(grid.parent), [grid.name]);

# COMMAND ----------

# MAGIC %md
# MAGIC ## Training, data-parallel
# MAGIC `capsnet.main` is the job itself: CapsNet trains on `num_workers` Spark tasks (one log line per epoch with
# MAGIC the validation accuracy), then the baseline CNN the same way; the chief scores both on the test images and
# MAGIC draws reconstructions and what each of the 16 capsule dimensions does.

# COMMAND ----------

metrics = capsnet.main(args)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Results beside the book's

# COMMAND ----------

notebook.book_vs_ours(metrics, {"CapsNet test accuracy": "test_accuracy",
                                "baseline CNN test accuracy": "baseline_cnn.test_accuracy",
                                "CapsNet examples per second": "examples_per_second"})

# COMMAND ----------

notebook.show_plots(cfg.output_dir, ["training_curves.png", "confusion_matrix.png", "reconstructions.png",
                                     "capsule_dimensions.png"]);

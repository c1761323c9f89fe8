# Databricks notebook source
# MAGIC %pip install --quiet "..[bnn]"

# COMMAND ----------

# MAGIC %md
# MAGIC # Traffic signs with a Bayesian neural network (chapter 8)
# MAGIC
# MAGIC Chapter 8 replaces LeNet's weights with distributions (TensorFlow Probability's Flipout layers, trained on the
# MAGIC negative ELBO) and classifies GTSRB's 43 German traffic signs from 32x32 grey images: 50 Monte-Carlo passes
# MAGIC per test image give about 89% accuracy of the averaged prediction after 1,000 steps of 128, and per-image
# MAGIC histograms of the sampled classes show four "case studies". The `traffic_signs` job (`jobs/traffic_signs.py`,
# MAGIC network in `tfos_lib.ml.bayesian`) trains that network data-parallel with `tfos_lib`, runs the Monte-Carlo
# MAGIC passes in Spark executors over a DataFrame of images, and checks the uncertainty instead of only drawing it:
# MAGIC calibration (ECE and a reliability diagram), accuracy when the most uncertain images go to a person, and
# MAGIC whether images that are not signs get a higher predictive entropy (AUROC). A plain LeNet is the baseline.
# MAGIC
# MAGIC **Data**: GTSRB as distributed (`Final_Training/Images/000NN/*.ppm` with `GT-000NN.csv`, `Final_Test/...`)
# MAGIC from `data_dir`; empty: the 43 signs rendered as pictograms on real photo backgrounds in that layout
# MAGIC (`default_tracks` tracks of `default_frames` frames per class; the same reader reads both).

# COMMAND ----------

from tfos_lib import notebook  # installed by `pip install -e .` (Jupyter) or the %pip cell (Databricks)

ROOT = notebook.use_repository_root()  # the clone's root: working directory and on sys.path (`import jobs`)
spark = notebook.spark_session()  # Databricks' session, else local[2]

# COMMAND ----------

# Parameters: one widget each (the Jupyter form's `parameters` cell).
dbutils.widgets.text('data_dir', "", "data_dir: GTSRB's folder (Final_Training, Final_Test); empty: generated signs in that layout")
dbutils.widgets.text('steps', "1000", "steps: optimizer steps in all (the book's 1,000 \"epochs\" are steps)")
dbutils.widgets.text('epochs', "10", "epochs: the steps cut into this many epochs: a checkpoint and a validation score each")
dbutils.widgets.text('batch_size', "128", "batch_size: global batch size (the book's: 128)")
dbutils.widgets.text('mc_samples', "50", "mc_samples: Monte-Carlo passes per test image (the book's: 50)")
dbutils.widgets.dropdown('baseline', "true", ["true", "false"], "baseline: also train the deterministic LeNet")
dbutils.widgets.text('default_tracks', "15", "default_tracks: generated data: training tracks per class")
dbutils.widgets.text('default_frames', "10", "default_frames: generated data: frames per track")
dbutils.widgets.text('default_test_tracks', "4", "default_test_tracks: generated data: test tracks per class")
dbutils.widgets.text('validation_fraction', "0.2", "validation_fraction: share of training tracks held out")
dbutils.widgets.text('ood_images', "400", "ood_images: out-of-distribution images (photo crops and noise)")
dbutils.widgets.text('num_workers', "2", "num_workers: TensorFlow workers, one Spark task each")
dbutils.widgets.text('output_dir', "output/notebooks/traffic_signs", "output_dir: metrics.json, the two models and the plots (a path or a URI)")
dbutils.widgets.dropdown('mlflow', "false", ["true", "false"], "mlflow: log the run to MLflow (MLFLOW_TRACKING_URI)")

data_dir = dbutils.widgets.get('data_dir')
steps = int(dbutils.widgets.get('steps'))
epochs = int(dbutils.widgets.get('epochs'))
batch_size = int(dbutils.widgets.get('batch_size'))
mc_samples = int(dbutils.widgets.get('mc_samples'))
baseline = dbutils.widgets.get('baseline') == "true"
default_tracks = int(dbutils.widgets.get('default_tracks'))
default_frames = int(dbutils.widgets.get('default_frames'))
default_test_tracks = int(dbutils.widgets.get('default_test_tracks'))
validation_fraction = float(dbutils.widgets.get('validation_fraction'))
ood_images = int(dbutils.widgets.get('ood_images'))
num_workers = int(dbutils.widgets.get('num_workers'))
output_dir = dbutils.widgets.get('output_dir')
mlflow = dbutils.widgets.get('mlflow') == "true"

# COMMAND ----------

# MAGIC %md
# MAGIC ## The data in Spark
# MAGIC `load_data` lists the images and reads the CSV ground truth in Spark; the executors decode each image, crop it
# MAGIC to its region of interest, turn it grey and scale it to 32x32 (`tfos_lib.datasets.gtsrb.preprocess`). Rows
# MAGIC that cannot be used are counted by reason (the job stops when more than `--max-bad-fraction` are). Training
# MAGIC and validation are split by track: the frames of one track are near duplicates.

# COMMAND ----------

import numpy as np

from jobs import traffic_signs
from tfos_lib import job, notebook, report
from tfos_lib.datasets import gtsrb

args = notebook.argv(data_dir=data_dir, steps=steps, epochs=epochs, batch_size=batch_size, mc_samples=mc_samples,
                     baseline=baseline, default_tracks=default_tracks, default_frames=default_frames,
                     default_test_tracks=default_test_tracks, validation_fraction=validation_fraction,
                     ood_images=ood_images, num_workers=num_workers,
                     output_dir=output_dir, mlflow=mlflow, overwrite=True)
cfg = job.parse_config(traffic_signs.Config, args)  # the job's own options and checks
train_df, validation_df, test_df, ood_df, data = traffic_signs.load_data(spark, cfg)
print(data["source"], {k: v for k, v in data.items() if k.endswith(("_rows", "_bad"))})
print(f"{train_df.count()} training images in {train_df.select('track').distinct().count()} tracks, "
      f"{validation_df.count()} validation images in {validation_df.select('track').distinct().count()} tracks")
train_df.groupBy("label").count().orderBy("label").toPandas().set_index("label").T

# COMMAND ----------

rows = train_df.orderBy("key").limit(200).collect()[::12][:16]
grid = report.plot_image_grid(f"{ROOT}/build/notebooks/traffic_signs_samples.png",
                              np.array([r.image for r in rows]).reshape(-1, 32, 32),
                              [gtsrb.CLASS_NAMES[r.label][:18] for r in rows])
notebook.show_plots(str(grid.parent), [grid.name]);

# COMMAND ----------

# MAGIC %md
# MAGIC ## Training, data-parallel, and the Monte-Carlo passes in the executors
# MAGIC `traffic_signs.main` is the job itself: the Flipout LeNet (then the plain one) trains on `num_workers` Spark
# MAGIC tasks with `MultiWorkerMirroredStrategy`, one log line per epoch with the validation accuracy of one stochastic
# MAGIC pass; both models are exported in the TF Serving layout, then `tfos_lib.ml.inference.predict` runs
# MAGIC `mc_samples` passes per image where the test and out-of-distribution images live and summarises them there.

# COMMAND ----------

metrics = traffic_signs.main(args)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Results beside the book's
# MAGIC On a few generated images and a handful of steps the figures say nothing about the method; the README's
# MAGIC table has the default run's.

# COMMAND ----------

import pandas as pd

display(pd.DataFrame(metrics["results"]["table"]).set_index("model"))
notebook.book_vs_ours(metrics, {"Monte-Carlo test accuracy": "mc_test_accuracy",
                                "accuracy of one pass (mean over passes)": "pass_accuracy.mean",
                                "OOD AUROC (mutual information)": "ood_auroc_mutual_information",
                                "case studies found": "case_studies"})

# COMMAND ----------

notebook.show_plots(cfg.output_dir, ["uncertainty.png", "case_studies.png", "training_curves.png"]);

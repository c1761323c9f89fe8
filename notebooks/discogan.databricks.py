# Databricks notebook source
# MAGIC %pip install --quiet ..

# COMMAND ----------

# MAGIC %md
# MAGIC # Shoes ↔ handbags with DiscoGAN (chapter 9)
# MAGIC
# MAGIC Chapter 9 trains DiscoGAN (two generators, G_AB shoes → bags and G_BA bags → shoes, two discriminators and
# MAGIC reconstruction losses) on pix2pix's edges2shoes and edges2handbags for 100,000 iterations and shows pictures
# MAGIC only. The `discogan` job (`jobs/discogan.py`, model in `tfos_lib.ml.gan`) keeps the book's architecture
# MAGIC without its bugs, trains it data-parallel with `tfos_lib`, and judges the result with numbers from a
# MAGIC Fashion-MNIST classifier trained in the same run: how often a translated shoe is called a bag (and back),
# MAGIC the round trip's reconstruction error, a Fréchet distance in the classifier's features and the diversity of
# MAGIC the translations, each beside the baseline it must beat.
# MAGIC
# MAGIC **Data**: pix2pix's `edges2shoes/` and `edges2handbags/` from `data_dir`; empty: Fashion-MNIST's real photos
# MAGIC of shoes and bags (Debian's `dataset-fashion-mnist`) written in that layout, Canny edges on the left.

# COMMAND ----------

from tfos_lib import notebook  # installed by `pip install -e .` (Jupyter) or the %pip cell (Databricks)

ROOT = notebook.use_repository_root()  # the clone's root: working directory and on sys.path (`import jobs`)
spark = notebook.spark_session()  # Databricks' session, else local[2]

# COMMAND ----------

# Parameters: one widget each (the Jupyter form's `parameters` cell).
dbutils.widgets.text('data_dir', "", "data_dir: directory with edges2shoes/ and edges2handbags/; empty: Fashion-MNIST's photos in that layout")
dbutils.widgets.text('image_size', "32", "image_size: side of the square images the networks see (the book's: 64)")
dbutils.widgets.text('epochs', "24", "epochs: rounds of steps_per_epoch iterations, a sample grid after each")
dbutils.widgets.text('steps_per_epoch', "25", "steps_per_epoch: iterations per epoch")
dbutils.widgets.text('batch_size', "64", "batch_size: global batch per domain (the book's: 256)")
dbutils.widgets.text('eval_images', "1000", "eval_images: validation photos per domain the figures are computed on")
dbutils.widgets.text('judge_images', "20000", "judge_images: Fashion-MNIST images the judge classifier learns from")
dbutils.widgets.text('judge_epochs', "3", "judge_epochs: the judge's passes over them")
dbutils.widgets.text('num_workers', "2", "num_workers: TensorFlow workers, one Spark task each")
dbutils.widgets.text('output_dir', "output/notebooks/discogan", "output_dir: metrics.json, the generators and the plots (a path or a URI)")
dbutils.widgets.dropdown('mlflow', "false", ["true", "false"], "mlflow: log the run to MLflow (MLFLOW_TRACKING_URI)")

data_dir = dbutils.widgets.get('data_dir')
image_size = int(dbutils.widgets.get('image_size'))
epochs = int(dbutils.widgets.get('epochs'))
steps_per_epoch = int(dbutils.widgets.get('steps_per_epoch'))
batch_size = int(dbutils.widgets.get('batch_size'))
eval_images = int(dbutils.widgets.get('eval_images'))
judge_images = int(dbutils.widgets.get('judge_images'))
judge_epochs = int(dbutils.widgets.get('judge_epochs'))
num_workers = int(dbutils.widgets.get('num_workers'))
output_dir = dbutils.widgets.get('output_dir')
mlflow = dbutils.widgets.get('mlflow') == "true"

# COMMAND ----------

# MAGIC %md
# MAGIC ## The data in Spark
# MAGIC `load_data` lists the JPEGs, and the executors decode each one, keep its photo half and resize it; files that
# MAGIC are corrupt or of the wrong size are dropped and listed. A few shoes and bags as the networks see them:

# COMMAND ----------

import numpy as np

from jobs import discogan
from tfos_lib import job, notebook, report

args = notebook.argv(data_dir=data_dir, image_size=image_size, epochs=epochs, steps_per_epoch=steps_per_epoch,
                     batch_size=batch_size, eval_images=eval_images, judge_images=judge_images,
                     judge_epochs=judge_epochs, num_workers=num_workers, output_dir=output_dir, mlflow=mlflow,
                     overwrite=True)
cfg = job.parse_config(discogan.Config, args)  # the job's own options and checks
inputs, data = discogan.load_data(spark, cfg)
print(data["source"], {name: {"used": f["used"], "dropped": f["dropped"]} for name, f in data["files"].items()})

# COMMAND ----------

shape = (-1, cfg.image_size, cfg.image_size, 3)
shoes, bags = (np.array([r.image for r in inputs[name].limit(8).collect()]).reshape(shape) for name in ("a", "b"))
grid = report.plot_image_grid(f"{ROOT}/build/notebooks/discogan_samples.png", np.concatenate([shoes, bags]),
                              ["shoe"] * len(shoes) + ["bag"] * len(bags))
notebook.show_plots(str(grid.parent), [grid.name]);

# COMMAND ----------

# MAGIC %md
# MAGIC ## Training, data-parallel
# MAGIC `discogan.main` is the job itself: both generators and both discriminators train on `num_workers` Spark
# MAGIC tasks (one log line per epoch with the losses, a sample grid after each epoch), then the chief trains the
# MAGIC judge, scores the validation photos and exports both generators.

# COMMAND ----------

metrics = discogan.main(args)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Results: each figure beside its baseline

# COMMAND ----------

notebook.book_vs_ours(metrics, {
    "shoes → bags: share the judge calls bags": "transfer_accuracy_shoes_to_bags",
    "bags → shoes: share the judge calls shoes": "transfer_accuracy_bags_to_shoes",
    "round-trip MSE, shoes → bags → shoes": "reconstruction_mse_a_b_a",
    "its baseline: MSE of the identity mapping": "identity_mapping_mse_a_b_a",
    "Fréchet distance, translated vs real bags": "frechet_distance_judge_features.translated_bags_vs_real_bags",
    "its baseline: untranslated shoes vs real bags": "frechet_distance_judge_features.untranslated_shoes_vs_real_bags",
    "targets met": "targets_met",
})

# COMMAND ----------

notebook.show_plots(cfg.output_dir, ["samples.png", "losses.png"]);

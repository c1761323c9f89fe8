# %% [markdown]
# # Traffic signs with a Bayesian neural network (chapter 8)
#
# Chapter 8 replaces LeNet's weights with distributions (TensorFlow Probability's Flipout layers, trained on the
# negative ELBO) and classifies GTSRB's 43 German traffic signs from 32x32 grey images: 50 Monte-Carlo passes
# per test image give about 89% accuracy of the averaged prediction after 1,000 steps of 128, and per-image
# histograms of the sampled classes show four "case studies". The `traffic_signs` job (`jobs/traffic_signs.py`,
# network in `tfos_lib.ml.bayesian`) trains that network data-parallel with `tfos_lib`, runs the Monte-Carlo
# passes in Spark executors over a DataFrame of images, and checks the uncertainty instead of only drawing it:
# calibration (ECE and a reliability diagram), accuracy when the most uncertain images go to a person, and
# whether images that are not signs get a higher predictive entropy (AUROC). A plain LeNet is the baseline.
#
# **Data**: GTSRB as distributed (`Final_Training/Images/000NN/*.ppm` with `GT-000NN.csv`, `Final_Test/...`)
# from `data_dir`; empty: the 43 signs rendered as pictograms on real photo backgrounds in that layout
# (`default_tracks` tracks of `default_frames` frames per class; the same reader reads both).
# %% [parameters]
data_dir = ""  # GTSRB's folder (Final_Training, Final_Test); empty: generated signs in that layout
steps = 1000  # optimizer steps in all (the book's 1,000 "epochs" are steps)
epochs = 10  # the steps cut into this many epochs: a checkpoint and a validation score each
batch_size = 128  # global batch size (the book's: 128)
mc_samples = 50  # Monte-Carlo passes per test image (the book's: 50)
baseline = True  # also train the deterministic LeNet
default_tracks = 15  # generated data: training tracks per class
default_frames = 10  # generated data: frames per track
default_test_tracks = 4  # generated data: test tracks per class
validation_fraction = 0.2  # share of training tracks held out
ood_images = 400  # out-of-distribution images (photo crops and noise)
num_workers = 2  # TensorFlow workers, one Spark task each
output_dir = "output/notebooks/traffic_signs"  # metrics.json, the two models and the plots (a path or a URI)
mlflow = False  # log the run to MLflow (MLFLOW_TRACKING_URI)
# %% [ci]
steps, epochs, batch_size, mc_samples, num_workers = 6, 2, 32, 4, 1
default_tracks, default_frames, default_test_tracks, validation_fraction, ood_images = 3, 2, 1, 0.34, 12
# %% [pip]
bnn
# %% [markdown]
# ## The data in Spark
# `load_data` lists the images and reads the CSV ground truth in Spark; the executors decode each image, crop it
# to its region of interest, turn it grey and scale it to 32x32 (`tfos_lib.datasets.gtsrb.preprocess`). Rows
# that cannot be used are counted by reason (the job stops when more than `--max-bad-fraction` are). Training
# and validation are split by track: the frames of one track are near duplicates.
# %%
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
# %%
rows = train_df.orderBy("key").limit(200).collect()[::12][:16]
grid = report.plot_image_grid(f"{ROOT}/build/notebooks/traffic_signs_samples.png",
                              np.array([r.image for r in rows]).reshape(-1, 32, 32),
                              [gtsrb.CLASS_NAMES[r.label][:18] for r in rows])
notebook.show_plots(str(grid.parent), [grid.name]);
# %% [markdown]
# ## Training, data-parallel, and the Monte-Carlo passes in the executors
# `traffic_signs.main` is the job itself: the Flipout LeNet (then the plain one) trains on `num_workers` Spark
# tasks with `MultiWorkerMirroredStrategy`, one log line per epoch with the validation accuracy of one stochastic
# pass; both models are exported in the TF Serving layout, then `tfos_lib.ml.inference.predict` runs
# `mc_samples` passes per image where the test and out-of-distribution images live and summarises them there.
# %%
metrics = traffic_signs.main(args)
# %% [markdown]
# ## Results beside the book's
# On a few generated images and a handful of steps the figures say nothing about the method; the README's
# table has the default run's.
# %%
import pandas as pd

display(pd.DataFrame(metrics["results"]["table"]).set_index("model"))
notebook.book_vs_ours(metrics, {"Monte-Carlo test accuracy": "mc_test_accuracy",
                                "accuracy of one pass (mean over passes)": "pass_accuracy.mean",
                                "OOD AUROC (mutual information)": "ood_auroc_mutual_information",
                                "case studies found": "case_studies"})
# %%
notebook.show_plots(cfg.output_dir, ["uncertainty.png", "case_studies.png", "training_curves.png"]);

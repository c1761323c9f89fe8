# %% [markdown]
# # MNIST to TensorFlow Lite (chapter 4)
#
# Chapter 4 trains a Keras CNN on MNIST (99.24% test accuracy after 12 epochs), freezes the graph and converts
# it with `toco` to a `.tflite` file for an Android app. Both tools are gone. The `tflite` job
# (`jobs/tflite.py`) trains the same CNN data-parallel with `tfos_lib`, exports a SavedModel in TF Serving's
# layout, converts it with `tf.lite.TFLiteConverter` to float32, float16 and full-integer int8 (calibrated on
# training rows), and scores every file over the test DataFrame in the executors with LiteRT's interpreter:
# accuracy, agreement with Keras, size and one-image latency.
#
# **Data**: the four MNIST (or Fashion-MNIST) IDX files from `data_dir`; empty: scikit-learn's real 8x8
# handwritten digits upscaled to 28x28.
# %% [parameters]
data_dir = ""  # directory with the four IDX files; empty: the offline default digits
epochs = 12  # passes over the training data (the book's: 12)
calibration_rows = 500  # training rows that calibrate the int8 model
latency_images = 200  # test images timed one at a time per variant
num_workers = 2  # TensorFlow workers, one Spark task each
output_dir = "output/notebooks/tflite"  # metrics.json, the SavedModel, the .tflite files and the plots
mlflow = False  # log the run to MLflow (MLFLOW_TRACKING_URI)
# %% [ci]
epochs, calibration_rows, latency_images = 2, 50, 10
# %% [markdown]
# ## The data in Spark
# `load_data` reads the IDX files (or the default digits) into DataFrames of raw pixels (0..255); the scaling
# is inside the model's graph, so a phone app feeds raw pixels too.
# %%
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
# %% [markdown]
# ## Training, export and conversion
# `tflite.main` is the job itself: the CNN trains on `num_workers` Spark tasks, the chief exports the SavedModel
# and converts it three ways, and each `.tflite` file scores the test DataFrame in the executors.
# %%
metrics = tflite.main(args)
# %% [markdown]
# ## Results beside the book's
# %%
import pandas as pd

pd.DataFrame(metrics["results"]["variants"]).T
# %%
notebook.book_vs_ours(metrics, {"Keras test accuracy": "keras_test_accuracy",
                                "int8 test accuracy": "variants.int8.accuracy",
                                "int8 size vs float32": "variants.int8.size_vs_float32"})
# %%
notebook.show_plots(cfg.output_dir, ["training_curves.png"]);

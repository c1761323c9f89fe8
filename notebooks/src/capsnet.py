# %% [markdown]
# # Capsule networks on real Fashion-MNIST (chapter 10)
#
# Chapter 10 builds Sabour et al.'s CapsNet (1,152 primary capsules, 10 class capsules of 16 dimensions, 3
# routing-by-agreement iterations, margin loss and a reconstruction decoder; 8,215,568 parameters) for
# Fashion-MNIST and claims "over 99%" test accuracy; the book's own repository logs 90.5% after 20 epochs. The
# `capsnet` job (`jobs/capsnet.py`, layers in `tfos_lib.ml.capsules`) trains the same model data-parallel
# with `tfos_lib`, beside a plain CNN of similar size trained the same way, and scores both on the real
# 10,000 test images.
#
# **Data**: Fashion-MNIST's four IDX files from `data_dir`; empty: Debian's `dataset-fashion-mnist`
# (`/usr/share/datasets/fashion-mnist`). The book's split: the first 55,000 training images train, the last
# 5,000 validate.
# %% [parameters]
data_dir = ""  # directory with Fashion-MNIST's four IDX files; empty: the Debian package's
epochs = 1  # passes over the training images (the book's: 10)
train_rows = 55000  # the first N training images train
validation_rows = 5000  # the last N training images validate after each epoch
routing_iterations = 3  # routing-by-agreement iterations (the paper's: 3)
num_workers = 2  # TensorFlow workers, one Spark task each
output_dir = "output/notebooks/capsnet"  # metrics.json, the models and the plots (a path or a URI)
mlflow = False  # log the run to MLflow (MLFLOW_TRACKING_URI)
# %% [ci]
import tempfile
from pathlib import Path

from jobs import capsnet
from tfos_lib.datasets import idx

real = idx.load_mnist(capsnet.FASHION_MNIST_DIR)  # the first real images as a small IDX directory
data_dir = tempfile.mkdtemp(prefix="fashion-")
for name, array in (("train-images-idx3-ubyte", real.x_train[:320]), ("train-labels-idx1-ubyte", real.y_train[:320]),
                    ("t10k-images-idx3-ubyte", real.x_test[:100]), ("t10k-labels-idx1-ubyte", real.y_test[:100])):
    idx.write_idx(Path(data_dir) / f"{name}.gz", array)
train_rows, validation_rows, epochs, num_workers = 256, 64, 1, 1
# %% [markdown]
# ## The data in Spark
# `load_data` reads the IDX files and makes the book's three splits as DataFrames, the pixels scaled to [0, 1]
# in Spark; here are the class balance of the training split and a few of its images.
# %%
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
# %%
rows = frames["train"].limit(16).collect()
grid = report.plot_image_grid(f"{ROOT}/build/notebooks/capsnet_samples.png",
                              np.array([r.image for r in rows]).reshape(-1, 28, 28),
                              [capsnet.CLASSES[r.label] for r in rows])
notebook.show_plots(str(grid.parent), [grid.name]);
# %% [markdown]
# ## Training, data-parallel
# `capsnet.main` is the job itself: CapsNet trains on `num_workers` Spark tasks (one log line per epoch with
# the validation accuracy), then the baseline CNN the same way; the chief scores both on the test images and
# draws reconstructions and what each of the 16 capsule dimensions does.
# %%
metrics = capsnet.main(args)
# %% [markdown]
# ## Results beside the book's
# %%
notebook.book_vs_ours(metrics, {"CapsNet test accuracy": "test_accuracy",
                                "baseline CNN test accuracy": "baseline_cnn.test_accuracy",
                                "CapsNet examples per second": "examples_per_second"})
# %%
notebook.show_plots(cfg.output_dir, ["training_curves.png", "confusion_matrix.png", "reconstructions.png",
                                     "capsule_dimensions.png"]);

# %% [markdown]
# # Shoes ↔ handbags with DiscoGAN (chapter 9)
#
# Chapter 9 trains DiscoGAN (two generators, G_AB shoes → bags and G_BA bags → shoes, two discriminators and
# reconstruction losses) on pix2pix's edges2shoes and edges2handbags for 100,000 iterations and shows pictures
# only. The `discogan` job (`jobs/discogan.py`, model in `tfos_lib.ml.gan`) keeps the book's architecture
# without its bugs, trains it data-parallel with `tfos_lib`, and judges the result with numbers from a
# Fashion-MNIST classifier trained in the same run: how often a translated shoe is called a bag (and back),
# the round trip's reconstruction error, a Fréchet distance in the classifier's features and the diversity of
# the translations, each beside the baseline it must beat.
#
# **Data**: pix2pix's `edges2shoes/` and `edges2handbags/` from `data_dir`; empty: Fashion-MNIST's real photos
# of shoes and bags (Debian's `dataset-fashion-mnist`) written in that layout, Canny edges on the left.
# %% [parameters]
data_dir = ""  # directory with edges2shoes/ and edges2handbags/; empty: Fashion-MNIST's photos in that layout
image_size = 32  # side of the square images the networks see (the book's: 64)
epochs = 24  # rounds of steps_per_epoch iterations, a sample grid after each
steps_per_epoch = 25  # iterations per epoch
batch_size = 64  # global batch per domain (the book's: 256)
eval_images = 1000  # validation photos per domain the figures are computed on
judge_images = 20000  # Fashion-MNIST images the judge classifier learns from
judge_epochs = 3  # the judge's passes over them
num_workers = 2  # TensorFlow workers, one Spark task each
output_dir = "output/notebooks/discogan"  # metrics.json, the generators and the plots (a path or a URI)
mlflow = False  # log the run to MLflow (MLFLOW_TRACKING_URI)
# %% [ci]
import tempfile

from tfos_lib.datasets import pix2pix

data_dir = tempfile.mkdtemp(prefix="pix2pix-")  # a few real photos in the pix2pix layout
pix2pix.write_fashion_pix2pix(data_dir, train_per_domain=16, val_per_domain=10, seed=0)
image_size, epochs, steps_per_epoch, num_workers = 16, 1, 2, 1
batch_size, eval_images, judge_images, judge_epochs = 4, 10, 300, 1
# %% [markdown]
# ## The data in Spark
# `load_data` lists the JPEGs, and the executors decode each one, keep its photo half and resize it; files that
# are corrupt or of the wrong size are dropped and listed. A few shoes and bags as the networks see them:
# %%
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
# %%
shape = (-1, cfg.image_size, cfg.image_size, 3)
shoes, bags = (np.array([r.image for r in inputs[name].limit(8).collect()]).reshape(shape) for name in ("a", "b"))
grid = report.plot_image_grid(f"{ROOT}/build/notebooks/discogan_samples.png", np.concatenate([shoes, bags]),
                              ["shoe"] * len(shoes) + ["bag"] * len(bags))
notebook.show_plots(str(grid.parent), [grid.name]);
# %% [markdown]
# ## Training, data-parallel
# `discogan.main` is the job itself: both generators and both discriminators train on `num_workers` Spark
# tasks (one log line per epoch with the losses, a sample grid after each epoch), then the chief trains the
# judge, scores the validation photos and exports both generators.
# %%
metrics = discogan.main(args)
# %% [markdown]
# ## Results: each figure beside its baseline
# %%
notebook.book_vs_ours(metrics, {
    "shoes → bags: share the judge calls bags": "transfer_accuracy_shoes_to_bags",
    "bags → shoes: share the judge calls shoes": "transfer_accuracy_bags_to_shoes",
    "round-trip MSE, shoes → bags → shoes": "reconstruction_mse_a_b_a",
    "its baseline: MSE of the identity mapping": "identity_mapping_mse_a_b_a",
    "Fréchet distance, translated vs real bags": "frechet_distance_judge_features.translated_bags_vs_real_bags",
    "its baseline: untranslated shoes vs real bags": "frechet_distance_judge_features.untranslated_shoes_vs_real_bags",
    "targets met": "targets_met",
})
# %%
notebook.show_plots(cfg.output_dir, ["samples.png", "losses.png"]);

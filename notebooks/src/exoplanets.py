# %% [markdown]
# # Exoplanets with distributed boosted trees (chapter 2)
#
# Chapter 2 trains TensorFlow's boosted trees (100 trees of depth 6) on Kaggle's Kepler light curves and reports
# accuracy 0.9912: exactly the share of stars without a planet, because its model answers "no planet" for
# every star (recall 0). The `exoplanets` job (`jobs/exoplanets.py`) computes features per star in the
# executors (detrending, FFT bands and a box-least-squares transit search, `tfos_lib.ml.lightcurves`) and
# trains gradient-boosted trees distributed over `tfos_lib` workers with YDF (or Spark MLlib's
# `GBTClassifier`), choosing its threshold on held-out training stars.
#
# **Data**: Kaggle's `exoTrain.csv` and `exoTest.csv` (`LABEL,FLUX.1,…,FLUX.3197`) from `data_dir`; empty:
# generated light curves in that format at the real sizes (5,087 + 570 stars, 37 + 5 planet hosts).
# %% [parameters]
data_dir = ""  # directory with exoTrain.csv and exoTest.csv; empty: generated files at the real sizes
engine = "ydf"  # ydf: distributed YDF on the tfos_lib workers; mllib: Spark MLlib's GBTClassifier
features = "transit"  # transit: statistics + FFT bands + transit search; fft: no search; raw: the book's fluxes
num_trees = 100  # boosting rounds (the book's: 100)
num_workers = 2  # YDF workers, one Spark task each
output_dir = "output/notebooks/exoplanets"  # metrics.json, the model and the plots
mlflow = False  # log the run to MLflow (MLFLOW_TRACKING_URI)
# %% [ci]
import tempfile

from tfos_lib.datasets import kepler

data_dir = tempfile.mkdtemp(prefix="kepler-")  # the real width, 60 + 24 stars with strong transits
kepler.write_default_data(data_dir, seed=5, sizes={"train": (60, 12), "test": (24, 6)})
features, num_trees = "fft", 20
# %% [markdown]
# ## The data in Spark
# `load_data` reads both CSVs with an explicit 3,198-column schema and checks every row; a few stars' first
# fluxes and the class balance:
# %%
from pyspark.sql import functions as F

from jobs import exoplanets
from tfos_lib import job, notebook

args = notebook.argv(data_dir=data_dir, engine=engine, features=features, num_trees=num_trees,
                     num_workers=num_workers, output_dir=output_dir, mlflow=mlflow, overwrite=True)
cfg = job.parse_config(exoplanets.Config, args)  # the job's own options and checks
train_stars, test_stars, source = exoplanets.load_data(spark, cfg)
print(source)
train_stars.groupBy("label").count().toPandas().set_index("label").T
# %%
train_stars.select("star", "label", *[F.col("flux")[i].alias(f"flux_{i + 1}") for i in range(6)]).limit(5).toPandas()
# %% [markdown]
# ## Features in the executors, trees on the workers
# `exoplanets.main` is the job itself: a pandas UDF computes each star's features, YDF's distributed learner
# trains on the `tfos_lib` workers (one Spark barrier task each), and the saved model scores the test stars in
# the executors.
# %%
metrics = exoplanets.main(args)
# %% [markdown]
# ## Results beside the book's
# %%
notebook.book_vs_ours(metrics, {"test PR-AUC": "test_pr_auc", "test recall": "test_recall",
                                "test precision": "test_precision", "majority class PR-AUC":
                                "majority_baseline.test_pr_auc", "feature seconds": "feature_seconds"})
# %%
notebook.show_plots(cfg.output_dir, ["curves.png", "light_curves.png"]);

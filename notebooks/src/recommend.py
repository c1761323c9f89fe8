# %% [markdown]
# # Product recommendations from a click log (chapter 11)
#
# Chapter 11 regresses Retailrocket's event codes (view 1, add-to-cart 2, purchase 3) with MSE from a visitor and
# an item embedding, by matrix factorisation and by a small network, and reports a test MSE of 0.0571; it never
# recommends anything. The `recommend` job (`jobs/recommend.py`) keeps the book's setup for comparison and ranks:
# both models train data-parallel with `tfos_lib` on implicit feedback, beside Spark's ALS and popularity, judged
# on each visitor's latest items.
#
# **Data**: Retailrocket's `events.csv` from `data_dir`; empty: a generated file in that format.
# %% [parameters]
data_dir = ""  # directory with events.csv; empty: a generated file
generated_events = 200000  # rows of the generated events.csv (without data_dir)
epochs = 5  # passes over the training interactions, per ranking model
batch_size = 1024  # global batch: rows (book setup) or positives (ranking)
als_iterations = 10  # ALS iterations (the baseline)
tune_als = True  # tune ALS's rank, regParam and alpha on the validation split (7 fits), as the job does
num_workers = 2  # TensorFlow workers, one Spark task each
output_dir = "output/notebooks/recommend"  # metrics.json, the models and the plots
mlflow = False  # log the run to MLflow (MLFLOW_TRACKING_URI)
# %% [ci]
generated_events = 4000
epochs = 1
batch_size = 256
als_iterations = 3
tune_als = False
# %% [markdown]
# ## The data in Spark
# `events_source` finds (or generates) `events.csv`; `retailrocket.read_events` validates it in Spark:
# %%
from jobs import recommend
from tfos_lib import job, notebook
from tfos_lib.datasets import retailrocket

args = notebook.argv(data_dir=data_dir, generated_events=generated_events, epochs=epochs, batch_size=batch_size,
                     als_iterations=als_iterations, tune_als=tune_als, num_workers=num_workers,
                     output_dir=output_dir, mlflow=mlflow,
                     overwrite=True)
cfg = job.parse_config(recommend.Config, args)  # the job's own options and checks
path, source = recommend.events_source(cfg, job.setup_logging(), dict(spark.sparkContext.getConf().getAll()))
events = retailrocket.read_events(spark, path, cfg.max_bad_fraction).events
events.groupBy("event").count().toPandas()
# %%
events.limit(5).toPandas()
# %% [markdown]
# ## Training, data-parallel
# `recommend.main` is the job itself: MF and the network train to rank on `num_workers` Spark tasks, then in the
# book's MSE setup; ALS trains in Spark ML; every model ranks all items for the held-out visitors.
# %%
metrics = recommend.main(args)
# %% [markdown]
# ## Results beside the book's
# %%
import pandas as pd

pd.DataFrame(metrics["results"]["ranking"]).T
# %%
notebook.book_vs_ours(metrics, {"network MSE, book setup": "book_mse.models.nn.test_mse",
                                "constant-mean MSE": "book_mse.constant_mean_mse"})
# %%
notebook.show_plots(cfg.output_dir);

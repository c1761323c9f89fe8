# %% [markdown]
# # Sentiment of short reviews (chapter 3)
#
# Chapter 3 trains Embedding(8) -> GRU(16) -> GRU(8) -> GRU(4) -> sigmoid on the SI650 review sentences and scores
# four probes in a TensorFlow.js page ("Awesome movie" 0.9957, "Terrible Movie" 0.0023, ...); it reports no
# accuracy. The `sentiment` job (`jobs/sentiment.py`) trains the same network data-parallel with `tfos_lib`,
# tests it honestly on a split by distinct sentence (the book's random row split leaks: the file repeats its
# sentences) and exports it to TensorFlow.js with a web page.
#
# **Data**: `sentiment.txt` (`label<TAB>sentence`) from `data_dir`; empty: a generated file in that format.
# %% [parameters]
data_dir = ""  # directory with sentiment.txt (label<TAB>sentence); empty: a generated file
synthetic_rows = 2000  # rows of the generated file (without data_dir)
epochs = 15  # passes over the training data (the book's: 15)
num_workers = 2  # TensorFlow workers, one Spark task each
random_split = True  # also train on the book's leaky random row split, for comparison
output_dir = "output/notebooks/sentiment"  # metrics.json, the model, the web page and the plots
mlflow = False  # log the run to MLflow (MLFLOW_TRACKING_URI)
# %% [ci]
synthetic_rows = 400
epochs = 2
random_split = False
# %% [markdown]
# ## The data in Spark
# `load_data` reads (or generates) the file and tokenises it in Spark; a few rows and the label balance:
# %%
from jobs import sentiment
from tfos_lib import job, notebook

args = notebook.argv(data_dir=data_dir, synthetic_rows=synthetic_rows, epochs=epochs, num_workers=num_workers,
                     random_split=random_split, output_dir=output_dir, mlflow=mlflow, overwrite=True)
cfg = job.parse_config(sentiment.Config, args)  # the job's own options and checks
rows, source = sentiment.load_data(spark, cfg)
print(f"{source}: {rows.count()} rows, {rows.select('sentence').distinct().count()} distinct sentences")
display_rows = rows.limit(8).toPandas()
display_rows
# %% [markdown]
# ## Training, data-parallel, and the web page
# `sentiment.main` is the job itself: per split it builds the vocabulary from the training rows, trains the GRU
# on `num_workers` Spark tasks (one log line per epoch), scores the held-out rows and the book's four probes, and
# writes the TensorFlow.js page to `<output_dir>/web/`.
# %%
metrics = sentiment.main(args)
# %% [markdown]
# ## Results beside the book's
# %%
notebook.book_vs_ours(metrics, {"held-out accuracy (split by sentence)": "test_accuracy",
                                "held-out AUC": "test_auc"})
# %%
import pandas as pd

pd.DataFrame(metrics["results"]["probes"]).T  # the book's four probes: its scores and ours
# %%
notebook.show_plots(cfg.output_dir);

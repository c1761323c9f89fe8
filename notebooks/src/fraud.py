# %% [markdown]
# # Credit-card fraud with an autoencoder (chapter 7)
#
# Chapter 7 trains a 29-14-7-7-29 autoencoder on normal transactions of Kaggle's `creditcard.csv` and flags a
# transaction when its reconstruction error passes a threshold: at recall 0.8 it catches 97 of 120 frauds with
# 1,082 false alarms (precision 0.082). The `fraud` job (`jobs/fraud.py`) trains the same autoencoder
# data-parallel with `tfos_lib`, splits by time and picks every threshold on validation rows, and compares it
# with two baselines on the same split: MLlib's logistic regression and the Mahalanobis distance.
#
# **Data**: `creditcard.csv` from `data_dir`; empty: a generated file in that format at the real size.
# %% [parameters]
data_dir = ""  # directory with creditcard.csv; empty: a generated file (284,807 rows)
split = "time"  # time: train on earlier, test on later transactions; random: the book's shuffle
epochs = 20  # passes over the normal training transactions (the book's: 100)
num_workers = 2  # TensorFlow workers, one Spark task each
output_dir = "output/notebooks/fraud"  # metrics.json, the model and the plots
mlflow = False  # log the run to MLflow (MLFLOW_TRACKING_URI)
# %% [ci]
import tempfile

from tfos_lib.datasets import creditcard

data_dir = tempfile.mkdtemp(prefix="creditcard-")  # a small file in the real format
creditcard.write_creditcard_csv(f"{data_dir}/{creditcard.CREDITCARD_FILE}",
                                creditcard.generate_transactions(rows=6000, frauds=150, duplicates=20, seed=3))
epochs = 2
# %% [markdown]
# ## The data in Spark
# `load_data` reads and validates the CSV in Spark (duplicates dropped); `split_rows` splits it by time:
# %%
from jobs import fraud
from tfos_lib import job, notebook

args = notebook.argv(data_dir=data_dir, split=split, epochs=epochs, num_workers=num_workers,
                     output_dir=output_dir, mlflow=mlflow, overwrite=True)
cfg = job.parse_config(fraud.Config, args)  # the job's own options and checks
rows, counts, source = fraud.load_data(spark, cfg)
parts, sizes = fraud.split_rows(rows, cfg)
print(source, counts)
sizes
# %%
rows.select("Time", "V1", "V2", "V3", "Amount", "Class").limit(5).toPandas()
# %% [markdown]
# ## Training, data-parallel
# `fraud.main` is the job itself: the autoencoder trains on `num_workers` Spark tasks (one log line per epoch
# with the validation PR-AUC), the baselines fit in Spark ML, and the saved model scores the test rows in the
# executors.
# %%
metrics = fraud.main(args)
# %% [markdown]
# ## Results beside the book's
# %%
import pandas as pd

pd.DataFrame({name: {"PR-AUC": m["pr_auc"], "ROC-AUC": m["roc_auc"], **m["at_validation_threshold"]}
              for name, m in metrics["results"]["models"].items()}).T
# %%
notebook.book_vs_ours(metrics, {"autoencoder PR-AUC": "models.autoencoder.pr_auc"})
# %%
notebook.show_plots(cfg.output_dir);

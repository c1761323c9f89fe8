# Databricks notebook source
# MAGIC %pip install --quiet ..

# COMMAND ----------

# MAGIC %md
# MAGIC # Generating text with a 2-layer LSTM (chapter 13)
# MAGIC
# MAGIC Chapter 13 tokenises about 100 pages of *Mastering PostgreSQL 10* (50,743 word and punctuation tokens,
# MAGIC vocabulary 3,583), trains Embedding(128) → LSTM(128) × 2 → Dense(vocabulary) with Adam for 500 epochs of 12
# MAGIC batches, and generates 200 words greedily from "postgresql". It reports no loss and no perplexity. The
# MAGIC `text_lstm` job (`jobs/text_lstm.py`) trains that language model data-parallel with `tfos_lib` and measures
# MAGIC it: cross-entropy, perplexity and bits per token on the last 10% of every book (never trained on), beside
# MAGIC baselines counted in Spark in the same run (an add-one unigram and Kneser-Ney n-grams up to `max_order`),
# MAGIC then samples text at several temperatures; the SavedModel's signature generates text from a prompt.
# MAGIC
# MAGIC **Data**: a UTF-8 text file or a folder of them from `data_dir` (the book's `postgre_book.txt`); empty: Jane
# MAGIC Austen's six novels from Debian's `r-cran-janeaustenr`, read without R. Characters (`tokens = "char"`) by
# MAGIC default; `"word"` is the book's tokenisation.

# COMMAND ----------

from tfos_lib import notebook  # installed by `pip install -e .` (Jupyter) or the %pip cell (Databricks)

ROOT = notebook.use_repository_root()  # the clone's root: working directory and on sys.path (`import jobs`)
spark = notebook.spark_session()  # Databricks' session, else local[2]

# COMMAND ----------

# Parameters: one widget each (the Jupyter form's `parameters` cell).
dbutils.widgets.text('data_dir', "", "data_dir: a UTF-8 text file or a folder of them; empty: Jane Austen's six novels")
dbutils.widgets.text('tokens', "char", "tokens: char: characters; word: the book's words and punctuation tokens")
dbutils.widgets.text('epochs', "0", "epochs: passes over the training windows; 0: the job's default (8 for char, 50 for word)")
dbutils.widgets.text('seq_length', "0", "seq_length: tokens per training window; 0: the job's default (100 for char, 32 for word)")
dbutils.widgets.text('rnn_size', "0", "rnn_size: units of each LSTM layer; 0: the job's default (256 for char, 128 for word)")
dbutils.widgets.text('batch_size', "128", "batch_size: global batch size in windows (the book's: 128)")
dbutils.widgets.text('max_order', "5", "max_order: n-gram baselines of order 2 .. this")
dbutils.widgets.text('sample_length', "200", "sample_length: tokens per generated sample (the book's: 200 words)")
dbutils.widgets.text('num_workers', "2", "num_workers: TensorFlow workers, one Spark task each")
dbutils.widgets.text('output_dir', "output/notebooks/text_lstm", "output_dir: metrics.json, samples.txt, the model and the plots (a path or a URI)")
dbutils.widgets.dropdown('mlflow', "false", ["true", "false"], "mlflow: log the run to MLflow (MLFLOW_TRACKING_URI)")

data_dir = dbutils.widgets.get('data_dir')
tokens = dbutils.widgets.get('tokens')
epochs = int(dbutils.widgets.get('epochs'))
seq_length = int(dbutils.widgets.get('seq_length'))
rnn_size = int(dbutils.widgets.get('rnn_size'))
batch_size = int(dbutils.widgets.get('batch_size'))
max_order = int(dbutils.widgets.get('max_order'))
sample_length = int(dbutils.widgets.get('sample_length'))
num_workers = int(dbutils.widgets.get('num_workers'))
output_dir = dbutils.widgets.get('output_dir')
mlflow = dbutils.widgets.get('mlflow') == "true"

# COMMAND ----------

# MAGIC %md
# MAGIC ## The data in Spark
# MAGIC `load_data` reads every file as one row, tokenises it in the executors, holds out the last 10% of each book
# MAGIC as one contiguous block, builds the vocabulary from the training blocks only and encodes both blocks as token
# MAGIC ids (all Spark column expressions). Training windows are cut from the ids in Spark too.

# COMMAND ----------

from pyspark.sql import functions as F

from jobs import text_lstm
from tfos_lib import job, notebook
from tfos_lib.datasets import books

args = notebook.argv(data_dir=data_dir, tokens=tokens, epochs=epochs or None, seq_length=seq_length or None,
                     rnn_size=rnn_size or None, batch_size=batch_size, max_order=max_order,
                     sample_length=sample_length, num_workers=num_workers, output_dir=output_dir, mlflow=mlflow,
                     overwrite=True)
cfg = job.parse_config(text_lstm.Config, args)  # the job's own options and checks
ids, vocabulary, data = text_lstm.load_data(spark, cfg)
print({k: v for k, v in data.items()})
ids.select(F.element_at(F.split("book", "/"), -1).alias("file"), F.size("train").alias("training tokens"),
           F.size("held_out").alias("held-out tokens")).toPandas()

# COMMAND ----------

first = ids.orderBy("book").select("train").first()[0]
print(f"vocabulary: {len(vocabulary)} tokens, e.g. {vocabulary[1:40]}")
print(f"the first book's opening as the model sees it ({cfg.tokens} tokens, detokenised):")
print(books.detokenize_py([vocabulary[i] for i in first[:600 if cfg.tokens == 'char' else 120]], cfg.tokens))
windows = books.windows(ids, "train", cfg.resolved_seq_length)
print(f"{windows.count()} training windows of {cfg.resolved_seq_length} tokens (x, and y = x shifted by one)")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Training, data-parallel
# MAGIC `text_lstm.main` is the job itself: the n-gram baselines are counted in Spark, then the LSTM trains on
# MAGIC `num_workers` Spark tasks with `MultiWorkerMirroredStrategy`, one log line per epoch with the held-out loss
# MAGIC the chief computes; the chief then samples text and exports the generating SavedModel.

# COMMAND ----------

metrics = text_lstm.main(args)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Results: the LSTM beside its baselines and the book
# MAGIC The book reported no loss, so its row is only the corpus it trained on. On the tiny CI text the LSTM has no
# MAGIC chance against the n-grams; the README's table has the default run's figures.

# COMMAND ----------

import pandas as pd

results = metrics["results"]
table = pd.DataFrame({"LSTM": results["lstm"], **results["ngram"]}).T[["cross_entropy", "perplexity",
                                                                      "bits_per_token"]]
display(table)
notebook.book_vs_ours(metrics, {"LSTM beats the best n-gram": "lstm_beats_best_ngram", "best n-gram": "best_ngram",
                                "LSTM parameters": "parameters", "tokens per second": "tokens_per_second"})

# COMMAND ----------

for temperature, sample in results["samples"].items():
    print(f"--- temperature {temperature} ({'greedy, the book' if float(temperature) == 0 else 'sampled'}):")
    print(sample, end="\n\n")
notebook.show_plots(cfg.output_dir, ["training_curves.png"]);

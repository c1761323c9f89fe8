# %% [markdown]
# # Generating text with a 2-layer LSTM (chapter 13)
#
# Chapter 13 tokenises about 100 pages of *Mastering PostgreSQL 10* (50,743 word and punctuation tokens,
# vocabulary 3,583), trains Embedding(128) → LSTM(128) × 2 → Dense(vocabulary) with Adam for 500 epochs of 12
# batches, and generates 200 words greedily from "postgresql". It reports no loss and no perplexity. The
# `text_lstm` job (`jobs/text_lstm.py`) trains that language model data-parallel with `tfos_lib` and measures
# it: cross-entropy, perplexity and bits per token on the last 10% of every book (never trained on), beside
# baselines counted in Spark in the same run (an add-one unigram and Kneser-Ney n-grams up to `max_order`),
# then samples text at several temperatures; the SavedModel's signature generates text from a prompt.
#
# **Data**: a UTF-8 text file or a folder of them from `data_dir` (the book's `postgre_book.txt`); empty: Jane
# Austen's six novels from Debian's `r-cran-janeaustenr`, read without R. Characters (`tokens = "char"`) by
# default; `"word"` is the book's tokenisation.
# %% [parameters]
data_dir = ""  # a UTF-8 text file or a folder of them; empty: Jane Austen's six novels
tokens = "char"  # char: characters; word: the book's words and punctuation tokens
epochs = 0  # passes over the training windows; 0: the job's default (8 for char, 50 for word)
seq_length = 0  # tokens per training window; 0: the job's default (100 for char, 32 for word)
rnn_size = 0  # units of each LSTM layer; 0: the job's default (256 for char, 128 for word)
batch_size = 128  # global batch size in windows (the book's: 128)
max_order = 5  # n-gram baselines of order 2 .. this
sample_length = 200  # tokens per generated sample (the book's: 200 words)
num_workers = 2  # TensorFlow workers, one Spark task each
output_dir = "output/notebooks/text_lstm"  # metrics.json, samples.txt, the model and the plots (a path or a URI)
mlflow = False  # log the run to MLflow (MLFLOW_TRACKING_URI)
# %% [ci]
import os
import tempfile

from tfos_lib.datasets import books

data_dir = tempfile.mkdtemp(prefix="austen-")  # the opening 20,000 characters of two of the real novels
package = books.find_janeaustenr(["/", os.path.join(ROOT, "build", "janeaustenr")])
for path in books.write_austen_books(package, data_dir):
    if not path.endswith(("emma.txt", "persuasion.txt")):
        os.remove(path)
        continue
    with open(path, encoding="utf-8") as f:
        opening = f.read(20000)
    with open(path, "w", encoding="utf-8") as f:
        f.write(opening)
epochs, seq_length, rnn_size, batch_size, max_order, sample_length, num_workers = 2, 32, 32, 32, 3, 80, 1
# %% [markdown]
# ## The data in Spark
# `load_data` reads every file as one row, tokenises it in the executors, holds out the last 10% of each book
# as one contiguous block, builds the vocabulary from the training blocks only and encodes both blocks as token
# ids (all Spark column expressions). Training windows are cut from the ids in Spark too.
# %%
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
# %%
first = ids.orderBy("book").select("train").first()[0]
print(f"vocabulary: {len(vocabulary)} tokens, e.g. {vocabulary[1:40]}")
print(f"the first book's opening as the model sees it ({cfg.tokens} tokens, detokenised):")
print(books.detokenize_py([vocabulary[i] for i in first[:600 if cfg.tokens == 'char' else 120]], cfg.tokens))
windows = books.windows(ids, "train", cfg.resolved_seq_length)
print(f"{windows.count()} training windows of {cfg.resolved_seq_length} tokens (x, and y = x shifted by one)")
# %% [markdown]
# ## Training, data-parallel
# `text_lstm.main` is the job itself: the n-gram baselines are counted in Spark, then the LSTM trains on
# `num_workers` Spark tasks with `MultiWorkerMirroredStrategy`, one log line per epoch with the held-out loss
# the chief computes; the chief then samples text and exports the generating SavedModel.
# %%
metrics = text_lstm.main(args)
# %% [markdown]
# ## Results: the LSTM beside its baselines and the book
# The book reported no loss, so its row is only the corpus it trained on. On the tiny CI text the LSTM has no
# chance against the n-grams; the README's table has the default run's figures.
# %%
import pandas as pd

results = metrics["results"]
table = pd.DataFrame({"LSTM": results["lstm"], **results["ngram"]}).T[["cross_entropy", "perplexity",
                                                                      "bits_per_token"]]
display(table)
notebook.book_vs_ours(metrics, {"LSTM beats the best n-gram": "lstm_beats_best_ngram", "best n-gram": "best_ngram",
                                "LSTM parameters": "parameters", "tokens per second": "tokens_per_second"})
# %%
for temperature, sample in results["samples"].items():
    print(f"--- temperature {temperature} ({'greedy, the book' if float(temperature) == 0 else 'sampled'}):")
    print(sample, end="\n\n")
notebook.show_plots(cfg.output_dir, ["training_curves.png"]);

# Databricks notebook source
# MAGIC %pip install --quiet ..

# COMMAND ----------

# MAGIC %md
# MAGIC # Speech commands: keyword spotting from WAV files (chapter 5)
# MAGIC
# MAGIC Chapter 5 runs TensorFlow's `speech_commands` example: 1-second 16 kHz clips become 98x40 MFCC fingerprints
# MAGIC (30 ms windows every 10 ms, 40 coefficients), and a small convolutional network (`conv`) tells 12 classes
# MAGIC apart: ten command words, `_silence_` and `_unknown_`. On real recordings of Speech Commands, split so that
# MAGIC no speaker is in two splits, the book reports 87.7% test accuracy after 18,000 steps. The `speech_commands`
# MAGIC job (`jobs/speech_commands.py`, features and model in `tfos_lib.ml.speech`) reads the dataset's own layout
# MAGIC in Spark, computes the features with `tf.signal` inside each worker's `tf.data` pipeline (with the example's
# MAGIC time shift and background-noise mixing on training clips), trains data-parallel with `tfos_lib`, and exports
# MAGIC a SavedModel that takes raw samples, so serving computes the same features.
# MAGIC
# MAGIC **Data**: a Speech Commands folder from `data_dir` (one folder per word of `<speaker>_nohash_<n>.wav`,
# MAGIC `validation_list.txt`, `testing_list.txt`, `_background_noise_/`); empty: the same layout spoken by
# MAGIC Debian's espeak-ng, each voice and variant one "speaker" (synthetic speech is far easier than real voices).

# COMMAND ----------

from tfos_lib import notebook  # installed by `pip install -e .` (Jupyter) or the %pip cell (Databricks)

ROOT = notebook.use_repository_root()  # the clone's root: working directory and on sys.path (`import jobs`)
spark = notebook.spark_session()  # Databricks' session, else local[2]

# COMMAND ----------

# Parameters: one widget each (the Jupyter form's `parameters` cell).
dbutils.widgets.text('data_dir', "", "data_dir: a Speech Commands folder; empty: words synthesised by espeak-ng in that layout")
dbutils.widgets.text('model', "conv", "model: the example's conv, or low_latency_conv")
dbutils.widgets.text('epochs', "36", "epochs: passes over the training clips (the job's default; ~22 min on 2 cores)")
dbutils.widgets.text('batch_size', "50", "batch_size: global batch size")
dbutils.widgets.text('default_speakers', "240", "default_speakers: synthesised data: espeak-ng voice+variant speakers")
dbutils.widgets.text('default_repeats', "2", "default_repeats: synthesised data: times each speaker says each command word")
dbutils.widgets.text('default_other_words', "12", "default_other_words: synthesised data: other words (the unknown class)")
dbutils.widgets.text('validation_percentage', "10.0", "validation_percentage: speakers held out for validation (hash rule, when the folder has no lists)")
dbutils.widgets.text('testing_percentage', "10.0", "testing_percentage: speakers held out for testing (hash rule, when the folder has no lists)")
dbutils.widgets.text('num_workers', "1", "num_workers: TensorFlow workers, one Spark task each")
dbutils.widgets.text('output_dir', "output/notebooks/speech_commands", "output_dir: metrics.json, the models and the plots (a path or a URI)")
dbutils.widgets.dropdown('mlflow', "false", ["true", "false"], "mlflow: log the run to MLflow (MLFLOW_TRACKING_URI)")

data_dir = dbutils.widgets.get('data_dir')
model = dbutils.widgets.get('model')
epochs = int(dbutils.widgets.get('epochs'))
batch_size = int(dbutils.widgets.get('batch_size'))
default_speakers = int(dbutils.widgets.get('default_speakers'))
default_repeats = int(dbutils.widgets.get('default_repeats'))
default_other_words = int(dbutils.widgets.get('default_other_words'))
validation_percentage = float(dbutils.widgets.get('validation_percentage'))
testing_percentage = float(dbutils.widgets.get('testing_percentage'))
num_workers = int(dbutils.widgets.get('num_workers'))
output_dir = dbutils.widgets.get('output_dir')
mlflow = dbutils.widgets.get('mlflow') == "true"

# COMMAND ----------

# MAGIC %md
# MAGIC ## The clips in Spark
# MAGIC `load_data` lists the WAV files with Spark's `binaryFile`; the executors decode and check each one (16 kHz,
# MAGIC mono, 16-bit, complete) and files that cannot be used are counted by reason. The split follows the dataset's
# MAGIC rule (its two lists, or the hash of the speaker), then `_silence_` and `_unknown_` clips are added as the
# MAGIC example does.

# COMMAND ----------

import matplotlib.pyplot as plt
import numpy as np

from jobs import speech_commands
from tfos_lib import import_tensorflow, job, notebook
from tfos_lib.ml import speech

args = notebook.argv(data_dir=data_dir, model=model, epochs=epochs, batch_size=batch_size,
                     default_speakers=default_speakers, default_repeats=default_repeats,
                     default_other_words=default_other_words, validation_percentage=validation_percentage,
                     testing_percentage=testing_percentage, num_workers=num_workers,
                     output_dir=output_dir, mlflow=mlflow, overwrite=True)
cfg = job.parse_config(speech_commands.Config, args)  # the job's own options and checks
splits, noise, data = speech_commands.load_data(spark, cfg)
print(data["source"], "| clips:", data["clips_per_split"], "| speakers:", data["speakers_per_split"],
      "| unusable files:", data["bad_files"] or "none")
counts = splits["training"].groupBy("label").count().orderBy("label").toPandas()
counts.index = [cfg.labels[i] for i in counts.pop("label")]
counts.T

# COMMAND ----------

# MAGIC %md
# MAGIC One training clip and the features the workers compute from it (the same `tf.signal` code runs inside the
# MAGIC exported SavedModel).

# COMMAND ----------

row = splits["training"].where("label > 1").first()
audio = np.asarray(row.audio, np.float32)
fingerprint = speech.features(import_tensorflow(), audio[None, :]).numpy()[0]
figure, (wave, mfcc) = plt.subplots(1, 2, figsize=(11, 3))
wave.plot(np.arange(len(audio)) / speech.SAMPLE_RATE, audio, linewidth=0.5)
wave.set(title=f"'{cfg.labels[row.label]}': 1 s at 16 kHz", xlabel="seconds")
mfcc.imshow(fingerprint.T, aspect="auto", origin="lower")
mfcc.set(title=f"MFCC {fingerprint.shape[0]}x{fingerprint.shape[1]}", xlabel="frame (10 ms)", ylabel="coefficient")
plt.show()

# COMMAND ----------

# MAGIC %md
# MAGIC ## Training, data-parallel
# MAGIC `speech_commands.main` is the job itself: the clips go to `num_workers` Spark tasks, each worker computes the
# MAGIC MFCC and the augmentation in its `tf.data` pipeline, one log line per epoch reports the validation accuracy;
# MAGIC the chief exports the SavedModel (raw samples in) and a `.tflite`, and both are scored on the test clips in the
# MAGIC executors against the training pipeline's predictions.

# COMMAND ----------

metrics = speech_commands.main(args)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Results beside the book's
# MAGIC On a handful of synthesised clips and one epoch the figures say nothing about the method; the README's table
# MAGIC has the default run's.

# COMMAND ----------

import pandas as pd

display(pd.DataFrame(metrics["results"]["table"]).set_index("model"))
notebook.book_vs_ours(metrics, {"test accuracy": "test_accuracy", "test clips": "test_clips"})

# COMMAND ----------

notebook.show_plots(cfg.output_dir, ["confusion_matrix.png", "noise_robustness.png", "streaming.png",
                                     "training_curves.png"]);

# %% [markdown]
# # Speech commands: keyword spotting from WAV files (chapter 5)
#
# Chapter 5 runs TensorFlow's `speech_commands` example: 1-second 16 kHz clips become 98x40 MFCC fingerprints
# (30 ms windows every 10 ms, 40 coefficients), and a small convolutional network (`conv`) tells 12 classes
# apart: ten command words, `_silence_` and `_unknown_`. On real recordings of Speech Commands, split so that
# no speaker is in two splits, the book reports 87.7% test accuracy after 18,000 steps. The `speech_commands`
# job (`jobs/speech_commands.py`, features and model in `tfos_lib.ml.speech`) reads the dataset's own layout
# in Spark, computes the features with `tf.signal` inside each worker's `tf.data` pipeline (with the example's
# time shift and background-noise mixing on training clips), trains data-parallel with `tfos_lib`, and exports
# a SavedModel that takes raw samples, so serving computes the same features.
#
# **Data**: a Speech Commands folder from `data_dir` (one folder per word of `<speaker>_nohash_<n>.wav`,
# `validation_list.txt`, `testing_list.txt`, `_background_noise_/`); empty: the same layout spoken by
# Debian's espeak-ng, each voice and variant one "speaker" (synthetic speech is far easier than real voices).
# %% [parameters]
data_dir = ""  # a Speech Commands folder; empty: words synthesised by espeak-ng in that layout
model = "conv"  # the example's conv, or low_latency_conv
epochs = 36  # passes over the training clips (the job's default; ~22 min on 2 cores)
batch_size = 50  # global batch size
default_speakers = 240  # synthesised data: espeak-ng voice+variant speakers
default_repeats = 2  # synthesised data: times each speaker says each command word
default_other_words = 12  # synthesised data: other words (the unknown class)
validation_percentage = 10.0  # speakers held out for validation (hash rule, when the folder has no lists)
testing_percentage = 10.0  # speakers held out for testing (hash rule, when the folder has no lists)
num_workers = 1  # TensorFlow workers, one Spark task each
output_dir = "output/notebooks/speech_commands"  # metrics.json, the models and the plots (a path or a URI)
mlflow = False  # log the run to MLflow (MLFLOW_TRACKING_URI)
# %% [ci]
epochs, batch_size, default_speakers, default_repeats, default_other_words = 1, 16, 12, 1, 2
validation_percentage, testing_percentage = 30.0, 30.0
# %% [markdown]
# ## The clips in Spark
# `load_data` lists the WAV files with Spark's `binaryFile`; the executors decode and check each one (16 kHz,
# mono, 16-bit, complete) and files that cannot be used are counted by reason. The split follows the dataset's
# rule (its two lists, or the hash of the speaker), then `_silence_` and `_unknown_` clips are added as the
# example does.
# %%
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
# %% [markdown]
# One training clip and the features the workers compute from it (the same `tf.signal` code runs inside the
# exported SavedModel).
# %%
row = splits["training"].where("label > 1").first()
audio = np.asarray(row.audio, np.float32)
fingerprint = speech.features(import_tensorflow(), audio[None, :]).numpy()[0]
figure, (wave, mfcc) = plt.subplots(1, 2, figsize=(11, 3))
wave.plot(np.arange(len(audio)) / speech.SAMPLE_RATE, audio, linewidth=0.5)
wave.set(title=f"'{cfg.labels[row.label]}': 1 s at 16 kHz", xlabel="seconds")
mfcc.imshow(fingerprint.T, aspect="auto", origin="lower")
mfcc.set(title=f"MFCC {fingerprint.shape[0]}x{fingerprint.shape[1]}", xlabel="frame (10 ms)", ylabel="coefficient")
plt.show()
# %% [markdown]
# ## Training, data-parallel
# `speech_commands.main` is the job itself: the clips go to `num_workers` Spark tasks, each worker computes the
# MFCC and the augmentation in its `tf.data` pipeline, one log line per epoch reports the validation accuracy;
# the chief exports the SavedModel (raw samples in) and a `.tflite`, and both are scored on the test clips in the
# executors against the training pipeline's predictions.
# %%
metrics = speech_commands.main(args)
# %% [markdown]
# ## Results beside the book's
# On a handful of synthesised clips and one epoch the figures say nothing about the method; the README's table
# has the default run's.
# %%
import pandas as pd

display(pd.DataFrame(metrics["results"]["table"]).set_index("model"))
notebook.book_vs_ours(metrics, {"test accuracy": "test_accuracy", "test clips": "test_clips"})
# %%
notebook.show_plots(cfg.output_dir, ["confusion_matrix.png", "noise_robustness.png", "streaming.png",
                                     "training_curves.png"]);

"""Speech commands (chapter 5): keyword spotting on 1-s WAV clips, features computed in each worker's tf.data.

Book: "TensorFlow Machine Learning Projects" (Packt, 2018), chapter 5. The book runs
TensorFlow's ``speech_commands`` example unchanged: the ``conv`` model on 98x40 MFCC
fingerprints (30 ms windows every 10 ms, 40 coefficients), 12 classes (``_silence_``,
``_unknown_`` and yes no up down left right on off stop go), plain SGD at 0.001 then
0.0001 for 15,000 + 3,000 steps of 100, and reports 87.7% test accuracy (N=4,890,
88.5% validation) on real recordings of Speech Commands, split by speaker.

This job reads the dataset's own layout in Spark (``binaryFile``; decoded and checked in
the executors, bad files counted per reason), builds the example's 12-class sets
(silence and unknown percentages, the speaker-hash split or the two lists), and trains
the example's model data-parallel through tfos_lib, with the MFCC (``tf.signal``), the
time shift and the background-noise mixing in each worker's ``tf.data`` pipeline. The
defaults differ from the example where its 18,000 steps (hours on a small CPU) would be
needed: Adam at 0.002 (``--optimizer sgd --learning-rate 0.001`` is the example's),
batch 50 (100), dropout 0.25 (0.5), 36 epochs (3,348 steps), and each MFCC coefficient
standardised over the clip (``--no-normalize``); the learning rate drops tenfold for the
last quarter of the steps, as the example's 0.001 then 0.0001. Measured on the
synthesised default data (the default run: 1 worker on 2 cores shared with another
training job, 36 epochs of 37.3 s, 1,527 s wall): 0.891 validation and 0.906 test
accuracy (500 of 552 clips, 23 unseen speakers; 24 epochs gave 0.897).

Data: ``--data-dir`` with Speech Commands (v0.01 or v0.02 unpacked). Without it, the
job synthesises the layout with espeak-ng (:mod:`tfos_lib.datasets.speech_words`: each
voice+variant a speaker) into ``default-speech-commands`` under ``--output-dir``.
Synthetic speech is far easier than real recordings: its figure is not the book's.

Run::

    ./spark-submit.sh speech_commands                                          # synthesised words, 1 worker
    ./spark-submit.sh speech_commands -- --data-dir /data/speech_commands_v0.01
    ./spark-submit.sh speech_commands --master 'local-cluster[2,1,3072]' -- --num-workers 2

Writes to ``--output-dir``: metrics.json; models/speech_commands/<version>/ (SavedModel
in the TF Serving layout: input ``audio``, 16,000 raw samples at 16 kHz in [-1, 1]; output
``probabilities``, the 12 classes in the order of ``labels`` in metrics.json; the MFCC is
inside the signature) and models/speech_commands.tflite (the same, for LiteRT; full-integer
int8 of this graph is not written: it loses the words, see README);
training_curves.png, confusion_matrix.png, noise_robustness.png, streaming.png (a recording
of several test words scored every 100 ms and smoothed as the example's ``RecognizeCommands``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

import tfos_lib
from tfos_lib import job, report, storage
from tfos_lib.datasets import speech_commands, speech_words
from tfos_lib.export import tflite
from tfos_lib.export.saved_model import export_saved_model
from tfos_lib.ml import inference, speech

BOOK_REFERENCE = {
    "test_accuracy": 0.877,
    "validation_accuracy": 0.885,
    "test_clips": 4890,
    "model": "conv",
    "steps": 18000,
    "source": "chapter 5, L3189-3197, L3287-3308: TensorFlow's speech_commands example on real Speech Commands",
}
NOISE_LEVELS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8)
MODEL_NAME = "speech_commands"


@dataclass(frozen=True)
class Config(job.TrainingConfig):
    output_dir: str = job.option("output/speech_commands", "where results go")
    model: str = job.option("conv", "the example's architecture", choices=speech.ARCHITECTURES)
    preprocess: str = job.option("mfcc", "features: the example's MFCC or log-mel", choices=speech.PREPROCESS)
    wanted_words: str = job.option(",".join(speech_words.COMMAND_WORDS), "comma-separated words to recognise")
    epochs: int = job.option(36, "passes over the training clips (36 x 93 steps of 50 in the default run: ~22 min "
                                 "on 2 cores)")
    batch_size: int = job.option(50, "global batch size (the example's: 100; 50 gives twice the steps per epoch)")
    optimizer: str = job.option("adam", "adam, or sgd (the example's, which needs ~18,000 steps)",
                                choices=("adam", "sgd"))
    learning_rate: float = job.option(0.002, "learning rate (the example's: 0.001 with SGD)", greater_than=0)
    learning_rate_drop: float = job.option(0.1, "the learning rate is multiplied by this for the last quarter of the "
                                                "steps, as the example's 0.001 then 0.0001 (1: constant; on the "
                                                "synthesised data the drop adds ~3 points of validation accuracy)",
                                           greater_than=0, max=1)
    dropout: float = job.option(0.25, "dropout rate while training (the example's: 0.5, for 18,000 steps)",
                                min=0, less_than=1)
    normalize: bool = job.option(True, "standardise each coefficient over the clip first (not in the example: raw "
                                       "MFCCs start slowly with Adam)")
    silence_percentage: float = job.option(10.0, "silence clips, % of the wanted-word clips", min=0, max=100)
    unknown_percentage: float = job.option(10.0, "unknown-word clips, % of the wanted-word clips", min=0, max=100)
    validation_percentage: float = job.option(10.0, "hash split without the lists: validation %", min=0, max=100)
    testing_percentage: float = job.option(10.0, "hash split without the lists: testing %", min=0, max=100)
    time_shift_ms: float = job.option(100.0, "training: random shift of up to this many ms", min=0, max=500)
    background_frequency: float = job.option(0.8, "training: share of clips with background noise", min=0, max=1)
    background_volume: float = job.option(0.1, "training: noise volume drawn from U(0, this)", min=0, max=1)
    max_bad_fraction: float = job.option(0.01, "stop when more than this share of WAV files is unusable", min=0, max=1)
    default_speakers: int = job.option(240, "synthesised data: espeak-ng voice+variant speakers", min=3)
    default_repeats: int = job.option(2, "synthesised data: times each speaker says each command word", min=1)
    default_other_words: int = job.option(12, "synthesised data: other words (the unknown class)", min=1,
                                          max=len(speech_words.OTHER_WORDS))

    @property
    def labels(self) -> list[str]:
        return [speech_commands.SILENCE_LABEL, speech_commands.UNKNOWN_LABEL, *self.wanted_words.split(",")]

    def __post_init__(self):
        super().__post_init__()
        words = self.wanted_words.split(",")
        if any(not w or w.startswith("_") for w in words) or len(set(words)) != len(words):
            raise ValueError(f"--wanted-words must be distinct folder names without a leading '_'; got "
                             f"{self.wanted_words!r}.")
        if self.validation_percentage + self.testing_percentage >= 100:
            raise ValueError("--validation-percentage plus --testing-percentage must stay below 100 (training "
                             f"needs speakers); got {self.validation_percentage:g} + {self.testing_percentage:g}.")


def load_data(spark, cfg: Config):
    """Reads (or synthesises, then reads) the clips; returns ``(splits by name, noise by file, data info)``."""
    from pyspark.sql import functions as F

    data_dir, generated = cfg.data_dir, None
    if not data_dir:
        conf = dict(spark.sparkContext.getConf().getAll())
        data_dir = storage.default_data_dir(cfg.output_dir, "default-speech-commands", conf)
        generated = speech_words.write_speech_words(data_dir, cfg.default_speakers, cfg.default_repeats,
                                                    cfg.default_other_words, seed=cfg.seed)
    clips, info = speech_commands.read_speech_commands(spark, data_dir, cfg.validation_percentage,
                                                       cfg.testing_percentage)
    clips = clips.cache()
    bad = clips.where(F.col("error").isNotNull()).select("key", "error").orderBy("key").collect()
    total = clips.count()
    reasons: dict[str, int] = {}
    for row in bad:
        reason = row.error.split(" (")[0]
        reasons[reason] = reasons.get(reason, 0) + 1
    info |= {"source": f"speech_commands:{cfg.data_dir}" if cfg.data_dir else "synthesised-espeak-ng",
             "generated": generated, "wav_files": total, "bad_files": reasons,
             "bad_examples": [f"{r.key}: {r.error}" for r in bad[:50]]}
    if total == 0 or len(bad) > cfg.max_bad_fraction * total:
        raise ValueError(
            f"{len(bad)} of {total} WAV files in {data_dir} are unusable ({reasons}), more than --max-bad-fraction "
            f"{cfg.max_bad_fraction:g}: {'; '.join(info['bad_examples'][:10])}. Speech Commands clips are 16 kHz mono "
            "16-bit PCM WAVs: convert or remove those files, or raise --max-bad-fraction to skip them."
        )
    noise = speech_commands.read_background_noise(spark, data_dir)
    rows, counts = speech_commands.label_rows(clips, cfg.labels[2:], cfg.silence_percentage, cfg.unknown_percentage,
                                              noise, seed=cfg.seed)
    partitions = max(2, spark.sparkContext.defaultParallelism)
    splits = {s: rows.where(F.col("split") == s).drop("split").repartition(partitions).cache()
              for s in ("training", "validation", "testing")}
    speakers = clips.where(F.col("error").isNull()).groupBy("split").agg(F.countDistinct("speaker").alias("n"))
    info |= {"clips_per_split": counts, "speakers_per_split": {r.split: r.n for r in speakers.collect()},
             "background_noise": {name: round(len(x) / speech.SAMPLE_RATE, 1) for name, x in noise.items()}}
    for split in ("training", "testing"):
        if not counts.get(split):
            raise ValueError(f"no {split} clips in {data_dir} after the split ({info['split_rule']}): the directory "
                             "needs more speakers (or lists naming some of its files).")
    return splits, noise, info


def build_model(tf, cfg: Config, total_steps: int = 0):
    """The model, compiled; its learning rate drops by ``--learning-rate-drop`` after 3/4 of ``total_steps``."""
    model = speech.build_model(tf, cfg.model, len(cfg.labels), speech.num_frames(), cfg.dropout, cfg.normalize)
    rate = cfg.learning_rate
    if total_steps and cfg.learning_rate_drop != 1:  # the example's two stages: 15,000 + 3,000 steps
        rate = tf.keras.optimizers.schedules.PiecewiseConstantDecay(
            [total_steps * 3 // 4], [cfg.learning_rate, cfg.learning_rate * cfg.learning_rate_drop])
    optimizer = {"adam": tf.keras.optimizers.Adam, "sgd": tf.keras.optimizers.SGD}[cfg.optimizer]
    model.compile(optimizer=optimizer(learning_rate=rate), metrics=["accuracy"],
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def train_fn(ctx: tfos_lib.WorkerContext, cfg: Config, noise: dict) -> dict:
    """Runs on every worker: augmented MFCC batches from its own clips, trained together; the chief evaluates."""
    tf = tfos_lib.import_tensorflow()
    tf.keras.utils.set_random_seed(cfg.seed)  # same initial weights on every worker
    shard = ctx.data("train")
    steps = shard.steps_per_epoch(cfg.batch_size)
    with ctx.strategy().scope():  # tfos: variables mirrored across workers
        model = build_model(tf, cfg, steps * cfg.epochs)
    audio, labels = shard.column("audio").astype(np.float32), shard.column("label").astype(np.int32)
    augment = speech.augmenter(tf, noise, int(cfg.time_shift_ms * speech.SAMPLE_RATE / 1000),
                               cfg.background_frequency, cfg.background_volume)
    featurize = functools.partial(speech.features, tf, preprocess=cfg.preprocess)
    tf.random.set_seed(cfg.seed + ctx.rank)  # workers draw different shifts and noise

    def batches(_):
        ds = tf.data.Dataset.from_tensor_slices((audio, labels)).shuffle(len(labels), seed=cfg.seed + ctx.rank)
        ds = ds.repeat().batch(cfg.batch_size // ctx.num_workers, drop_remainder=True)
        ds = ds.map(lambda a, y: (featurize(augment(a, y)), y), num_parallel_calls=tf.data.AUTOTUNE)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return ds.with_options(options).prefetch(tf.data.AUTOTUNE)

    dataset = ctx.strategy().distribute_datasets_from_function(batches)
    held_out = None
    if ctx.is_chief:
        local_model = build_model(tf, cfg)  # a plain copy: the chief alone scores and saves it

        def probabilities(clips):  # the pipeline's features without augmentation, then the model
            ds = tf.data.Dataset.from_tensor_slices(clips).batch(256).map(featurize)
            return np.concatenate([tf.nn.softmax(local_model(x, training=False)).numpy() for x in ds])

        if "validation" in ctx.inputs:  # none when no speaker hashes into validation (tiny data)
            val = ctx.data("validation")
            val_audio, val_labels = val.column("audio").astype(np.float32), val.column("label")

            def held_out():
                local_model.set_weights(model.get_weights())
                return {"accuracy": float(np.mean(probabilities(val_audio).argmax(axis=1) == val_labels))}

    callbacks = ctx.callbacks(cfg.batch_size, cfg.checkpoint_every_steps, held_out=held_out)  # tfos: resume + progress
    history, seconds = ctx.fit(model, dataset, epochs=cfg.epochs, steps_per_epoch=steps, callbacks=callbacks)
    if not ctx.is_chief:
        return {}
    ctx.phase("evaluate")
    local_model.set_weights(model.get_weights())
    test = ctx.data("test")
    test_audio, test_labels = test.column("audio").astype(np.float32), test.column("label")
    noise_curve = {}
    for level in NOISE_LEVELS:  # the same seeded noise stretches at each level
        noisy = speech_commands.mix_noise(test_audio, noise, level, seed=cfg.seed + 7) if level else test_audio
        noise_curve[level] = float(np.mean(probabilities(noisy).argmax(axis=1) == test_labels))
    serving = speech.serving_model(tf, local_model, cfg.preprocess)
    exported = export_saved_model(
        serving, f"{ctx.output_dir}/models", MODEL_NAME, input_names=["audio"], output_names=["probabilities"],
        preprocessing=f"raw 16 kHz mono samples in [-1, 1] (int16 / 32768), 16,000 per clip; {cfg.preprocess} "
                      f"features in the graph; probabilities of {cfg.labels}")
    try:
        converted = tflite.convert(exported, f"{ctx.output_dir}/models/{MODEL_NAME}.tflite")
    except tflite.UnsupportedOpsError as error:  # recorded; the SavedModel is the served model
        converted = {"error": str(error)}
    return {"stream": streaming_demo(cfg, test_audio, test_labels, noise, probabilities), "tflite": converted,
            "history": history, "train_seconds": seconds, "seconds_per_epoch": seconds / cfg.epochs,
            "steps": steps * cfg.epochs, "examples_per_second": steps * cfg.epochs * cfg.batch_size / seconds,
            "keys": test.column("key").tolist(), "probabilities": probabilities(test_audio),
            "noise_curve": noise_curve, "saved_model": exported}


def streaming_demo(cfg: Config, audio: np.ndarray, labels: np.ndarray, noise: dict, probabilities) -> dict:
    """The example's streaming test on a recording of test words: 1-s windows every 100 ms, smoothed."""
    words = [i for i in np.random.default_rng(cfg.seed).permutation(len(labels)) if labels[i] >= 2][:8]
    longest = max(noise.values(), key=len) if noise else None
    stream, truth = speech.make_stream(audio[words], [cfg.labels[labels[i]] for i in words], longest, cfg.seed)
    windows, times = speech.sliding_windows(stream, stride=speech.SAMPLE_RATE // 10)
    scores = probabilities(windows)
    return {"stream": stream, "times_ms": times, "scores": scores, "truth": truth,
            **speech.recognize_stream(times, scores, cfg.labels, truth)}


def plot_stream(path: str, demo: dict, labels: list[str]) -> None:
    """The recording, each word's score per window, the true words and the smoothed detections."""
    import matplotlib
    fig = report.new_figure((12, 6))
    wave_ax, score_ax = fig.subplots(2, 1, sharex=True)
    seconds = np.arange(len(demo["stream"])) / speech.SAMPLE_RATE
    wave_ax.plot(seconds, demo["stream"], linewidth=0.3, color="grey")
    for word in demo["truth"]:
        wave_ax.axvspan(word["start_ms"] / 1000, word["end_ms"] / 1000, alpha=0.15)
        wave_ax.text(word["start_ms"] / 1000, 0.9, word["word"], fontsize=9)
    wave_ax.set_ylim(-1, 1.1)
    wave_ax.set_title(f"streaming: {demo['found']} of {demo['words']} words found, "
                      f"{demo['false_detections']} false detections")
    colors = matplotlib.colormaps["tab20"].colors
    for i, name in enumerate(labels):  # "_silence_" would be left out of the legend: matplotlib hides "_" names
        score_ax.plot(demo["times_ms"] / 1000, demo["scores"][:, i], label=name.strip("_"), linewidth=1,
                      color=colors[i % len(colors)])
    for d in demo["detections"]:
        score_ax.axvline(d["time_ms"] / 1000, color="black", linestyle="--", linewidth=0.8)
        score_ax.text(d["time_ms"] / 1000, 1.02, d["word"], fontsize=8, rotation=45)
    score_ax.set_xlabel("seconds (window end)")
    score_ax.set_ylabel("probability")
    score_ax.set_ylim(0, 1.15)
    score_ax.legend(fontsize=7, ncol=6, loc="lower right")
    report.save_figure(fig, path)


def per_class(confusion: np.ndarray, labels: list[str]) -> dict:
    """Precision and recall of each class from a confusion matrix (rows: true, columns: predicted)."""
    hits = np.diag(confusion)
    precision = hits / np.maximum(confusion.sum(axis=0), 1)
    recall = hits / np.maximum(confusion.sum(axis=1), 1)
    return {name: {"precision": float(p), "recall": float(r), "support": int(n)}
            for name, p, r, n in zip(labels, precision, recall, confusion.sum(axis=1))}


def plot_noise(path: str, curve: dict, title: str) -> None:
    fig = report.new_figure((6, 4))
    ax = fig.subplots()
    ax.plot(list(curve), list(curve.values()), marker="o")
    ax.set_xlabel("added background-noise volume (peak 0.5 recordings x volume)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    report.save_figure(fig, path)


def main(argv=None) -> dict:
    cfg = job.parse_config(Config, argv, description=__doc__.split("\n\n")[0])
    log = job.setup_logging()
    run = job.JobRun("speech_commands", cfg)
    spark = job.spark_session("speech_commands")
    splits, noise, data = load_data(spark, cfg)
    log.info("training %s on %s: %s", cfg.model, data["source"], data["clips_per_split"])
    test = splits["testing"]
    inputs = {"train": splits["training"].select("audio", "label"),
              "test": tfos_lib.Input(test.select("key", "audio", "label"), shard=False)}
    if data["clips_per_split"].get("validation"):
        inputs["validation"] = tfos_lib.Input(splits["validation"].select("audio", "label"), shard=False)
    result = job.launch(train_fn, cfg, inputs, spark, extra_args=(noise,))
    keys, probs = result.pop("keys"), np.asarray(result.pop("probabilities"))
    truth = dict(test.select("key", "label").collect())
    y_true, y_pred = np.array([truth[k] for k in keys]), probs.argmax(axis=1)
    # The exported SavedModel on the raw samples, in the executors: must agree with the pipeline.
    model_dir = storage.join(cfg.output_dir, "models", MODEL_NAME)
    served = dict(inference.predict(test.select("key", "audio"), model_dir, ["audio"], output_col="p")
                  .select("key", "p").collect())
    served = np.array([served[k] for k in keys], np.float32)
    confusion = np.array(report.plot_confusion_matrix(
        f"{cfg.output_dir}/confusion_matrix.png", y_true, y_pred, cfg.labels,
        title=f"{cfg.model} on {data['source']}: test accuracy {np.mean(y_pred == y_true):.4f}"))
    report.plot_curves(f"{cfg.output_dir}/training_curves.png", result["history"],
                       title=f"Speech commands {cfg.model}: training vs validation speakers")
    plot_noise(f"{cfg.output_dir}/noise_robustness.png", result["noise_curve"],
               title=f"{cfg.model}: test accuracy with added background noise")
    stream = result.pop("stream")
    plot_stream(f"{cfg.output_dir}/streaming.png", stream, cfg.labels)
    tflite_agreement = None
    if "path" in result["tflite"]:  # the .tflite file on the same raw samples, in the executors
        path = storage.join(cfg.output_dir, "models", f"{MODEL_NAME}.tflite")
        lite = dict(inference.predict(test.select("key", "audio"), path, ["audio"], output_col="p")
                    .select("key", "p").collect())
        lite = np.array([lite[k] for k in keys], np.float32)
        tflite_agreement = {"max_abs_probability_difference": float(np.abs(lite - probs).max()),
                            "same_prediction": float(np.mean(lite.argmax(axis=1) == y_pred)),
                            "test_accuracy": float(np.mean(lite.argmax(axis=1) == y_true)),
                            "size_bytes": result["tflite"]["size_bytes"]}
    majority = np.bincount(y_true, minlength=len(cfg.labels)).max() / len(y_true)
    results = {
        "test_accuracy": float(np.mean(y_pred == y_true)),
        "test_clips": len(y_true),
        "labels": cfg.labels,
        "table": [{"model": f"{cfg.model} (this run)", "test_accuracy": float(np.mean(y_pred == y_true))},
                  {"model": "majority class (baseline)", "test_accuracy": float(majority)},
                  {"model": "book: conv, real recordings", "test_accuracy": BOOK_REFERENCE["test_accuracy"]}],
        "per_class": per_class(confusion, cfg.labels),
        "confusion_matrix": confusion.tolist(),
        "noise_curve": {str(k): v for k, v in result.pop("noise_curve").items()},
        "saved_model_vs_pipeline": {"max_abs_probability_difference": float(np.abs(served - probs).max()),
                                    "same_prediction": float(np.mean(served.argmax(axis=1) == y_pred))},
        "tflite_vs_pipeline": tflite_agreement,
        "streaming": {k: stream[k] for k in ("words", "found", "false_detections", "detections", "truth")},
        **result,
    }
    metrics = run.write_metrics(data=data, results=results, book_reference=BOOK_REFERENCE)
    log.info("test accuracy %.4f on %d clips of unseen speakers (book: %.3f on real recordings); %.1f s/epoch; "
             "SavedModel vs pipeline max |dp| %.2g; wrote %s/metrics.json", results["test_accuracy"], len(y_true),
             BOOK_REFERENCE["test_accuracy"], result["seconds_per_epoch"],
             results["saved_model_vs_pipeline"]["max_abs_probability_difference"], cfg.output_dir)
    return metrics


if __name__ == "__main__":
    job.run_main(main)

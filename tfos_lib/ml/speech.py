"""Keyword spotting as TensorFlow's ``speech_commands`` example does it: features, augmentation, models, streaming.

Everything that touches audio runs in TensorFlow (``tf.signal``), so the same code is
the training input pipeline on each worker and part of the exported serving graph:

* :func:`features`: 16 kHz samples -> MFCC (40 coefficients of 40 mel bands, 30 ms
  windows every 10 ms: 98 x 40 for 1 s, the example's fingerprint) or log-mel;
* :func:`augmenter`: the example's training-only time shift and background mixing,
  vectorised over a batch;
* :func:`build_model`: the example's ``conv`` and ``low_latency_conv``;
* :func:`serving_model`: raw samples in, class probabilities out;
* :class:`RecognizeCommands`: the example's smoothing of per-window predictions over a stream.

The TensorFlow functions take the module as ``tf``; :class:`RecognizeCommands` is numpy only.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
WINDOW_SAMPLES, STRIDE_SAMPLES = 480, 160  # 30 ms, 10 ms
NUM_COEFFICIENTS = 40
PREPROCESS = ("mfcc", "log_mel")
ARCHITECTURES = ("conv", "low_latency_conv")


def num_frames(samples: int = SAMPLE_RATE) -> int:
    """Feature frames for ``samples`` (98 for one second, as in the example)."""
    return 1 + (samples - WINDOW_SAMPLES) // STRIDE_SAMPLES


def _dct_matrix() -> np.ndarray:
    """The DCT-II that ``tf.signal.mfccs_from_log_mel_spectrograms`` applies to 40 log-mel energies, as a matrix."""
    k, i = np.arange(NUM_COEFFICIENTS)[:, None], np.arange(NUM_COEFFICIENTS)[None, :]
    dct = 2 * np.cos(np.pi * k * (2 * i + 1) / (2 * NUM_COEFFICIENTS)) / np.sqrt(2 * NUM_COEFFICIENTS)
    return dct.T.astype(np.float32)


def features(tf, audio, preprocess: str = "mfcc"):
    """``(batch, samples)`` floats in [-1, 1] -> ``(batch, frames, 40)`` MFCC or log-mel features.

    A Hann-windowed 512-point STFT of 30-ms windows every 10 ms, its power in 40 mel
    bands from 20 Hz to 4 kHz (the example's ``Mfcc`` op settings), the log, and for
    MFCC the DCT-II of all 40 log energies (``tf.signal.mfccs_from_log_mel_spectrograms``,
    written as a real matrix product so that LiteRT's builtin ops run it). Not
    bit-identical to the example's ``AudioSpectrogram``/``Mfcc`` kernels.
    """
    stft = tf.signal.stft(audio, WINDOW_SAMPLES, STRIDE_SAMPLES, fft_length=512)
    power = tf.math.square(tf.math.abs(stft))
    weights = tf.signal.linear_to_mel_weight_matrix(NUM_COEFFICIENTS, 257, SAMPLE_RATE, 20.0, 4000.0)
    log_mel = tf.math.log(tf.tensordot(power, weights, 1) + 1e-6)
    if preprocess == "log_mel":
        return log_mel
    return tf.tensordot(log_mel, _dct_matrix(), 1)


def augmenter(tf, noise: dict[str, np.ndarray], time_shift: int, background_frequency: float,
              background_volume: float, silence_label: int = 0):
    """``fn(audio, labels) -> audio``: the example's training augmentation, on a batch.

    Each clip moves by a random shift in ``[-time_shift, time_shift]`` samples
    (zero-filled); ``background_frequency`` of the clips get a random 1-s stretch of a
    random noise recording at volume U(0, ``background_volume``), and silence clips
    (label ``silence_label``) always get one at U(0, 1). Then clipped to [-1, 1].
    """
    clips = [np.asarray(x, np.float32) for x in noise.values() if len(x) >= SAMPLE_RATE]
    joined = tf.constant(np.concatenate(clips) if clips else np.zeros(SAMPLE_RATE, np.float32))
    starts = tf.constant(np.cumsum([0] + [len(x) for x in clips[:-1]]) if clips else [0], tf.int64)
    spans = tf.constant([len(x) - SAMPLE_RATE + 1 for x in clips] if clips else [1], tf.int64)

    def augment(audio, labels):
        batch, length = tf.shape(audio)[0], tf.shape(audio)[1]
        positions = tf.range(length)[None, :]
        if time_shift:
            shift = tf.random.uniform([batch], -time_shift, time_shift + 1, tf.int32)
            padded = tf.pad(audio, [[0, 0], [time_shift, time_shift]])
            audio = tf.gather(padded, positions + (time_shift - shift)[:, None], batch_dims=1)
        if not clips:
            return audio
        which = tf.random.uniform([batch], 0, len(clips), tf.int32)
        offset = tf.gather(starts, which) + tf.cast(
            tf.random.uniform([batch]) * tf.cast(tf.gather(spans, which), tf.float32), tf.int64)
        offset = tf.minimum(offset, tf.gather(starts + spans - 1, which))
        stretch = tf.gather(joined, offset[:, None] + tf.cast(positions, tf.int64))
        mixed = tf.random.uniform([batch]) < background_frequency
        volume = tf.where(mixed, tf.random.uniform([batch], 0, background_volume), 0.0)
        volume = tf.where(tf.equal(labels, silence_label), tf.random.uniform([batch]), volume)
        return tf.clip_by_value(audio + volume[:, None] * stretch, -1.0, 1.0)

    return augment


def _standardize(x):
    import tensorflow as tf

    mean, variance = tf.nn.moments(x, axes=[1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + 1e-3)


def build_model(tf, architecture: str, num_classes: int, frames: int = 98, dropout: float = 0.5,
                normalize: bool = True):
    """The example's model on ``(batch, frames, 40)`` features; outputs logits.

    ``normalize`` first standardises each coefficient over the clip's frames (cepstral
    mean and variance normalisation; no weights, not in the example): the example feeds
    raw MFCCs, and with its small initial weights Adam then sits at chance for several
    epochs before it starts to learn. (A batch normalisation would do it too, but its
    moving statistics are read with a collective under MultiWorkerMirroredStrategy,
    which the chief cannot do alone.)

    ``conv`` (cnn-trad-fpool3): conv 20x8x64, ReLU, dropout, max-pool 2x2, conv
    10x4x64, ReLU, dropout, a dense layer to the logits (926,860 weights for 12
    classes). ``low_latency_conv`` (cnn-one-fstride4): one conv over all frames
    (frames x 8, 186 filters, VALID, stride 1x1), dense 128, dense 128, logits, with
    dropout. Weights start truncated-normal with stddev 0.01, as in the example.
    """
    layers = tf.keras.layers
    init = tf.keras.initializers.TruncatedNormal(stddev=0.01)
    inputs = tf.keras.Input((frames, NUM_COEFFICIENTS), name="features")
    x = layers.Lambda(_standardize, name="normalize")(inputs) if normalize else inputs
    x = layers.Reshape((frames, NUM_COEFFICIENTS, 1))(x)
    if architecture == "conv":
        x = layers.Conv2D(64, (20, 8), padding="same", activation="relu", kernel_initializer=init)(x)
        x = layers.Dropout(dropout)(x)
        x = layers.MaxPool2D(2, 2, padding="same")(x)
        x = layers.Conv2D(64, (10, 4), padding="same", activation="relu", kernel_initializer=init)(x)
        x = layers.Dropout(dropout)(x)
        x = layers.Flatten()(x)
    elif architecture == "low_latency_conv":
        x = layers.Conv2D(186, (frames, 8), padding="valid", activation="relu", kernel_initializer=init)(x)
        x = layers.Dropout(dropout)(x)
        x = layers.Flatten()(x)
        for _ in range(2):
            x = layers.Dense(128, kernel_initializer=init)(x)
            x = layers.Dropout(dropout)(x)
    else:
        raise ValueError(f"architecture must be one of {list(ARCHITECTURES)}; got {architecture!r}.")
    outputs = layers.Dense(num_classes, kernel_initializer=init, name="logits")(x)
    return tf.keras.Model(inputs, outputs, name=architecture)


def serving_model(tf, model, preprocess: str = "mfcc", samples: int = SAMPLE_RATE):
    """``model`` behind the feature extraction: ``(batch, samples)`` raw 16 kHz floats in, probabilities out."""

    class Features(tf.keras.layers.Layer):  # no weights: traced into the SavedModel's signature
        def call(self, audio):
            return features(tf, audio, preprocess)

    audio = tf.keras.Input((samples,), name="audio")
    probabilities = tf.keras.layers.Softmax(name="probabilities")(model(Features(name="features")(audio)))
    return tf.keras.Model(audio, probabilities, name=f"{model.name}_on_audio")


def sliding_windows(stream: np.ndarray, stride: int, window: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
    """1-s windows of ``stream`` every ``stride`` samples: ``(windows, end times in ms)``."""
    ends = np.arange(window, len(stream) + 1, stride)
    return np.stack([stream[e - window : e] for e in ends]), ends * 1000 // SAMPLE_RATE


class RecognizeCommands:
    """The example's ``RecognizeCommands``: average the last ``average_window_ms`` of predictions, report a
    command when its averaged score passes ``detection_threshold`` and it differs from the last one or
    ``suppression_ms`` have passed since."""

    def __init__(self, labels, average_window_ms: int = 500, detection_threshold: float = 0.7,
                 suppression_ms: int = 750, minimum_count: int = 3):
        self.labels, self.window, self.threshold = list(labels), average_window_ms, detection_threshold
        self.suppression, self.minimum_count = suppression_ms, minimum_count
        self.history: list[tuple[int, np.ndarray]] = []
        self.last_label, self.last_time = "_silence_", -(10**9)

    def process(self, time_ms: int, scores: np.ndarray) -> tuple[str, float, bool]:
        """``(label, averaged score, is a new command)`` after the predictions of the window ending at ``time_ms``."""
        self.history = [(t, s) for t, s in self.history if t > time_ms - self.window] + [(time_ms, scores)]
        average = np.mean([s for _, s in self.history], axis=0)
        best = int(np.argmax(average))
        label, score = self.labels[best], float(average[best])
        new = (len(self.history) >= self.minimum_count and score > self.threshold and not label.startswith("_")
               and (label != self.last_label or time_ms - self.last_time > self.suppression))
        if new:
            self.last_label, self.last_time = label, time_ms
        return label, score, new


def make_stream(clips: np.ndarray, words: list[str], noise: np.ndarray | None, seed: int,
                gap_seconds: float = 0.5, noise_volume: float = 0.05) -> tuple[np.ndarray, list[dict]]:
    """One long recording: ``clips`` (1 s each) one after another with silent gaps, plus quiet noise.

    Returns the samples and where each word's clip is (``{"word", "start_ms", "end_ms"}``).
    """
    rng = np.random.default_rng(seed)
    gap = np.zeros(int(gap_seconds * SAMPLE_RATE), np.float32)
    parts, truth, position = [gap], [], len(gap)
    for clip, word in zip(clips, words):
        parts += [clip, gap]
        truth.append({"word": word, "start_ms": position * 1000 // SAMPLE_RATE,
                      "end_ms": (position + len(clip)) * 1000 // SAMPLE_RATE})
        position += len(clip) + len(gap)
    stream = np.concatenate(parts)
    if noise is not None and len(noise) >= len(stream):
        start = rng.integers(len(noise) - len(stream) + 1)
        stream = stream + noise_volume * noise[start : start + len(stream)]
    return np.clip(stream, -1, 1).astype(np.float32), truth


def recognize_stream(times_ms: np.ndarray, scores: np.ndarray, labels: list[str], truth: list[dict],
                     **settings) -> dict:
    """Smooths per-window ``scores`` with :class:`RecognizeCommands`; detections, and how many words were found.

    A word counts as found when a detection of that word falls inside its clip or up to
    ``average_window_ms`` after it (the averaging delays detections).
    """
    recognizer = RecognizeCommands(labels, **settings)
    detections, smoothed = [], []
    for t, s in zip(times_ms, scores):
        label, score, new = recognizer.process(int(t), s)
        smoothed.append(score)
        if new:
            detections.append({"time_ms": int(t), "word": label, "score": round(score, 4)})
    found = sum(any(d["word"] == w["word"] and w["start_ms"] <= d["time_ms"] <= w["end_ms"] + recognizer.window
                    for d in detections) for w in truth)
    false = sum(not any(d["word"] == w["word"] and w["start_ms"] <= d["time_ms"] <= w["end_ms"] + recognizer.window
                        for w in truth) for d in detections)
    return {"detections": detections, "words": len(truth), "found": found, "false_detections": false,
            "smoothed_top_score": smoothed}

"""The speech-commands job: the example's feature shape and model, a 2-worker run on tiny speech, bad WAVs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jobs import speech_commands
from tfos_lib.datasets.speech_words import wav_bytes
from tfos_lib.export import saved_model
from tfos_lib.ml import speech

TINY = ["--default-speakers", "24", "--default-repeats", "1", "--default-other-words", "2", "--epochs", "2",
        "--batch-size", "20"]


def test_features_augmentation_and_models_have_the_examples_shapes():
    import tfos_lib

    tf = tfos_lib.import_tensorflow()
    audio = tf.constant(np.random.default_rng(0).uniform(-0.5, 0.5, (3, 16000)).astype(np.float32))
    assert speech.num_frames() == 98
    for preprocess in speech.PREPROCESS:
        assert speech.features(tf, audio, preprocess).shape == (3, 98, 40)
    # The matrix products are tf.signal's STFT -> mel -> log -> MFCC, in real arithmetic (LiteRT runs them).
    stft = tf.signal.stft(audio, 480, 160, fft_length=512)
    mel = tf.tensordot(tf.abs(stft) ** 2, tf.signal.linear_to_mel_weight_matrix(40, 257, 16000, 20.0, 4000.0), 1)
    reference = tf.signal.mfccs_from_log_mel_spectrograms(tf.math.log(mel + 1e-6))
    np.testing.assert_allclose(speech.features(tf, audio).numpy(), reference.numpy(), atol=2e-3, rtol=1e-3)
    silence = tf.zeros((2, 16000))
    augment = speech.augmenter(tf, {"n": np.full(20000, 0.5, np.float32)}, 1600, 0.0, 0.1)
    out = augment(silence, tf.constant([0, 5])).numpy()  # silence always gets noise, words here never do
    assert out.shape == (2, 16000) and out[0].max() > 0 and not out[1].any()
    shifted = speech.augmenter(tf, {}, 1600, 0.0, 0.0)(tf.ones((4, 16000)), tf.constant([2, 2, 2, 2])).numpy()
    assert shifted.shape == (4, 16000) and 16000 - 1600 <= shifted.sum(axis=1).min()  # zero-filled, moved <= 100 ms
    for normalize in (False, True):  # the example's cnn-trad-fpool3 for 12 classes; the normalisation has no weights
        assert speech.build_model(tf, "conv", 12, normalize=normalize).count_params() == 926_860
    assert speech.build_model(tf, "low_latency_conv", 12).output_shape == (None, 12)
    # The example's two learning-rate stages: the rate drops tenfold for the last quarter of the steps.
    schedule = speech_commands.build_model(tf, speech_commands.Config(), total_steps=100).optimizer.get_config()
    assert schedule["learning_rate"]["config"]["boundaries"] == [75]
    np.testing.assert_allclose(schedule["learning_rate"]["config"]["values"], [0.002, 0.0002], rtol=1e-6)


def test_two_workers_train_on_synthesised_speech_and_the_savedmodel_scores_raw_audio(
        spark, tmp_path, check_metrics_envelope, saved_figures):
    out = tmp_path / "out"
    metrics = speech_commands.main([*TINY, "--num-workers", "2", "--output-dir", str(out)])
    saved = json.loads((out / "metrics.json").read_text())
    check_metrics_envelope(saved, "speech_commands", training=True)
    assert metrics["num_workers"] == 2 and metrics["backend"] == "barrier"
    data, results = saved["data"], saved["results"]
    assert data["source"] == "synthesised-espeak-ng" and data["bad_files"] == {}
    assert data["split_rule"].startswith("validation_list.txt") and data["speakers_per_split"]["testing"] >= 1
    assert sum(data["speakers_per_split"].values()) == 24
    assert results["labels"][:2] == ["_silence_", "_unknown_"] and len(results["labels"]) == 12
    assert np.array(results["confusion_matrix"]).shape == (12, 12)
    assert np.array(results["confusion_matrix"]).sum() == results["test_clips"] == sum(data["clips_per_split"]["testing"].values())
    assert set(results["per_class"]) == set(results["labels"]) and list(results["noise_curve"])[0] == "0.0"
    # The exported signature takes raw samples and computes the MFCC itself: same answers as the pipeline.
    # (Agreement of the argmax is recorded too; a near-tie may flip it, so the probabilities are what is checked.)
    assert results["saved_model_vs_pipeline"]["max_abs_probability_difference"] < 1e-4
    assert results["tflite_vs_pipeline"]["max_abs_probability_difference"] < 1e-4
    signature = saved_model.read_signature(str(out / "models" / "speech_commands"))
    assert signature["inputs"] == {"audio": {"dtype": "float32", "shape": [None, 16000]}}
    assert signature["outputs"]["probabilities"]["shape"] == [None, 12]
    assert len(saved_figures["confusion_matrix.png"][0]["images"]) == 1
    assert list(saved_figures["noise_robustness.png"][0]["lines"].values())[0] == list(results["noise_curve"].values())


def test_too_many_bad_wavs_stop_the_job_with_the_list(spark, tmp_path):
    root = tmp_path / "data"
    (root / "yes").mkdir(parents=True)
    for n in range(6):
        (root / "yes" / f"0000000{n}_nohash_0.wav").write_bytes(wav_bytes(np.zeros(16000, np.float32)))
    (root / "yes" / "bad00000_nohash_0.wav").write_bytes(wav_bytes(np.zeros(32000, np.float32), channels=2))
    (root / "yes" / "bad00001_nohash_0.wav").write_bytes(b"not audio at all")
    with pytest.raises(ValueError, match=r"(?s)2 of 8 WAV files .*'not mono': 1, 'not a WAV file': 1.*"
                                         r"bad00000_nohash_0.wav: not mono \(2 channels\).*--max-bad-fraction"):
        speech_commands.main(["--data-dir", str(root), "--output-dir", str(tmp_path / "out")])

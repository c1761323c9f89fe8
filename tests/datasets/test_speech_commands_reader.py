"""The Speech Commands reader: the split rule, every kind of bad WAV, the layout in Spark, the 12-class sets."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from tfos_lib.datasets import speech_commands as sc
from tfos_lib.datasets.speech_words import wav_bytes


def test_which_set_is_the_examples_rule_and_keeps_each_speaker_in_one_split():
    # The example's arithmetic, written out: sha1 of the name before _nohash_, mod 2**27, scaled to 0-100.
    import hashlib

    value = (int(hashlib.sha1(b"3cfc6b3a").hexdigest(), 16) % 2**27) * (100.0 / (2**27 - 1))
    expected = "validation" if value < 10 else "testing" if value < 20 else "training"
    assert sc.which_set("yes/3cfc6b3a_nohash_0.wav") == expected
    rng = np.random.default_rng(0)
    speakers = [f"{rng.integers(2**32):08x}" for _ in range(400)]
    seen: dict[str, set[str]] = {}
    for speaker in speakers:
        for word in ("yes", "no", "marvin"):
            for n in range(3):
                seen.setdefault(speaker, set()).add(sc.which_set(f"{word}/{speaker}_nohash_{n}.wav"))
    assert all(len(splits) == 1 for splits in seen.values())
    shares = {s: sum(splits == {s} for splits in seen.values()) / len(speakers) for s in ("validation", "testing")}
    assert 0.05 < shares["validation"] < 0.15 and 0.05 < shares["testing"] < 0.15


def _wav(rate=16000, channels=1, width=2, seconds=1.0):
    return wav_bytes(np.zeros(int(rate * seconds) * channels, np.float32), rate, channels, width)


@pytest.mark.parametrize("data, reason", [
    (b"ID3\x04 an mp3 file", "not a WAV file"),
    (b"RIFF\x10\x00\x00\x00WAVEjunk", "not a WAV file"),
    (_wav(rate=44100), "wrong sample rate (44100 Hz, expected 16000)"),
    (_wav(channels=2), "not mono (2 channels)"),
    (_wav(width=1), "not 16-bit (8-bit samples)"),
    (_wav()[:20000], "truncated"),
])
def test_every_bad_wav_kind_is_named(data, reason):
    audio, error = sc.decode_wav(data)
    assert audio is None and error.startswith(reason) and error.split(" (")[0] in sc.BAD_REASONS


def test_good_wavs_are_padded_or_cut_to_one_second():
    short, error = sc.decode_wav(wav_bytes(np.full(8000, 0.5, np.float32)))
    assert error is None and short.shape == (16000,) and short[:8000].min() > 0.49 and not short[8000:].any()
    long, _ = sc.decode_wav(_wav(seconds=1.5))
    assert long.shape == (16000,) and long.dtype == np.float32
    with wave.open(io.BytesIO(wav_bytes(np.array([1.0, -1.0], np.float32)))) as w:  # full scale stays in range
        assert w.getnframes() == 2


def _layout(root, speakers=30, words=("yes", "no", "bed"), lists=True):
    """A Speech Commands directory of tones (no synthesiser needed)."""
    rng = np.random.default_rng(1)
    names = []
    for s in range(speakers):
        speaker = f"{s:08x}"
        for w, word in enumerate(words):
            (root / word).mkdir(parents=True, exist_ok=True)
            tone = 0.3 * np.sin(2 * np.pi * (300 + 100 * w) * np.arange(16000) / 16000) + 0.01 * rng.standard_normal(16000)
            (root / word / f"{speaker}_nohash_0.wav").write_bytes(wav_bytes(tone.astype(np.float32)))
            names.append(f"{word}/{speaker}_nohash_0.wav")
    (root / sc.BACKGROUND_NOISE_DIR).mkdir(exist_ok=True)
    (root / sc.BACKGROUND_NOISE_DIR / "white_noise.wav").write_bytes(wav_bytes(0.2 * rng.standard_normal(48000)))
    if lists:
        for split in ("validation", "testing"):
            (root / f"{split}_list.txt").write_text("".join(f"{n}\n" for n in names if sc.which_set(n) == split))
    return names


def test_reader_reads_the_layout_splits_by_list_or_rule_and_counts_bad_files(spark, tmp_path):
    names = _layout(tmp_path / "a", lists=False)
    (tmp_path / "a" / "yes" / "ffffffff_nohash_0.wav").write_bytes(_wav(rate=8000))
    df, info = sc.read_speech_commands(spark, str(tmp_path / "a"))
    rows = {r.key: r for r in df.collect()}
    assert "hash of the speaker" in info["split_rule"] and len(rows) == len(names) + 1
    assert not any(k.startswith(sc.BACKGROUND_NOISE_DIR) for k in rows)
    assert rows["yes/ffffffff_nohash_0.wav"].error.startswith("wrong sample rate")
    for name in names:
        assert rows[name].split == sc.which_set(name) and rows[name].error is None and len(rows[name].audio) == 16000
        assert rows[name].word == name.split("/")[0] and rows[name].speaker == name.split("/")[1][:8]
    # With the lists, they decide: a file listed for testing is tested even if its hash says otherwise.
    _layout(tmp_path / "b", lists=True)
    (tmp_path / "b" / "testing_list.txt").write_text(f"{names[0]}\n")
    (tmp_path / "b" / "validation_list.txt").write_text("")
    df, info = sc.read_speech_commands(spark, str(tmp_path / "b"))
    splits = {r.key: r.split for r in df.select("key", "split").collect()}
    assert info["split_rule"].startswith("validation_list.txt") and splits[names[0]] == "testing"
    assert set(splits.values()) == {"training", "testing"}
    noise = sc.read_background_noise(spark, str(tmp_path / "b"))
    assert list(noise) == ["white_noise.wav"] and noise["white_noise.wav"].shape == (48000,)


def test_label_rows_builds_silence_and_unknown_as_the_example(spark, tmp_path):
    _layout(tmp_path, speakers=40, words=("yes", "no", "bed", "cat"))
    df, _ = sc.read_speech_commands(spark, str(tmp_path))
    noise = {"n.wav": np.full(32000, 0.5, np.float32)}
    rows, counts = sc.label_rows(df, ["yes", "no"], 25.0, 50.0, noise=noise, seed=3)
    wanted = {s: c["yes"] + c["no"] for s, c in counts.items()}
    for split, c in counts.items():
        assert c["_silence_"] == int(np.ceil(wanted[split] * 0.25))
        assert c["_unknown_"] == int(np.ceil(wanted[split] * 0.5))  # of the 2 other words' clips
    silence = {r.key: r for r in rows.where("label = 0").collect()}
    assert all(k.startswith("_silence_/") for k in silence)
    assert all(not any(r.audio) for r in silence.values() if r.split == "training")  # the pipeline adds noise
    assert any(max(r.audio) > 0 for r in silence.values() if r.split != "training")  # fixed noise for scoring
    assert {r.label for r in rows.collect()} == {0, 1, 2, 3}
    # Built in the executors, seeded per row: the same clips however the rows are partitioned.
    again, _ = sc.label_rows(df.repartition(3), ["yes", "no"], 25.0, 50.0, noise=noise, seed=3)
    for row in again.where("label = 0").collect():
        np.testing.assert_array_equal(row.audio, silence[row.key].audio)

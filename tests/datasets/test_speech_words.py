"""The espeak-ng generator writes Speech Commands' layout, with speakers kept apart by the split rule."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from tfos_lib.datasets import speech_commands as sc
from tfos_lib.datasets import speech_words


def test_generator_writes_the_real_layout(tmp_path):
    root = tmp_path / "speech"
    info = speech_words.write_speech_words(str(root), speakers=12, repeats=2, other_words=2, noise_seconds=2, seed=1)
    assert info["speakers"] == 12 and info["clips"] == 12 * (10 * 2 + 2)
    assert set(info["words"]) == set(speech_words.COMMAND_WORDS) | {"bed", "bird"}
    with open(root / "speakers.csv") as f:
        speakers = list(csv.DictReader(f))
    assert {s["hash"] for s in speakers} == {speech_words.speaker_hash(s["voice"]) for s in speakers}
    clip = root / "yes" / f"{speakers[0]['hash']}_nohash_1.wav"
    audio, error = sc.decode_wav(clip.read_bytes())
    assert error is None and 0.2 < np.abs(audio).max() <= 0.96  # spoken, with the random gain
    assert sorted(os.listdir(root / sc.BACKGROUND_NOISE_DIR)) == [
        "brown_noise.wav", "mains_hum.wav", "pink_noise.wav", "white_noise.wav"]
    listed = {}
    for split in ("validation", "testing"):
        for name in (root / f"{split}_list.txt").read_text().split():
            assert sc.which_set(name) == split and (root / name).exists()
            listed.setdefault(name.split("/")[1].split("_")[0], set()).add(split)
    assert all(len(v) == 1 for v in listed.values())
    again = speech_words.write_speech_words(str(root), speakers=12, repeats=2, other_words=2, noise_seconds=2, seed=1)
    assert again == info  # reused, not rewritten


def test_missing_espeak_names_the_install_command(monkeypatch):
    monkeypatch.setattr(speech_words.shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"(?s)not installed: run `apt-get install -y espeak-ng`.*--data-dir"):
        speech_words.espeak_command()

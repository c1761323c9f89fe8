"""Offline Speech Commands: real speech synthesised by espeak-ng, written in the dataset's own layout.

Google's Speech Commands cannot be downloaded here, so :func:`write_speech_words`
writes what its tarball unpacks to, with words spoken by Debian's ``espeak-ng``::

    <root>/yes/<speaker-hash>_nohash_<n>.wav    one folder per word: 1 s, 16 kHz, mono, 16-bit PCM
    <root>/bed/...                               other words (the job's ``_unknown_``)
    <root>/_background_noise_/*.wav              long noise recordings (white, pink, brown, mains hum)
    <root>/validation_list.txt, testing_list.txt the dataset's hash-of-speaker split
    <root>/speakers.csv                          who each speaker hash is (voice, variant, speed, pitch)

A *speaker* is one espeak-ng English voice with one voice variant (``en-gb-scotland+f3``),
with its own base speed and pitch; each utterance jitters both. The hash of the
speaker's name is the ``<speaker-hash>`` of its file names, so the dataset's split rule
(:func:`tfos_lib.datasets.speech_commands.which_set`) keeps every speaker in one
split. Speakers of the test split share the engine (and sometimes the voice or the
variant) with training speakers, never the combination: synthetic speech is far more
regular than the real recordings, which are easier to confuse.

Each clip is synthesised at espeak-ng's 22,050 Hz, resampled to 16 kHz
(``scipy.signal.resample_poly``), trimmed to the spoken part, placed at a random
offset in a 1-s frame with a random gain, and written as 16-bit PCM. Needs the
``espeak-ng`` program (``apt-get install -y espeak-ng``); never imports the launcher.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import subprocess
import wave
from concurrent.futures import ThreadPoolExecutor

import numpy as np

SAMPLE_RATE = 16000
#: The ten command words of the book's 12-class task (the example's default ``--wanted_words``).
COMMAND_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
#: The other words of Speech Commands v0.01: spoken to fill the ``_unknown_`` class.
OTHER_WORDS = ("bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin", "nine", "one",
               "seven", "sheila", "six", "three", "tree", "two", "wow", "zero")
#: espeak-ng's own English voices (the ``mb-*`` ones need MBROLA, which is not installed).
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
INSTALL = "apt-get install -y espeak-ng"
ESPEAK_RATE = 22050


def espeak_command() -> str:
    """The ``espeak-ng`` executable; raises with the install command when it is missing."""
    found = shutil.which("espeak-ng")
    if found is None:
        raise FileNotFoundError(
            "the offline default data is synthesised with espeak-ng, which is not installed: run "
            f"`{INSTALL}` (Debian/Ubuntu), or pass --data-dir with a Speech Commands directory "
            "(speech_commands_v0.01/v0.02 unpacked)."
        )
    return found


def variants() -> list[str]:
    """espeak-ng's voice variants (``m3``, ``f2``, ``klatt``, ``whisper`` ...), as installed."""
    out = subprocess.run([espeak_command(), "--voices=variant"], capture_output=True, text=True, check=True).stdout
    names = [line.split()[4].split("/")[-1] for line in out.splitlines()[1:] if len(line.split()) >= 5]
    return sorted(set(names))


def speaker_hash(name: str) -> str:
    """The 8-hex-digit id that stands for a speaker in file names (as in the real dataset)."""
    return hashlib.sha1(name.encode()).hexdigest()[:8]


def synthesize(word: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """``word`` spoken by espeak-ng, as float samples in [-1, 1] at 16 kHz."""
    from scipy.signal import resample_poly

    raw = subprocess.run([espeak_command(), "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word],
                         capture_output=True, check=True).stdout
    # espeak-ng streams a 44-byte header with an unknown length, then 16-bit mono samples at 22,050 Hz.
    samples = np.frombuffer(raw[44 : 44 + (len(raw) - 44) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
    return resample_poly(samples, 320, 441).astype(np.float32)  # 22,050 * 320 / 441 = 16,000


def place(speech: np.ndarray, rng: np.random.Generator, length: int = SAMPLE_RATE) -> np.ndarray:
    """The spoken part of ``speech`` at a random offset in ``length`` samples of silence, with a random gain."""
    loud = np.flatnonzero(np.abs(speech) > 0.05 * (np.abs(speech).max() + 1e-9))
    spoken = speech[loud[0] : loud[-1] + 1] if len(loud) else speech[:0]
    spoken = spoken[:length]
    out = np.zeros(length, np.float32)
    start = int(rng.integers(0, length - len(spoken) + 1))
    peak = np.abs(spoken).max() if len(spoken) else 1.0
    out[start : start + len(spoken)] = spoken / max(peak, 1e-6) * rng.uniform(0.25, 0.95)
    return out


def wav_bytes(samples: np.ndarray, rate: int = SAMPLE_RATE, channels: int = 1, width: int = 2) -> bytes:
    """A PCM WAV file of ``samples`` (floats in [-1, 1]; interleaved when ``channels`` > 1)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        scale = {1: 127, 2: 32767, 4: 2**31 - 1}[width]
        ints = np.round(np.clip(samples, -1, 1) * scale)
        w.writeframes((ints + 128).astype(np.uint8).tobytes() if width == 1 else ints.astype(f"<i{width}").tobytes())
    return buffer.getvalue()


def noises(seconds: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``_background_noise_`` recordings: white, pink and brown noise, and a mains hum with hiss."""
    n = int(seconds * SAMPLE_RATE)
    white = rng.standard_normal(n)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 1.0)
    pink = np.fft.irfft(spectrum / np.sqrt(f), n)
    brown = np.cumsum(rng.standard_normal(n))
    brown -= np.convolve(brown, np.ones(4001) / 4001, mode="same")  # no slow drift
    t = np.arange(n) / SAMPLE_RATE
    hum = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 8)) + 0.05 * white
    return {name: (x / np.abs(x).max() * 0.5).astype(np.float32)
            for name, x in {"white_noise": white, "pink_noise": pink, "brown_noise": brown, "mains_hum": hum}.items()}


def write_speech_words(
    root: str,
    speakers: int = 80,
    repeats: int = 3,
    other_words: int = 12,
    other_repeats: int = 1,
    noise_seconds: float = 30.0,
    seed: int = 0,
    validation_percentage: float = 10.0,
    testing_percentage: float = 10.0,
    threads: int = 4,
) -> dict:
    """Writes a Speech Commands directory at ``root`` (a local path); reuses one written with the same arguments.

    ``speakers`` voice/variant combinations each say every command word ``repeats``
    times and the first ``other_words`` of :data:`OTHER_WORDS` ``other_repeats``
    times, at jittered speeds and pitches. Returns what was written.
    """
    from tfos_lib.datasets.speech_commands import which_set

    settings = dict(speakers=speakers, repeats=repeats, other_words=other_words, other_repeats=other_repeats,
                    noise_seconds=noise_seconds, seed=seed)
    stamp = os.path.join(root, ".generated")
    if os.path.exists(stamp):
        if open(stamp).read() == repr(settings):
            return _summary(root)
        shutil.rmtree(root)  # generated here before with other settings: none of its clips may stay
    if not 0 <= other_words <= len(OTHER_WORDS):
        raise ValueError(f"other_words must be between 0 and {len(OTHER_WORDS)}; got {other_words}.")
    espeak_command()
    rng = np.random.default_rng(seed)
    combos = [(v, var) for v in VOICES for var in variants()]
    chosen = [combos[i] for i in rng.choice(len(combos), size=min(speakers, len(combos)), replace=False)]
    people = [{"hash": speaker_hash(f"{v}+{var}"), "voice": f"{v}+{var}", "speed": int(rng.integers(130, 200)),
               "pitch": int(rng.integers(25, 75))} for v, var in chosen]
    words = [(w, repeats) for w in COMMAND_WORDS] + [(w, other_repeats) for w in OTHER_WORDS[:other_words]]
    jobs = [(person, word, n, int(rng.integers(2**31))) for person in people for word, reps in words for n in range(reps)]

    def make(item):
        person, word, n, item_seed = item
        r = np.random.default_rng(item_seed)
        speed = int(np.clip(person["speed"] + r.integers(-25, 26), 110, 230))
        pitch = int(np.clip(person["pitch"] + r.integers(-10, 11), 0, 99))
        clip = place(synthesize(word, person["voice"], speed, pitch), r)
        name = f"{word}/{person['hash']}_nohash_{n}.wav"
        with open(os.path.join(root, name), "wb") as f:
            f.write(wav_bytes(clip))
        return name

    for word, _ in words:
        os.makedirs(os.path.join(root, word), exist_ok=True)
    with ThreadPoolExecutor(threads) as pool:  # each item waits on its own espeak-ng process
        names = sorted(pool.map(make, jobs))
    noise_dir = os.path.join(root, "_background_noise_")
    os.makedirs(noise_dir, exist_ok=True)
    for name, samples in noises(noise_seconds, rng).items():
        with open(os.path.join(noise_dir, f"{name}.wav"), "wb") as f:
            f.write(wav_bytes(samples))
    lists = {"validation": [], "testing": []}
    for name in names:
        split = which_set(name, validation_percentage, testing_percentage)
        if split in lists:
            lists[split].append(name)
    for split, files in lists.items():
        with open(os.path.join(root, f"{split}_list.txt"), "w") as f:
            f.write("".join(f"{name}\n" for name in files))
    with open(os.path.join(root, "speakers.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, ["hash", "voice", "speed", "pitch"])
        writer.writeheader()
        writer.writerows(people)
    with open(stamp, "w") as f:
        f.write(repr(settings))
    return _summary(root)


def _summary(root: str) -> dict:
    with open(os.path.join(root, "speakers.csv")) as f:
        speakers = sum(1 for _ in f) - 1
    words = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("_"))
    clips = sum(len(os.listdir(os.path.join(root, d))) for d in words)
    return {"root": root, "speakers": speakers, "words": words, "clips": clips, "synthesizer": "espeak-ng"}

"""Reads Google's Speech Commands layout in Spark: split by speaker, decoded and validated in executors.

The layout (v0.01 and v0.02 alike)::

    <root>/<word>/<speaker-hash>_nohash_<n>.wav   1 s (or shorter), 16 kHz, mono, 16-bit PCM
    <root>/_background_noise_/*.wav               long noise recordings
    <root>/validation_list.txt, testing_list.txt  relative paths (``<word>/<file>``), one a line

:func:`read_speech_commands` lists every WAV with Spark's ``binaryFile`` source
(local, HDFS, S3 ...), decodes and checks it in the executors (:func:`decode_wav`:
not a WAV, wrong sample rate, stereo, wrong bit depth, truncated) and assigns its
split: from the two lists when the directory has them, else by the dataset's rule
(:func:`which_set`, the example's ``input_data.which_set``: SHA-1 of the file name
without its ``_nohash_`` part), so one speaker never spans two splits.
:func:`label_rows` then builds the example's 12-class sets: the wanted words,
``_silence_`` and ``_unknown_`` (``prepare_data_index``).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import wave
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

SAMPLE_RATE = 16000
CLIP_SAMPLES = 16000
MAX_NUM_WAVS_PER_CLASS = 2**27 - 1  # ~134M: the example's constant
SILENCE_LABEL, UNKNOWN_LABEL = "_silence_", "_unknown_"
BACKGROUND_NOISE_DIR = "_background_noise_"
#: Why a file is unusable (the reasons :func:`decode_wav` gives).
BAD_REASONS = ("not a WAV file", "wrong sample rate", "not mono", "not 16-bit", "truncated")


def which_set(filename: str, validation_percentage: float = 10.0, testing_percentage: float = 10.0) -> str:
    """``"validation"``, ``"testing"`` or ``"training"`` for a file, by the hash of its speaker (the example's rule).

    Everything after ``_nohash_`` is ignored, so all clips of one speaker land together;
    the split stays put when files are added.
    """
    base_name = os.path.basename(filename)
    hash_name = re.sub(r"_nohash_.*$", "", base_name)
    hashed = hashlib.sha1(hash_name.encode("utf-8")).hexdigest()
    percentage = (int(hashed, 16) % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)
    if percentage < validation_percentage:
        return "validation"
    if percentage < testing_percentage + validation_percentage:
        return "testing"
    return "training"


def decode_wav(data: bytes | None, rate: int = SAMPLE_RATE, length: int = CLIP_SAMPLES) -> tuple[np.ndarray | None, str | None]:
    """``(samples, None)`` with ``length`` float32 samples in [-1, 1] (zero-padded or cut), or ``(None, reason)``.

    The reason starts with one of :data:`BAD_REASONS` and says what was found.
    """
    if not data or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None, f"not a WAV file (starts with {bytes(data[:12] if data else b'')!r})"
    try:
        with wave.open(io.BytesIO(data)) as w:
            channels, width, found_rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(frames)
    except (wave.Error, EOFError) as error:
        return None, f"not a WAV file ({error})"
    if found_rate != rate:
        return None, f"wrong sample rate ({found_rate} Hz, expected {rate})"
    if channels != 1:
        return None, f"not mono ({channels} channels)"
    if width != 2:
        return None, f"not 16-bit ({8 * width}-bit samples)"
    if len(raw) < frames * width * channels:
        return None, f"truncated ({len(raw) // 2} of {frames} samples present)"
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float32)[:length] / 32768.0
    return np.pad(samples, (0, length - len(samples))), None


def decode_udf(rate: int = SAMPLE_RATE, length: int = CLIP_SAMPLES):
    """A pandas UDF: WAV bytes -> ``struct<audio: array<float>, error: string>`` (decoded in the executors)."""
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("struct<audio: array<float>, error: string>")
    def decode(contents):
        decoded = [decode_wav(c, rate, length) for c in contents]
        return pd.DataFrame({"audio": [a for a, _ in decoded], "error": [e for _, e in decoded]})

    return decode


def _read_list(spark, root: str, name: str) -> set[str] | None:
    """The entries of ``validation_list.txt``/``testing_list.txt``, or None when the file is absent."""
    from tfos_lib import storage

    path = storage.join(root, name)
    if not storage.exists(path):
        return None
    return {line.strip() for line in storage.read_bytes(path).decode().splitlines() if line.strip()}


def read_speech_commands(spark, data_dir: str, validation_percentage: float = 10.0,
                         testing_percentage: float = 10.0) -> tuple["DataFrame", dict]:
    """Every word clip under ``data_dir`` as a DataFrame (decoded lazily in the executors); runs on the driver.

    Columns: ``key`` (``<word>/<file>.wav``), ``word``, ``speaker``, ``split``
    (``training``/``validation``/``testing``), ``audio`` (array<float> of 16,000
    samples), ``error`` (null, or why the file is unusable). Also returns how the
    split was made.

    Raises:
        FileNotFoundError: no WAV in a word folder under ``data_dir``.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    from tfos_lib import storage

    root = storage.normalize(data_dir)
    files = (spark.read.format("binaryFile").option("recursiveFileLookup", "true").option("pathGlobFilter", "*.wav")
             .load(root))
    key = F.array_join(F.slice(F.split("path", "/"), -2, 2), "/")
    files = files.select(key.alias("key"), "content").where(~F.col("key").startswith(BACKGROUND_NOISE_DIR + "/"))
    lists = {split: _read_list(spark, root, f"{split}_list.txt") for split in ("validation", "testing")}
    rule = "validation_list.txt and testing_list.txt" if all(v is not None for v in lists.values()) else (
        f"hash of the speaker (validation {validation_percentage:g}%, testing {testing_percentage:g}%)")
    if any(v is None for v in lists.values()):
        lists = None

    @pandas_udf("string")
    def split_of(keys):
        import pandas as pd

        if lists is not None:
            return pd.Series(["validation" if k in lists["validation"] else "testing" if k in lists["testing"]
                              else "training" for k in keys])
        return pd.Series([which_set(k, validation_percentage, testing_percentage) for k in keys])

    decoded = decode_udf()(F.col("content"))
    df = files.select(
        "key", F.element_at(F.split("key", "/"), 1).alias("word"),
        F.regexp_replace(F.element_at(F.split("key", "/"), 2), "_nohash_.*$", "").alias("speaker"),
        split_of("key").alias("split"), decoded["audio"].alias("audio"), decoded["error"].alias("error"),
    )
    if not files.limit(1).count():
        raise FileNotFoundError(
            f"no .wav files in word folders under {data_dir}: expected the Speech Commands layout "
            "(<word>/<speaker-hash>_nohash_<n>.wav, _background_noise_/, validation_list.txt, testing_list.txt). "
            "Unpack speech_commands_v0.01.tar.gz (or v0.02) there, or omit --data-dir for the synthesised default."
        )
    return df, {"split_rule": rule}


def read_background_noise(spark, data_dir: str) -> dict[str, np.ndarray]:
    """The ``_background_noise_`` recordings by file name (float32 at 16 kHz, any length); {} when absent.

    Files that are not 16 kHz mono 16-bit are refused (they would be mixed in at the wrong speed).
    """
    from pyspark.sql import functions as F

    from tfos_lib import storage

    folder = storage.join(storage.normalize(data_dir), BACKGROUND_NOISE_DIR)
    if not storage.exists(folder):
        return {}
    rows = (spark.read.format("binaryFile").option("pathGlobFilter", "*.wav").load(folder)
            .select(F.element_at(F.split("path", "/"), -1).alias("name"), "content").collect())
    out = {}
    for row in rows:
        samples, error = decode_wav(row.content, length=len(row.content) // 2)
        if error:
            raise ValueError(f"background noise {row.name} in {folder} is unusable: {error}; convert it to 16 kHz "
                             "mono 16-bit PCM or remove it.")
        out[row.name] = samples[: max(0, (len(row.content) - 44) // 2)]
    return out


def mix_noise(audio: np.ndarray, noise: dict[str, np.ndarray], volume, seed: int) -> np.ndarray:
    """``audio`` (clips x samples) plus a seeded random stretch of noise per clip at ``volume`` (scalar or per clip)."""
    rng = np.random.default_rng(seed)
    clips = [np.asarray(x, np.float32) for x in noise.values() if len(x) >= audio.shape[1]]
    if not clips:
        return audio.copy()
    volumes = np.broadcast_to(np.asarray(volume, np.float32), (len(audio),))
    out = audio.copy()
    for i in range(len(audio)):
        clip = clips[rng.integers(len(clips))]
        start = rng.integers(len(clip) - audio.shape[1] + 1)
        out[i] += volumes[i] * clip[start : start + audio.shape[1]]
    return np.clip(out, -1.0, 1.0)


def _silence_clips(spark, split: str, size: int, shared_noise, seed: tuple[int, int]):
    """``size`` ``_silence_`` rows of ``split``, built in the executors (16,000 floats each: too big to ship).

    Training silence is zeros; other splits get noise at volume U(0, 1), seeded per row
    so a clip does not depend on how the rows are partitioned.
    """
    import pyarrow as pa

    def build(batches):
        noise = shared_noise.value
        for batch in batches:
            ids = batch.column(0).to_numpy()
            audio = np.zeros((len(ids), CLIP_SAMPLES), np.float32)
            if split != "training" and noise:
                for row, i in enumerate(ids):
                    row_seed = [*seed, int(i)]
                    volume = np.random.default_rng(row_seed).uniform(0, 1)
                    audio[row] = mix_noise(audio[row : row + 1], noise, volume, seed=row_seed)[0]
            yield pa.RecordBatch.from_pydict({
                "key": pa.array([f"{SILENCE_LABEL}/{split}-{i}" for i in ids]),
                "split": pa.array([split] * len(ids)),
                "label": pa.array(np.zeros(len(ids), np.int32)),
                "audio": pa.ListArray.from_arrays(np.arange(len(ids) + 1, dtype=np.int32) * CLIP_SAMPLES,
                                                  pa.array(audio.ravel())),
            })

    return spark.range(size).mapInArrow(build, "key string, split string, label int, audio array<float>")


def label_rows(df, wanted_words, silence_percentage: float = 10.0, unknown_percentage: float = 10.0,
               noise: dict[str, np.ndarray] | None = None, seed: int = 0):
    """The example's ``prepare_data_index`` on good rows of :func:`read_speech_commands`, per split.

    Wanted words keep their label; other words become ``_unknown_``, of which a
    random ``unknown_percentage``% of the split's wanted-word count is kept; and
    ``silence_percentage``% as many ``_silence_`` rows are added (``key``
    ``_silence_/<split>-<n>``). Training silence is all zeros (the input pipeline mixes
    in fresh noise at U(0, 1) each time, as the example does); validation and testing
    silence is a seeded stretch of ``noise`` at U(0, 1), fixed so that every scorer sees the
    same clip. Labels are indices into ``[_silence_, _unknown_, *wanted_words]``.
    Returns ``(DataFrame with key, split, label, audio; {split: {label name: count}})``.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    names = [SILENCE_LABEL, UNKNOWN_LABEL, *wanted_words]
    index = F.create_map(*[x for i, w in enumerate(wanted_words) for x in (F.lit(w), F.lit(i + 2))])
    good = df.where(F.col("error").isNull()).select("key", "split", "word", "audio")
    wanted = good.where(F.col("word").isin(list(wanted_words)))
    counts = {r.split: r["count"] for r in wanted.groupBy("split").count().collect()}
    unknown = (good.where(~F.col("word").isin(list(wanted_words)))
               .withColumn("_r", F.row_number().over(Window.partitionBy("split").orderBy(F.rand(seed), "key"))))
    keep = F.create_map(*[x for s, n in counts.items() for x in (F.lit(s), F.lit(math.ceil(n * unknown_percentage / 100)))])
    unknown = unknown.where(F.col("_r") <= F.coalesce(keep[F.col("split")], F.lit(0))).drop("_r")
    spark = df.sparkSession
    shared_noise = spark.sparkContext.broadcast(noise or {})  # read by the executors that build the clips
    silence = None
    for number, (split, n) in enumerate(sorted(counts.items())):
        clips = _silence_clips(spark, split, math.ceil(n * silence_percentage / 100), shared_noise, (seed, number))
        silence = clips if silence is None else silence.unionByName(clips)
    rows = (wanted.select("key", "split", index[F.col("word")].alias("label"), "audio")
            .unionByName(unknown.select("key", "split", F.lit(1).alias("label"), "audio")))
    if silence is not None:
        rows = rows.unionByName(silence)
    summary: dict[str, dict[str, int]] = {}
    for r in rows.groupBy("split", "label").count().collect():
        summary.setdefault(r.split, {})[names[r.label]] = r["count"]
    return rows, summary

"""Chapter 3's sentence file (``label<TAB>sentence``) read into Spark, and an offline stand-in.

The real file is the University of Michigan SI650 data (Kaggle ``si650winter11``
``training.txt``, shipped by the book as ``sentiment.txt``): 7,086 lines such as
``1<TAB>The Da Vinci Code book is just awesome.``, label 1 positive and 0
negative, UTF-8. Only 1,410 of the sentences are distinct.

When it is not at hand, :func:`write_synthetic` writes a file in the same format
from templates about the same films and books, with duplicates, punctuation, mixed
case and a few non-ASCII characters, so every code path of the real loader runs.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

__all__ = ["SENTIMENT_FILE", "find_sentiment_file", "read_sentences", "write_synthetic"]

SENTIMENT_FILE = "sentiment.txt"
# label TAB sentence, label 0 or 1, a sentence with at least one non-space character.
_LINE_PATTERN = r"^[01]\t.*\S"


def find_sentiment_file(data_dir: str | os.PathLike) -> str:
    """``sentiment.txt`` in ``data_dir`` (or ``data_dir`` itself if it is that file); see
    :func:`tfos_lib.datasets.files.find_data_file`."""
    from tfos_lib.datasets.files import find_data_file

    return find_data_file(
        data_dir, SENTIMENT_FILE, "lines 'label<TAB>sentence', label 0 or 1: the book's chapter 3 data",
        "Pass --data-dir with the folder of sentiment.txt, or omit it to use generated data.",
    )


def read_sentences(spark, path: str):
    """Reads ``label<TAB>sentence`` lines into a DataFrame ``(label int, sentence string)``.

    Runs on the driver; Spark reads and parses the file. Blank lines are skipped
    (the real file ends with one). A tab inside the sentence stays part of it.

    Args:
        spark: the SparkSession.
        path: the file (any path Spark can read).

    Returns:
        The parsed rows, in file order.

    Raises:
        ValueError: a non-blank line is not ``0|1<TAB>sentence``; names the file, the
            line number and the line, for the first three such lines.
    """
    from pyspark.sql import functions as F

    lines = spark.read.text(path, wholetext=False).withColumnRenamed("value", "line")
    nonblank = lines.filter(F.trim(F.regexp_replace("line", r"[\t\r]", "")) != "")
    bad = nonblank.filter(~F.col("line").rlike(_LINE_PATTERN))
    if not bad.isEmpty():
        # Only on the error path: number the lines (zipWithIndex keeps file order).
        numbered = lines.rdd.zipWithIndex().filter(lambda r: r[0].line.strip() and not _line_ok(r[0].line))
        examples = "; ".join(f"line {i + 1}: {row.line[:80]!r}" for row, i in numbered.take(3))
        raise ValueError(
            f"{path}: {bad.count()} line(s) are not 'label<TAB>sentence' with label 0 or 1, e.g. {examples}. "
            "Fix or delete those lines (blank lines are skipped)."
        )
    parts = F.split("line", "\t", 2)
    return nonblank.select(
        parts.getItem(0).cast("int").alias("label"),
        F.regexp_replace(parts.getItem(1), r"\s+$", "").alias("sentence"),  # the book's rstrip()
    )


def _line_ok(line: str) -> bool:
    import re

    return re.match(r"[01]\t.*\S", line) is not None


_SUBJECTS = [
    "The Da Vinci Code", "Harry Potter", "Brokeback Mountain", "Mission Impossible", "this movie", "that movie",
    "the book", "Narnia",
]
_POSITIVE = [
    "{s} is awesome.", "I love {s}!", "I like {s}.", "{s} was great, really great!!", "I really enjoyed {s}...",
    "{s} is one of the best, i loved it.", "Wow, {s} is AWESOME", "{s} was beautiful and fun",
    "i like {s} a lot", "{s} - simply amazing", "I adore {s} \u2014 caf\u00e9 talk all week",
]
_NEGATIVE = [
    "{s} sucks.", "I hate {s}!", "{s} is terrible.", "{s} was boring and stupid...", "I really disliked {s}",
    "{s} was the worst, i hated it.", "Ugh, {s} SUCKS", "{s} is awful and dumb",
    "i hate {s} so much", "{s} - simply terrible", "\u201c{s}\u201d was a waste of time",
]


def write_synthetic(path: str | os.PathLike, rows: int = 2000, seed: int = 0) -> Path:
    """Writes ``rows`` lines of ``label<TAB>sentence`` from templates, with duplicates.

    Like the real file, some sentences repeat many times (drawn with a skewed
    distribution) and a trailing blank line ends the file. About 55% positive.

    Args:
        path: the file to write (parent created if missing).
        rows: number of labelled lines.
        seed: makes the file reproducible.

    Returns:
        The path written.

    Raises:
        ValueError: ``rows`` < 2.
    """
    if rows < 2:
        raise ValueError(f"rows must be >= 2 (one positive, one negative); got {rows}.")
    rng = random.Random(seed)
    sentences = [(1, t.format(s=s)) for t in _POSITIVE for s in _SUBJECTS] + [
        (0, t.format(s=s)) for t in _NEGATIVE for s in _SUBJECTS
    ]
    rng.shuffle(sentences)
    # Zipf-like weights: a few sentences repeat often, most rarely, as in the real data.
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(sentences))]
    picked = [sentences[0], sentences[1]] if sentences[0][0] != sentences[1][0] else []
    picked += rng.choices(sentences, weights=weights, k=rows - len(picked))
    if len({label for label, _ in picked}) < 2:  # both classes, even for tiny files
        picked[-1] = next(s for s in sentences if s[0] != picked[0][0])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{label}\t{sentence}\n" for label, sentence in picked) + "\n", encoding="utf-8")
    return path

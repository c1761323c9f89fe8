"""Text to pre-padded word-index sequences, the same in Spark, in Python and in the browser.

Chapter 3's preprocessing, made exact enough that three implementations agree
token for token:

1. **Tokenise**: delete every character that is not an ASCII letter, digit or
   ASCII whitespace (punctuation is removed, not replaced by a space: ``it's`` ->
   ``its``), lower-case, split on runs of ASCII whitespace. Non-ASCII letters are
   deleted too (``café`` -> ``caf``), exactly as the book's
   ``re.sub(r'[^a-zA-Z0-9\\s]', '', text)`` did on Python 2 byte strings.
2. **Vocabulary**: words seen at least ``min_count`` times, indexed 1, 2, ... by
   descending count, ties by the word, so the same data always gives the same
   indices. Index 0 is padding only (the book's code gave a real word, "hate",
   index 0, so that word could not be told from padding).
3. **Encode**: words outside the vocabulary are dropped; sequences longer than
   ``max_len`` keep their *last* ``max_len`` indices and shorter ones get zeros in
   front (Keras' ``pad_sequences`` defaults, ``padding='pre', truncating='pre'``,
   which the book used).

The character classes are written once, in :data:`REMOVE_PATTERN` and
:data:`SEPARATOR_PATTERN`, in a syntax that Java (Spark's ``regexp_replace`` and
``split``), Python's ``re`` and JavaScript's ``RegExp`` read identically (no
``\\s``, whose meaning differs between the three, and no ``\\v``, which Java reads
as a class). The web page gets them from :func:`tokenizer_spec`.

Spark functions build column expressions on the driver; executors evaluate them.
The ``*_py`` functions are the pure-Python twins, for single sentences.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "PADDING_INDEX",
    "REMOVE_PATTERN",
    "SEPARATOR_PATTERN",
    "Vocabulary",
    "build_vocabulary",
    "encode_column",
    "encode_py",
    "tokenize_column",
    "tokenize_py",
    "tokenizer_spec",
]

#: Characters deleted before splitting: all but ASCII letters, digits and whitespace.
REMOVE_PATTERN = r"[^A-Za-z0-9 \t\n\r\f\x0B]"
#: What separates words: runs of ASCII whitespace (space, tab, LF, CR, FF, VT).
SEPARATOR_PATTERN = r"[ \t\n\r\f\x0B]+"
#: Index used only for padding; real words start at 1.
PADDING_INDEX = 0

_REMOVE = re.compile(REMOVE_PATTERN)
_SEPARATOR = re.compile(SEPARATOR_PATTERN)


def tokenize_py(text: str) -> list[str]:
    """The words of one text (pure Python twin of :func:`tokenize_column`)."""
    return [t for t in _SEPARATOR.split(_REMOVE.sub("", text).lower()) if t]


def tokenize_column(text):
    """Spark column expression: ``array<string>`` of the words of string column ``text``.

    Spark's built-ins ``regexp_replace``, ``lower``, ``split`` and the ``filter``
    higher-order function (``split`` leaves an empty string for leading or trailing
    whitespace). ``pyspark.ml.feature.RegexTokenizer`` would do the split, but it
    lower-cases with the JVM's default locale before our character filter runs.

    Args:
        text: a column name or Column of strings.
    """
    from pyspark.sql import functions as F

    cleaned = F.lower(F.regexp_replace(text, REMOVE_PATTERN, ""))
    return F.filter(F.split(cleaned, SEPARATOR_PATTERN), lambda t: F.length(t) > 0)


class Vocabulary:
    """Word -> index (1-based; 0 is padding), with the count each word had.

    Attributes:
        tokens: words in index order (``tokens[0]`` has index 1).
        counts: occurrences of each word in the data it was built from.
        min_count: the threshold it was built with.
    """

    def __init__(self, tokens: Sequence[str], counts: Sequence[int], min_count: int):
        self.tokens = list(tokens)
        self.counts = list(counts)
        self.min_count = min_count
        self.index = {t: i + 1 for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def input_dim(self) -> int:
        """Rows an Embedding layer needs: the words plus the padding index."""
        return len(self.tokens) + 1

    def to_csv(self) -> str:
        """``token,index`` lines, no header, the book's ``token_index.csv`` format."""
        return "".join(f"{t},{i}\n" for t, i in self.index.items())

    @classmethod
    def from_csv(cls, text: str, min_count: int = 0) -> "Vocabulary":
        """Reads :meth:`to_csv` output back (counts unknown: 0).

        Raises:
            ValueError: a line is not ``token,index`` or indices are not 1, 2, ... in order.
        """
        tokens = []
        for number, line in enumerate(text.splitlines(), 1):
            token, _, index = line.partition(",")
            if not token or not index.isdigit() or int(index) != number:
                raise ValueError(f"token_index.csv line {number}: expected 'token,{number}', found {line!r}.")
            tokens.append(token)
        return cls(tokens, [0] * len(tokens), min_count)


def build_vocabulary(tokens_df, column: str = "tokens", min_count: int = 5) -> Vocabulary:
    """Counts words in Spark and keeps those seen at least ``min_count`` times.

    Runs on the driver (Spark does the counting: ``explode`` + ``groupBy``); only the
    kept words are collected, since the vocabulary must be on the driver anyway
    (for ``token_index.csv`` and the Embedding size).

    Args:
        tokens_df: DataFrame with an ``array<string>`` column of words.
        column: that column's name.
        min_count: minimum number of occurrences (the book's: 5).

    Raises:
        ValueError: ``min_count`` < 1.
    """
    from pyspark.sql import functions as F

    if min_count < 1:
        raise ValueError(f"min_count must be >= 1; got {min_count}.")
    rows = (
        tokens_df.select(F.explode(column).alias("token"))
        .groupBy("token")
        .count()
        .filter(F.col("count") >= min_count)
        .orderBy(F.desc("count"), F.asc("token"))
        .collect()
    )
    return Vocabulary([r["token"] for r in rows], [r["count"] for r in rows], min_count)


def encode_py(tokens: Iterable[str], index: Mapping[str, int], max_len: int) -> list[int]:
    """Pure-Python twin of :func:`encode_column`: known words' indices, pre-truncated and pre-padded."""
    ids = [index[t] for t in tokens if t in index][-max_len:] if max_len > 0 else []
    return [PADDING_INDEX] * (max_len - len(ids)) + ids


def encode_column(tokens, vocabulary: Vocabulary, max_len: int):
    """Spark column expression: ``array<int>`` of exactly ``max_len`` word indices.

    The vocabulary travels in the plan as one literal map (fine for the book's
    ~450 words and for tens of thousands; a vocabulary of millions would want a
    broadcast join instead).

    Args:
        tokens: ``array<string>`` column (from :func:`tokenize_column`).
        vocabulary: word -> index.
        max_len: length of every output array.

    Raises:
        ValueError: ``max_len`` < 1.
    """
    from pyspark.sql import functions as F

    if max_len < 1:
        raise ValueError(f"max_len must be >= 1; got {max_len}.")
    if len(vocabulary):
        lookup = F.map_from_arrays(F.lit(vocabulary.tokens), F.lit(list(range(1, len(vocabulary) + 1))))
        known = F.filter(F.transform(tokens, lambda t: F.try_element_at(lookup, t)), lambda i: i.isNotNull())
    else:
        known = F.array().cast("array<int>")
    # Keep the last max_len indices; slice(start=1) when there are fewer.
    kept = F.slice(known, F.greatest(F.size(known) - max_len + 1, F.lit(1)), max_len)
    padding = F.array_repeat(F.lit(PADDING_INDEX), F.lit(max_len) - F.size(kept))
    return F.concat(padding, kept).cast("array<int>")


def tokenizer_spec(max_len: int) -> dict:
    """What a JavaScript tokeniser needs to match :func:`tokenize_py` and :func:`encode_py`."""
    return {
        "removePattern": REMOVE_PATTERN,
        "separatorPattern": SEPARATOR_PATTERN,
        "paddingIndex": PADDING_INDEX,
        "maxLen": max_len,
    }

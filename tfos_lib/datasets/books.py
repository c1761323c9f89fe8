"""Books as language-model data: read UTF-8 text in Spark, tokenise, split by contiguous blocks, cut windows.

Chapter 13's data is plain text (the book's ``postgre_book.txt``); any UTF-8 file or
folder of files works. The offline default is Jane Austen's six novels from Debian's
``r-cran-janeaustenr`` (public domain text, MIT-licensed package), which stores them as R
lazy-load data; :mod:`tfos_lib.datasets.rdata` reads them without R.

Tokenisers (:func:`tokenize_py`, applied in Spark by :func:`tokenize_column`):

- ``char``: every Unicode code point is a token (``\\r\\n`` and ``\\r`` become ``\\n`` first).
- ``word``: the book's (L7251-7311), without its bugs: each symbol of :data:`WORD_SYMBOLS`
  is replaced, in the book's order, by its token *with spaces around it* (the book's code
  glued the token to the word, L7303); the text is lower-cased and split on whitespace;
  nothing is cut from the start (the book's ``text[14:]``). Added: the typographic
  quotes and dashes the book's corpus contains (the book left them glued to words) and
  the right single quote as an apostrophe. :func:`detokenize_py` undoes it: a symbol
  attaches to the word before it, as in the book, except opening ones (``(``, ``\u201c``),
  which attach to the word after (the book's ``replace('(', '(')`` was a no-op).

The vocabulary is sorted (the book's ``set`` order changed with ``PYTHONHASHSEED``), built
from the training blocks only; id 0 is :data:`UNKNOWN` for tokens it lacks.
"""

from __future__ import annotations

import glob
import os

__all__ = [
    "AUSTEN_BOOKS", "INSTALL_HINT", "OPENING_SYMBOLS", "UNKNOWN", "WORD_SYMBOLS", "build_vocabulary", "detokenize_py",
    "encode_column", "find_janeaustenr", "read_corpus", "split_blocks", "tokenize_column", "tokenize_py",
    "windows", "write_austen_books",
]

#: The book's symbol tokens (L7251-7264), in its order, then the non-ASCII ones its corpus holds.
WORD_SYMBOLS = {
    ".": "_Sym_Period_", ",": "_Sym_Comma_", '"': "_Sym_Quote_", ";": "_Sym_Semicolon_",
    "!": "_Sym_Exclamation_", "?": "_Sym_Question_", "(": "_Sym_Left_Parentheses_",
    ")": "_Sym_Right_Parentheses_", "--": "_Sym_Dash_", "\n": "_Sym_Return_",
    "\u201c": "_Sym_Left_Quote_", "\u201d": "_Sym_Right_Quote_", "\u2014": "_Sym_Em_Dash_",
    "\u2013": "_Sym_En_Dash_",
}
#: Symbols that open (attach to the next word when detokenising); the others attach to the word before.
OPENING_SYMBOLS = ("(", "\u201c")
#: Id 0: a token the training blocks did not have.
UNKNOWN = "\ufffd"
#: In publication order; the R data sets' names.
AUSTEN_BOOKS = {
    "sensesensibility": "sense_and_sensibility", "prideprejudice": "pride_and_prejudice",
    "mansfieldpark": "mansfield_park", "emma": "emma", "northangerabbey": "northanger_abbey",
    "persuasion": "persuasion",
}
_PACKAGE_DATA = os.path.join("usr", "lib", "R", "site-library", "janeaustenr", "data")
INSTALL_HINT = (
    "Jane Austen's novels ship in Debian's r-cran-janeaustenr; unpack it (no R needed) from the repository "
    "root with: apt-get download r-cran-janeaustenr && dpkg-deb -x r-cran-janeaustenr_*.deb build/janeaustenr"
)


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def tokenize_py(text: str, mode: str) -> list[str]:
    """The tokens of ``text``: ``mode`` ``"char"`` (code points) or ``"word"`` (the book's, fixed)."""
    text = _normalise(text)
    if mode == "char":
        return list(text)
    if mode != "word":
        raise ValueError(f"tokens must be 'char' or 'word'; got {mode!r}.")
    text = text.replace("\u2019", "'")
    for symbol, token in WORD_SYMBOLS.items():
        text = text.replace(symbol, f" {token} ")
    return text.lower().split()


def detokenize_py(tokens: list[str], mode: str) -> str:
    """Text from tokens (the inverse of :func:`tokenize_py` up to case and spacing)."""
    if mode == "char":
        return "".join(tokens)
    text = " ".join(tokens)
    for symbol, token in WORD_SYMBOLS.items():
        if symbol in OPENING_SYMBOLS:  # keeps the space before, drops the one after
            text = text.replace(token.lower() + " ", symbol).replace(token.lower(), symbol)
        else:
            text = text.replace(" " + token.lower(), symbol)
    return text.replace("\n ", "\n")


def tokenize_column(text, mode: str):
    """Spark column expression: ``array<string>`` tokens of string column ``text`` (a pandas UDF over
    :func:`tokenize_py`, so Spark and Python tokenise identically)."""
    import pandas as pd
    from pyspark.sql import functions as F

    def tokens(texts):
        return texts.map(lambda t: tokenize_py(t, mode))

    # Real (not string) annotations: pandas_udf infers its kind from them.
    tokens.__annotations__ = {"texts": pd.Series, "return": pd.Series}
    return F.pandas_udf(tokens, "array<string>")(text)


def find_janeaustenr(roots) -> str | None:
    """The ``janeaustenr/data`` folder under the first of ``roots`` that has it (``/`` for a real install)."""
    for root in roots:
        path = os.path.join(root, _PACKAGE_DATA)
        if os.path.isfile(os.path.join(path, "Rdata.rdb")):
            return path
    return None


def write_austen_books(package_data: str, destination: str) -> list[str]:
    """Writes the six novels as UTF-8 text files ``<destination>/<title>.txt``; returns their paths."""
    from tfos_lib.datasets import rdata

    vectors = rdata.read_character_vectors(package_data, names=set(AUSTEN_BOOKS))
    missing = set(AUSTEN_BOOKS) - set(vectors)
    if missing:
        raise ValueError(f"{package_data} lacks the novels {sorted(missing)}; expected r-cran-janeaustenr's data.")
    os.makedirs(destination, exist_ok=True)
    paths = []
    for name, title in AUSTEN_BOOKS.items():
        path = os.path.join(destination, f"{title}.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(line or "" for line in vectors[name]) + "\n")
        paths.append(path)
    return paths


def read_corpus(spark, path: str, encoding: str = "utf-8"):
    """Reads a text file, or every file under a folder, into a DataFrame ``(book string, text string)``.

    Runs on the driver; executors decode the bytes. One row per file (a book is a few MB at most).

    Raises:
        FileNotFoundError: no such path, or a folder without files.
        ValueError: a file that does not decode (names the file and the byte offset, suggests
            ``--encoding``), or an empty (blank) file.
    """
    import pandas as pd
    from pyspark.sql import functions as F

    if not glob.glob(path) and "://" not in path:
        raise FileNotFoundError(f"--data-dir {path} does not exist: expected a UTF-8 text file or a folder of them.")
    raw = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(path)

    def decode(batches):
        for frame in batches:
            books, texts, errors = [], [], []
            for file, content in zip(frame["path"], frame["content"]):
                text, error = None, None
                try:
                    text = bytes(content).decode(encoding)
                    if not text.strip():
                        error = "is empty (no text to learn from)"
                except UnicodeDecodeError as e:
                    error = (f"is not {encoding}: byte {e.start} ({bytes(content)[e.start:e.start + 1]!r}) "
                             f"does not decode; pass --encoding (e.g. latin-1) or convert the file")
                books.append(file)
                texts.append(text)
                errors.append(error)
            yield pd.DataFrame({"book": books, "text": texts, "error": errors})

    decoded = raw.select("path", "content").mapInPandas(decode, "book string, text string, error string").cache()
    problems = decoded.filter(F.col("error").isNotNull()).select("book", "error").orderBy("book").collect()
    if problems:
        listed = "; ".join(f"{r.book} {r.error}" for r in problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(f"{len(problems)} bad file(s) in {path}: {listed}{more}.")
    if decoded.isEmpty():
        raise FileNotFoundError(f"{path} holds no files: expected UTF-8 text files.")
    return decoded.select("book", "text")


def split_blocks(tokens_df, held_out_fraction: float = 0.1):
    """Adds ``train`` and ``held_out`` token arrays: the last ``held_out_fraction`` of each book is held out.

    A contiguous block, so no training window overlaps a held-out one.
    """
    from pyspark.sql import functions as F

    size = F.size("tokens")
    cut = (size - F.ceil(size * F.lit(held_out_fraction))).cast("int")
    return tokens_df.select("book", F.slice("tokens", 1, cut).alias("train"),
                            F.slice("tokens", cut + 1, size).alias("held_out"))


def build_vocabulary(blocks_df, column: str = "train") -> list[str]:
    """Sorted distinct tokens of ``column`` (Spark: explode, distinct, sort), after :data:`UNKNOWN` at id 0."""
    from pyspark.sql import functions as F

    rows = blocks_df.select(F.explode(column).alias("t")).distinct().orderBy("t").collect()
    return [UNKNOWN] + [r.t for r in rows if r.t != UNKNOWN]


def encode_column(tokens, vocabulary: list[str]):
    """Spark column expression: ``array<int>`` ids of ``tokens`` (0 for tokens outside ``vocabulary``)."""
    from pyspark.sql import functions as F

    lookup = F.map_from_arrays(F.lit(vocabulary), F.lit(list(range(len(vocabulary)))))
    return F.transform(tokens, lambda t: F.coalesce(F.try_element_at(lookup, t), F.lit(0))).cast("array<int>")


def windows(ids_df, column: str, seq_length: int, context: int = 0):
    """Rows ``(x, y)`` cut from ``column`` at stride ``seq_length``: ``y`` is ``x`` shifted by one token.

    With ``context`` = 0 (training) each row has ``seq_length`` targets and every target is in
    one row. With ``context`` > 0 (evaluation) each row also carries the ``context`` tokens
    before its targets (rows are ``context + seq_length`` long; score only the last
    ``seq_length``), and the first ``ceil(context / seq_length)`` windows, which lack that
    context, are left out. The tail shorter than a window is dropped.
    """
    from pyspark.sql import functions as F

    ids = F.col(column)
    count = F.floor((F.size(ids) - 1) / seq_length).cast("int")
    first = -(-context // seq_length)
    starts = F.when(count > first, F.sequence(F.lit(first), count - 1)).otherwise(F.array().cast("array<int>"))
    length = context + seq_length
    window = F.explode(F.transform(starts, lambda i: F.slice(ids, i * seq_length + 1 - context, length + 1)))
    return ids_df.select(window.alias("w")).select(F.slice("w", 1, length).alias("x"),
                                                   F.slice("w", 2, length).alias("y"))


def scored_blocks(ids_df, column: str, seq_length: int, context: int = 0):
    """Each row's ``column`` cut to the end of the last window of :func:`windows`, with the same arguments.

    Returns ``(ids, first)``: the targets of those windows are ``ids[first:]``.
    """
    from pyspark.sql import functions as F

    covered = F.floor((F.size(column) - 1) / seq_length) * seq_length + 1
    first = -(-context // seq_length) * seq_length + 1
    return ids_df.select(F.slice(column, 1, covered.cast("int")).alias(column)), first

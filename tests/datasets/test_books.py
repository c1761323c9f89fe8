"""Books as language-model data: the tokenisers (against chapter 13's bug list), the R reader, Spark reading and
the contiguous block split."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from tfos_lib.datasets import books, rdata

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# Tokenisers (pure Python)


def test_word_tokens_have_spaces_around_them_as_the_book_says():
    # L7272-7274: "Hello!" -> "Hello _Sym_Exclamation_"; the book's code glued the token to the word.
    assert books.tokenize_py("Hello!", "word") == ["hello", "_sym_exclamation_"]
    assert books.tokenize_py('He said "no" (twice); why?', "word") == [
        "he", "said", "_sym_quote_", "no", "_sym_quote_", "_sym_left_parentheses_", "twice",
        "_sym_right_parentheses_", "_sym_semicolon_", "why", "_sym_question_"]


def test_word_tokens_keep_the_start_of_the_text_and_the_books_order():
    # No text[14:] (it would cut "PostgreSQL Ove"); '.' is replaced first, so "10.0" splits.
    assert books.tokenize_py("PostgreSQL Overview\nPostgreSQL 10.0 -- fast", "word") == [
        "postgresql", "overview", "_sym_return_", "postgresql", "10", "_sym_period_", "0", "_sym_dash_", "fast"]


def test_word_tokens_separate_the_non_ascii_punctuation_the_books_corpus_has():
    assert books.tokenize_py("\u201cit\u2019s\u201d \u2014 a\u2013b", "word") == [
        "_sym_left_quote_", "it's", "_sym_right_quote_", "_sym_em_dash_", "a", "_sym_en_dash_", "b"]


def test_detokenize_undoes_the_word_tokens_including_the_parenthesis_the_book_missed():
    text = "see (the) table.\nit is, fast!"
    assert books.detokenize_py(books.tokenize_py(text, "word"), "word") == text
    # Like the book, an ASCII quote (opening or closing: it cannot tell) attaches to the word before it.
    assert books.detokenize_py(books.tokenize_py('say "hi"', "word"), "word") == 'say" hi"'


def test_char_tokens_are_code_points_with_one_kind_of_newline():
    assert books.tokenize_py("a\u00e9\U0001F600\r\nb\rc", "char") == ["a", "\u00e9", "\U0001F600", "\n", "b", "\n", "c"]
    assert books.detokenize_py(list("ab\nc"), "char") == "ab\nc"
    with pytest.raises(ValueError, match="'char' or 'word'"):
        books.tokenize_py("x", "bytes")


def test_the_books_file_tokenises_near_the_specs_counts(book_data):
    with open(book_data("ch13", "postgre_book.txt"), encoding="utf-8") as corpus:
        tokens = books.tokenize_py(corpus.read(), "word")
    # The spec counts 50,743 tokens and 3,583 types with the book's ten symbols; the typographic
    # quotes and dashes it left glued to words now come apart.
    assert 50_743 <= len(tokens) <= 51_500
    assert 3_400 <= len(set(tokens)) <= 3_583


# ---------------------------------------------------------------------------------------------
# The R reader


def _xdr_character_vector(values) -> bytes:
    """R's XDR serialisation (version 2) of a character vector, written by hand."""
    out = [b"X\n", struct.pack(">iii", 2, 0x040201, 0x020300), struct.pack(">ii", 16, len(values))]
    for v in values:
        encoded = v.encode("utf-8")
        out.append(struct.pack(">ii", 9 | (1 << 15), len(encoded)) + encoded)  # CHARSXP, UTF-8 flag
    return b"".join(out)


def test_r_reader_reads_a_character_vector_from_a_lazy_load_database(tmp_path):
    import gzip
    import zlib

    body = _xdr_character_vector(["It is a truth", "", "universally acknowledged \u00e9"])
    record = struct.pack(">i", len(body)) + zlib.compress(body)
    (tmp_path / "Rdata.rdb").write_bytes(record)
    # The index: list(variables = list(book = c(0L, n)), compressed = 1L), with names attributes.
    def strings(*names):
        return struct.pack(">ii", 16, len(names)) + b"".join(
            struct.pack(">ii", 9, len(n)) + n.encode() for n in names)

    def names_attribute(*names):  # pairlist(names = c(...)), then NULL
        return struct.pack(">i", 2 | (1 << 10)) + struct.pack(">ii", 1, 9) + struct.pack(">i", 5) + b"names" + \
            strings(*names) + struct.pack(">i", 254)

    variables = (struct.pack(">ii", 19 | (1 << 9), 1) + struct.pack(">iiii", 13, 2, 0, len(record))
                 + names_attribute("book"))
    index = b"X\n" + struct.pack(">iii", 2, 0, 0) + struct.pack(">ii", 19 | (1 << 9), 2) + variables + \
        struct.pack(">ii", 13, 1) + struct.pack(">i", 1) + names_attribute("variables", "compressed")
    (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(index))
    assert rdata.read_character_vectors(tmp_path) == {"book": ["It is a truth", "", "universally acknowledged \u00e9"]}


def test_r_reader_refuses_what_is_not_r_data(tmp_path):
    import gzip

    (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(b"RDX2\n"))
    (tmp_path / "Rdata.rdb").write_bytes(b"")
    with pytest.raises(ValueError, match="not R's XDR serialisation"):
        rdata.read_character_vectors(tmp_path)
    with pytest.raises(FileNotFoundError, match="Rdata.rdx"):
        rdata.read_character_vectors(tmp_path / "missing")


def test_janeaustenr_novels_are_extracted_when_the_package_is_unpacked(tmp_path):
    package = books.find_janeaustenr(["/", str(REPO / "build" / "janeaustenr")])
    if package is None:
        pytest.skip(books.INSTALL_HINT)
    paths = books.write_austen_books(package, str(tmp_path))
    assert [os.path.basename(p) for p in paths][:2] == ["sense_and_sensibility.txt", "pride_and_prejudice.txt"]
    pride = Path(paths[1]).read_text(encoding="utf-8")
    assert "It is a truth universally acknowledged" in pride and len(pride) > 600_000


# ---------------------------------------------------------------------------------------------
# Spark: reading, tokenising, the block split


def test_read_corpus_names_the_bad_file_and_byte(spark, tmp_path):
    (tmp_path / "good.txt").write_text("fine text\n", encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 au lait")
    with pytest.raises(ValueError, match=r"bad\.txt is not utf-8: byte 3 .*--encoding"):
        books.read_corpus(spark, str(tmp_path))
    assert books.read_corpus(spark, str(tmp_path / "bad.txt"), "latin-1").first().text == "caf\u00e9 au lait"
    (tmp_path / "blank").mkdir()  # a new folder: Spark caches what it listed before
    (tmp_path / "blank" / "blank.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"blank\.txt is empty"):
        books.read_corpus(spark, str(tmp_path / "blank"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        books.read_corpus(spark, str(tmp_path / "nowhere"))


def test_block_split_keeps_every_held_out_token_out_of_the_training_windows(spark):
    from pyspark.sql import functions as F

    # Two books whose every token is unique, so a token identifies its position.
    rows = [("a", [f"a{i:03d}" for i in range(100)]), ("b", [f"b{i:03d}" for i in range(57)])]
    tokens = spark.createDataFrame(rows, "book string, tokens array<string>")
    blocks = books.split_blocks(tokens, 0.1)
    split = {r.book: (r.train, r.held_out) for r in blocks.collect()}
    assert split["a"] == ([f"a{i:03d}" for i in range(90)], [f"a{i:03d}" for i in range(90, 100)])
    assert len(split["b"][1]) == 6 and split["b"][0] + split["b"][1] == rows[1][1]  # ceil(5.7) held out

    vocabulary = books.build_vocabulary(blocks)
    assert vocabulary[0] == books.UNKNOWN and vocabulary[1:] == sorted(t for b in split.values() for t in b[0])
    ids = blocks.select(books.encode_column("train", vocabulary).alias("train"),
                        books.encode_column("held_out", vocabulary).alias("held_out"))
    assert {i for r in ids.collect() for i in r.held_out} == {0}  # held-out tokens are unknown to the vocabulary
    windows = books.windows(ids, "train", 8).collect()
    assert len(windows) == 11 + 6  # floor(89 / 8) + floor(50 / 8)
    assert all(w.x[1:] == w.y[:-1] and 0 not in w.x + w.y for w in windows)
    blocks, first = books.scored_blocks(ids, "train", 8)
    assert first == 1 and sorted(r[0] for r in blocks.select(F.size("train")).collect()) == [49, 89]

    # Evaluation windows: 8 tokens of context, then 8 scored targets; a block's first window has no context.
    a_ids = [r.train for r in ids.collect() if len(r.train) == 90][0]
    context_windows = books.windows(ids, "train", 8, context=8).collect()
    assert len(context_windows) == 10 + 5 and all(len(w.x) == 16 for w in context_windows)
    assert context_windows[0].x == a_ids[0:16] and context_windows[0].y == a_ids[1:17]
    blocks, first = books.scored_blocks(ids, "train", 8, context=8)
    assert first == 9  # the targets of the context windows: ids[9:89] (a) and ids[9:49] (b)
    assert sum(len(r.train) - first for r in blocks.collect()) == 8 * len(context_windows)


def test_tokenize_column_is_the_python_tokeniser(spark):
    text = "It was \u201cthe\u201d best -- of times.\r\nIt was (the) worst!"
    df = spark.createDataFrame([(text,)], "text string")
    for mode in ("char", "word"):
        assert df.select(books.tokenize_column("text", mode)).first()[0] == books.tokenize_py(text, mode)

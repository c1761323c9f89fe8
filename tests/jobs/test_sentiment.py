"""Chapter 3's sentiment job: tokeniser (Spark == Python), vocabulary, splits, bad input, a 2-worker run.

The real-browser check of the exported page is tests/jobs/test_sentiment_browser.py.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jobs import sentiment
from tfos_lib import storage
from tfos_lib.datasets import sentences, text
from tfos_lib.export import tfjs

TRICKY = [
    "This is a GREAT movie!!!!",
    "  it's   the Da Vinci-Code...  ",
    "caf\u00e9 na\u00efve \u201cquoted\u201d \u2014 dash",
    "tab\tnew\nline\rcr\x0bvt\x0cff",
    "non\u00a0breaking space",
    "!!! ???",
    "",
    "MiXeD 123 numbers4you",
]


def test_tokenize_py_is_the_books_rule():
    assert text.tokenize_py("This is a GREAT movie!!!!") == ["this", "is", "a", "great", "movie"]  # the book's example
    assert text.tokenize_py("  it's   the Da Vinci-Code...  ") == ["its", "the", "da", "vincicode"]
    # Non-ASCII characters are deleted like punctuation, non-ASCII spaces too (no split there).
    assert text.tokenize_py("caf\u00e9 non\u00a0breaking") == ["caf", "nonbreaking"]
    assert text.tokenize_py("tab\tnew\nline\x0bvt") == ["tab", "new", "line", "vt"]
    assert text.tokenize_py("!!! ???") == [] and text.tokenize_py("") == []


def test_spark_tokenizer_equals_python(spark):
    df = spark.createDataFrame([(s,) for s in TRICKY], "sentence string")
    got = [r.tokens for r in df.select(text.tokenize_column("sentence").alias("tokens")).collect()]
    assert got == [text.tokenize_py(s) for s in TRICKY]


def test_vocabulary_threshold_order_and_padding_index(spark):
    # "good" 6x, "bad" 5x, "zebra" 5x, "meh" 4x: threshold 5 keeps three words.
    words = ["good"] * 6 + ["bad"] * 5 + ["zebra"] * 5 + ["meh"] * 4
    df = spark.createDataFrame([(w,) for w in words], "sentence string").select(text.tokenize_column("sentence").alias("tokens"))
    vocabulary = text.build_vocabulary(df, "tokens", min_count=5)
    assert vocabulary.tokens == ["good", "bad", "zebra"]  # by count, ties by word
    assert vocabulary.counts == [6, 5, 5]
    assert vocabulary.index == {"good": 1, "bad": 2, "zebra": 3}
    assert text.PADDING_INDEX not in vocabulary.index.values() and vocabulary.input_dim == 4
    assert vocabulary.to_csv() == "good,1\nbad,2\nzebra,3\n"
    assert text.Vocabulary.from_csv(vocabulary.to_csv()).index == vocabulary.index
    with pytest.raises(ValueError, match="line 2: expected 'token,2'"):
        text.Vocabulary.from_csv("good,1\nbad,3\n")


def test_spark_encoding_equals_python_pre_pads_and_pre_truncates(spark):
    vocabulary = text.Vocabulary(["good", "bad", "movie"], [9, 8, 7], 5)
    cases = ["good movie", "unknown words only", "", "Bad, BAD movie!", "good bad movie good bad movie good"]
    df = spark.createDataFrame([(s,) for s in cases], "sentence string").withColumn("tokens", text.tokenize_column("sentence"))
    got = [r.ids for r in df.select(text.encode_column("tokens", vocabulary, 4).alias("ids")).collect()]
    expected = [text.encode_py(text.tokenize_py(s), vocabulary.index, 4) for s in cases]
    assert got == expected
    assert expected == [[0, 0, 1, 3], [0, 0, 0, 0], [0, 0, 0, 0], [0, 2, 2, 3], [1, 2, 3, 1]]  # the last 4 kept


def test_read_sentences_skips_blank_lines_and_keeps_tabs_in_text(spark, tmp_path):
    path = tmp_path / "sentiment.txt"
    path.write_text("1\tGood one.\n\n0\tbad\twith a tab   \n   \n", encoding="utf-8")
    rows = sentences.read_sentences(spark, str(path)).collect()
    assert [(r.label, r.sentence) for r in rows] == [(1, "Good one."), (0, "bad\twith a tab")]


def test_malformed_line_is_named_with_its_number(spark, tmp_path):
    path = tmp_path / "sentiment.txt"
    path.write_text("1\tfine\n\n2\tlabel two\n1 no tab here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"sentiment.txt: 2 line\(s\).*line 3: '2\\tlabel two'; line 4: '1 no tab here'"):
        sentences.read_sentences(spark, str(path))
    with pytest.raises(ValueError, match=r"line 3"):
        sentiment.main(["--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "out")])


def test_missing_file_says_what_was_expected(tmp_path):
    (tmp_path / "other.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"sentiment.txt.*other.txt.*--data-dir"):
        sentences.find_sentiment_file(tmp_path)


def test_options_are_checked(capsys):
    with pytest.raises(SystemExit) as caught:
        sentiment.main(["--test-fraction", "1.5"])
    assert caught.value.code == 2
    assert "--test-fraction must be between 0 and 1" in capsys.readouterr().err


def test_distinct_sentence_split_has_no_overlap_random_split_leaks(spark, tmp_path):
    cfg = sentiment.Config(output_dir=str(tmp_path), synthetic_rows=600, seed=3)
    rows, source = sentiment.load_data(spark, cfg)
    assert source.startswith("generated")
    from pyspark.sql import functions as F

    by_sentence = sentiment.encode_split(rows, F.col("u_sentence") < 0.2, cfg)
    by_row = sentiment.encode_split(rows, F.col("u_row") < 0.2, cfg)
    honest, leaky = sentiment.leakage(*by_sentence[:2]), sentiment.leakage(*by_row[:2])
    assert honest["train_rows"] + honest["test_rows"] == 600 and honest["test_rows"] > 0
    assert honest["test_rows_seen_in_training"] == 0 and honest["test_sentences_seen_in_training"] == 0
    assert leaky["test_rows_seen_in_training"] > leaky["test_rows"] / 2  # the duplicates leak
    # Index 0 is padding only, and every row is exactly max_len long.
    train, test, vocabulary, max_len = by_sentence
    ids = np.array([r.ids for r in train.union(test).collect()])
    assert ids.shape == (600, max_len) and ids.max() == len(vocabulary)
    assert all(i >= 1 for i in vocabulary.index.values())


def test_two_workers_train_export_and_write_the_page(sentiment_run, check_metrics_envelope):
    """The whole job on a generated file: 2 barrier workers on local[2], both splits."""
    out, metrics, rows, figures = sentiment_run
    epochs = 6
    saved = json.loads((out / "metrics.json").read_text())
    check_metrics_envelope(saved, "sentiment", training=True)
    assert saved["num_workers"] == 2 and saved["data"]["rows"] == rows
    honest, leaky = saved["results"]["evaluation"]["distinct_sentence"], saved["results"]["evaluation"]["random_row"]
    assert honest["test_sentences_seen_in_training"] == 0 < leaky["test_sentences_seen_in_training"]
    for split in (honest, leaky):
        assert split["test_rows"] + split["train_rows"] == rows
        # Learned something: beats always answering the larger class, and the training loss fell.
        assert split["test_accuracy"] >= split["majority_class_accuracy"] + 0.1, split
        assert split["history"]["loss"][-1] < 0.8 * split["history"]["loss"][0], split["history"]["loss"]
        assert {len(v) for v in split["history"].values()} == {epochs}
        assert set(split["history"]) == {"loss", "accuracy", "heldout_loss", "heldout_accuracy", "heldout_sentence_accuracy"}
        # Two workers: each holds train_rows // 2 rows and feeds 16 of the global 32 per step.
        assert split["steps_per_worker"] == epochs * -(-(split["train_rows"] // 2) // 16)
        assert split["test_accuracy"] == split["history"]["heldout_accuracy"][-1]
    assert metrics["results"]["test_accuracy"] == honest["test_accuracy"]
    assert set(saved["results"]["probes"]) == set(sentiment.BOOK_PROBES)
    assert all(0.0 < p["distinct_sentence_model"] < 1.0 for p in saved["results"]["probes"].values())
    # Both splits' curves, one point per epoch, the values the job recorded.
    curves = {k: v for ax in figures["training_curves.png"] for k, v in ax["lines"].items()}
    for label, split in (("by sentence", honest), ("random rows (leaky)", leaky)):
        assert curves[f"{label}: loss"] == pytest.approx(split["history"]["loss"])
        assert curves[f"{label}: held-out accuracy"] == pytest.approx(split["history"]["heldout_accuracy"])
    assert len(curves) == 2 * 5
    assert (out / "models" / "sentiment" / "1" / "saved_model.pb").exists()
    assert not (out / "random_row_split" / "models").exists()  # only the honest model is exported

    web = out / "web"
    files = set(os.listdir(web))
    assert {"index.html", "model.json", "group1-shard1of1.bin", "token_index.csv"} <= files
    assert ("tf.min.js" in files) == sentiment.DEFAULT_TFJS_BUNDLE.is_file()
    document, weights = tfjs.read_layers_model(web)
    vocabulary = text.Vocabulary.from_csv((web / "token_index.csv").read_text())
    assert len(vocabulary) == honest["vocabulary_size"]
    assert weights["layer_embedding/embeddings"].shape == (len(vocabulary) + 1, sentiment.EMBEDDING_SIZE)
    input_layer = document["modelTopology"]["model_config"]["config"]["layers"][0]["config"]
    assert input_layer["batch_input_shape"] == [None, honest["max_len"]] and input_layer["dtype"] == "int32"
    assert sum(w.size for w in weights.values()) == honest["parameters"]
    page = (web / "index.html").read_text()
    config = json.loads(page.split('<script id="config" type="application/json">')[1].split("</script>")[0])
    assert config == {**text.tokenizer_spec(honest["max_len"]), "probes": list(sentiment.BOOK_PROBES)}


def test_real_file_matches_the_books_figures(spark, tmp_path, book_data):
    """sentiment.txt: 7,086 rows, 1,410 distinct sentences; over all rows, 452 words seen >= 5 times, longest 40."""
    BOOK_FILE = book_data("ch03", "sentiment.txt")
    cfg = sentiment.Config(data_dir=os.path.dirname(BOOK_FILE), output_dir=str(tmp_path))
    rows, source = sentiment.load_data(spark, cfg)
    assert source == f"file:{BOOK_FILE}"
    assert rows.count() == 7086 and rows.filter("label = 1").count() == 3995
    assert rows.select("sentence").distinct().count() == 1410
    vocabulary = text.build_vocabulary(rows, "tokens", 5)
    assert len(vocabulary) == 452  # the book's Embedding input_dim, computed the same way
    from pyspark.sql import functions as F

    assert rows.select(F.max(F.size("tokens"))).first()[0] == 40
    honest = sentiment.leakage(*sentiment.encode_split(rows, F.col("u_sentence") < 0.2, cfg)[:2])
    leaky = sentiment.leakage(*sentiment.encode_split(rows, F.col("u_row") < 0.2, cfg)[:2])
    assert honest["test_sentences_seen_in_training"] == 0
    assert leaky["test_rows_seen_in_training"] / leaky["test_rows"] > 0.8


def test_generated_default_data_with_an_s3_output_goes_to_a_local_scratch_folder(s3, spark):
    """No --data-dir and --output-dir on an S3 server: the generated sentiment.txt goes to a local scratch folder
    (storage.default_data_dir), the model, the TF.js model and the page to the bucket."""
    out = "s3a://runs/sentiment"
    sentiment.main(["--backend", "local", "--epochs", "1", "--synthetic-rows", "200", "--no-random-split",
                    "--output-dir", out])
    saved = json.loads(storage.read_bytes(f"{out}/metrics.json"))
    assert saved["data"]["source"] == "generated (200 rows, seed 0)" and saved["data"]["rows"] == 200
    scratch = storage.default_data_dir(out, "default-data")
    assert os.path.isfile(os.path.join(scratch, sentences.SENTIMENT_FILE))
    files = storage.list_files(out)
    assert {"models/sentiment/1/saved_model.pb", "web/index.html", "web/model.json", "web/token_index.csv"} <= set(files)
    assert saved["results"]["export"]["web_dir"] == f"{out}/web"
    assert not any("default-data" in f for f in files)
    assert not os.path.exists("s3a:")  # a URI taken for a local path would leave this folder in the working directory

"""The chapter 13 job: seeded generation and its SavedModel, a 2-worker run on a tiny text, bad input."""

from __future__ import annotations

import json

import pytest

from jobs import text_lstm
from tfos_lib.datasets import books
from tfos_lib.lm import generation

TINY_TEXT = ("The quick brown fox jumps over the lazy dog. " * 3 + "A stitch in time (saves nine)!\n") * 12


def _generator(mode="char", vocabulary=None):
    import tfos_lib

    tf = tfos_lib.import_tensorflow()
    vocabulary = vocabulary or [books.UNKNOWN, *sorted(set(TINY_TEXT))]
    tf.keras.utils.set_random_seed(0)
    cfg = text_lstm.Config(rnn_size=8)
    model = text_lstm.build_model(cfg, len(vocabulary))
    return generation.make_generator(model, vocabulary, mode, 6, books.WORD_SYMBOLS, books.OPENING_SYMBOLS)


def test_generation_is_deterministic_for_a_seed_and_survives_the_saved_model(tmp_path):
    import tfos_lib

    tf = tfos_lib.import_tensorflow()
    generator = _generator()
    first = generation.generate(generator, "The quick", 40, 1.0, 0, seed=7)
    assert first.startswith("The quick") and len(first) == len("The quick") + 40
    assert generation.generate(generator, "The quick", 40, 1.0, 0, seed=7) == first
    assert generation.generate(generator, "The quick", 40, 1.0, 0, seed=8) != first
    # Greedy (temperature 0, the book's) and top-k 1 ignore the seed: both are the argmax.
    greedy = generation.generate(generator, "The quick", 20, 0.0, 0, seed=1)
    assert generation.generate(generator, "The quick", 20, 0.0, 0, seed=2) == greedy
    assert generation.generate(generator, "The quick", 20, 1.0, 1, seed=3) == greedy

    generation.save_generator(generator, str(tmp_path / "model"))
    signature = tf.saved_model.load(str(tmp_path / "model")).signatures["serving_default"]
    out = signature(prompt=tf.constant("The quick"), num_tokens=tf.constant(40), temperature=tf.constant(1.0),
                    top_k=tf.constant(0), seed=tf.constant(7, tf.int64))
    assert out["text"].numpy().decode() == first
    assert out["continuation"].numpy().decode() == first[len("The quick"):]


def test_word_generator_tokenises_and_detokenises_as_python_does():
    vocabulary = [books.UNKNOWN, *sorted(set(books.tokenize_py(TINY_TEXT, "word")))]
    generator = _generator("word", vocabulary)
    text = generation.generate(generator, "A stitch in time (saves nine)!\nThe", 0, 1.0)
    assert text == books.detokenize_py(books.tokenize_py("A stitch in time (saves nine)!\nThe", "word"), "word")
    assert text == "a stitch in time (saves nine)!\nthe"
    assert len(generation.generate(generator, "the", 5, 1.0).split()) >= 2


def test_two_workers_train_on_a_tiny_text(spark, tmp_path, check_metrics_envelope):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "fox.txt").write_text(TINY_TEXT, encoding="utf-8")
    (tmp_path / "data" / "stitch.txt").write_text(TINY_TEXT[::-1], encoding="utf-8")
    out = tmp_path / "out"
    text_lstm.main(["--data-dir", str(tmp_path / "data"), "--output-dir", str(out), "--num-workers", "2",
                    "--epochs", "2", "--batch-size", "8", "--seq-length", "16", "--rnn-size", "16",
                    "--max-order", "3", "--sample-length", "12", "--top-k", "5"])
    saved = json.loads((out / "metrics.json").read_text())
    check_metrics_envelope(saved, "text_lstm", training=True)
    assert saved["num_workers"] == 2 and saved["config"]["seq_length"] == 16
    data, results = saved["data"], saved["results"]
    assert data["books"] == 2 and data["train_tokens"] + data["held_out_tokens"] == 2 * len(TINY_TEXT)
    assert data["vocabulary_size"] == len(set(TINY_TEXT)) + 1
    assert set(results["ngram"]) == {"unigram", "kneser_ney_2", "kneser_ney_3"}
    assert results["ngram"]["kneser_ney_3"]["tokens"] == results["lstm"]["tokens"]
    assert results["lstm"]["bits_per_token"] > 0 and set(results["history"]) == {"loss", "heldout_loss"}
    assert sorted(results["samples"]) == ["0", "0.5", "0.8", "1"]
    assert all(s.startswith(results["prompt"]) for s in results["samples"].values())
    assert (out / "models" / "text_lstm" / "1" / "saved_model.pb").exists() and (out / "training_curves.png").exists()
    assert "greedy" in (out / "samples.txt").read_text(encoding="utf-8")


def test_a_corpus_too_small_for_one_batch_is_refused(spark, tmp_path):
    (tmp_path / "tiny.txt").write_text("Only a few words here.\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"corpus too small: .* need at least --batch-size \(128\)"):
        text_lstm.main(["--data-dir", str(tmp_path / "tiny.txt"), "--output-dir", str(tmp_path / "out")])


def test_missing_default_corpus_explains_the_install(tmp_path, monkeypatch):
    monkeypatch.setattr(books, "find_janeaustenr", lambda roots: None)
    with pytest.raises(FileNotFoundError, match="apt-get download r-cran-janeaustenr"):
        text_lstm.default_corpus(text_lstm.Config(output_dir=str(tmp_path)))

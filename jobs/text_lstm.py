"""Generating book scripts: chapter 13's 2-layer LSTM language model, trained data-parallel on Spark.

Book: "TensorFlow Machine Learning Projects" (Packt, 2018), chapter 13. The book
tokenised ~100 pages of *Mastering PostgreSQL 10* (``postgre_book.txt``, 50,743 word
and punctuation tokens, vocabulary 3,583) and trained Embedding(128) -> LSTM(128) x 2
-> Dense(vocabulary) with Adam 0.001 (gradients clipped to [-1, 1]) for 500 epochs of
12 batches (128 windows of 32 words), then generated 200 words greedily from
"postgresql". It reported no loss, no perplexity and no timing; its sample is
repetitive, as greedy decoding is.

What this job adds, and why:

- Measured quality: held-out cross-entropy, perplexity and bits per token (per
  character with ``--tokens char``) on the last 10% of every book (a contiguous
  block: training windows never overlap it; every scored token has at least one window
  of context before it, for the LSTM and the n-grams alike), next to baselines computed in the same
  run with Spark: an add-one unigram and interpolated Kneser-Ney n-grams, n = 2..5.
- The book's tokeniser without its bugs (see :mod:`tfos_lib.datasets.books`), and a
  character-level mode, the default: a CPU-sized LSTM beats the n-grams there in minutes.
- Stateless fixed-length windows (the book's ``dynamic_rnn`` ignored the state it was fed
  anyway), so every worker's batches are independent.
- Sampling with temperature and top-k, seeded; the greedy sample (temperature 0) is
  the book's. The SavedModel's ``serving_default`` signature generates text from a
  prompt with no code of this project (:mod:`tfos_lib.lm.generation`).

Data: ``--data-dir``: a UTF-8 text file or a folder of them (the book's is
``../shared/data/book/ch13/postgre_book.txt``). Without it: Jane Austen's six novels
from Debian's ``r-cran-janeaustenr``, unpacked without R into ``build/janeaustenr``
(the error message says how), written as text to ``default-data`` under ``--output-dir``
when that is a local path, else in a local scratch folder (:func:`tfos_lib.storage.default_data_dir`).

Run::

    ./spark-submit.sh text_lstm                                   # Austen, characters, 1 worker
    ./spark-submit.sh text_lstm --master 'local[2]' -- --num-workers 2
    ./spark-submit.sh text_lstm -- --data-dir ../shared/data/book/ch13/postgre_book.txt --tokens word

Writes to ``--output-dir``: metrics.json, samples.txt, training_curves.png, models/text_lstm/<version>/
(SavedModel with the generation signature), checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import tfos_lib
from tfos_lib import job, report, storage
from tfos_lib.datasets import books
from tfos_lib.export import saved_model
from tfos_lib.lm import generation, ngram

REPO = Path(__file__).resolve().parent.parent
BOOK_REFERENCE = {
    "tokens": 50743, "vocabulary_size": 3583, "batches_per_epoch": 12, "epochs": 500, "parameters": 1183999,
    "held_out_perplexity": None,
    "source": "chapter 13, postgre_book.txt, word tokens, B=128, S=32; the book reports no loss or perplexity "
              "(counts from the spec, measured on the book's file with its intended tokenisation)",
}
TEMPERATURES = (0.0, 0.5, 0.8, 1.0)  # 0: greedy, the book's decoding
SEQ_LENGTH = {"char": 100, "word": 32}  # word: the book's
EPOCHS = {"char": 8, "word": 50}  # char: the LSTM passed the 5-gram at epoch 6 (measured)
RNN_SIZE = {"char": 256, "word": 128}  # char: wider than the book's, to beat a 5-gram on characters


@dataclass(frozen=True)
class Config(job.TrainingConfig):
    output_dir: str = job.option("output/text_lstm", "where results go")
    tokens: str = job.option("char", "char: characters; word: the book's words and punctuation tokens",
                             choices=("char", "word"))
    encoding: str = job.option("utf-8", "encoding of the text files")
    seq_length: int | None = job.option(None, "tokens per training window; default 100 (char), 32 (word, the book's)",
                                        min=2)
    batch_size: int = job.option(128, "global batch size in windows (the book's: 128)")
    epochs: int | None = job.option(
        None, "passes over the training windows; default 8 (char), 50 (word; the book's 500 ran on 12 batches)")
    rnn_size: int | None = job.option(
        None, "units of each LSTM layer and of the embedding; default 256 (char), 128 (word, the book's)", min=1)
    learning_rate: float = job.option(0.001, "Adam's step (the book's: 0.001)", greater_than=0)
    held_out_fraction: float = job.option(0.1, "share at the end of every book held out", greater_than=0, less_than=1)
    max_order: int = job.option(5, "n-gram baselines of order 2 .. this", min=2, max=8)
    prompt: str | None = job.option(None, "start of the samples; default: the first words of the held-out text")
    sample_length: int = job.option(200, "tokens per sample (the book's: 200 words)", min=1)
    top_k: int = job.option(0, "sample among the k most likely tokens only (0: all)", min=0)

    @property
    def resolved_seq_length(self) -> int:
        return self.seq_length or SEQ_LENGTH[self.tokens]

    @property
    def resolved_epochs(self) -> int:
        return self.epochs or EPOCHS[self.tokens]

    @property
    def resolved_rnn_size(self) -> int:
        return self.rnn_size or RNN_SIZE[self.tokens]


def build_model(cfg: Config, vocabulary_size: int):
    """Inputs: ``(batch, time)`` token ids. Outputs: ``(batch, time, vocabulary_size)`` next-token logits."""
    tf = tfos_lib.import_tensorflow()
    layers = tf.keras.layers
    size = cfg.resolved_rnn_size
    model = tf.keras.Sequential([
        layers.InputLayer(input_shape=(None,), dtype="int32", name="ids"),
        # The book's embedding: uniform(-1, 1), as wide as the LSTM.
        layers.Embedding(vocabulary_size, size, embeddings_initializer=tf.keras.initializers.RandomUniform(-1, 1)),
        # Two independent layers (the book's [lstm] * 2 shared one cell's weights).
        layers.LSTM(size, return_sequences=True),
        layers.LSTM(size, return_sequences=True),
        layers.Dense(vocabulary_size),
    ])
    model.compile(optimizer=tf.keras.optimizers.Adam(cfg.learning_rate, clipvalue=1.0),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def default_corpus(cfg: Config, conf: dict | None = None) -> tuple[str, str]:
    """Writes Austen's novels as text (:func:`tfos_lib.storage.default_data_dir`); returns ``(path, source)``."""
    package = books.find_janeaustenr(["/", str(REPO / "build" / "janeaustenr")])
    if package is None:
        raise FileNotFoundError(f"no --data-dir and no offline default corpus. {books.INSTALL_HINT}; "
                                "or pass --data-dir with UTF-8 text files.")
    path = storage.default_data_dir(cfg.output_dir, "default-data", conf)
    books.write_austen_books(package, path)
    return path, f"Jane Austen's six novels (Debian r-cran-janeaustenr, {package})"


class Corpus(NamedTuple):
    ids: Any  # DataFrame: book, train and held_out (array<int> token ids)
    vocabulary: list[str]
    data: dict  # source and sizes, for metrics.json


def load_data(spark, cfg: Config) -> Corpus:
    """Reads, tokenises and splits the corpus in Spark; encodes it with the training blocks' vocabulary."""
    from pyspark.sql import functions as F

    path, source = ((cfg.data_dir, cfg.data_dir) if cfg.data_dir
                    else default_corpus(cfg, dict(spark.sparkContext.getConf().getAll())))
    corpus = books.read_corpus(spark, path, cfg.encoding)
    tokens = corpus.select("book", books.tokenize_column("text", cfg.tokens).alias("tokens"))
    blocks = books.split_blocks(tokens, cfg.held_out_fraction).cache()
    vocabulary = books.build_vocabulary(blocks)
    ids = blocks.select("book", books.encode_column("train", vocabulary).alias("train"),
                        books.encode_column("held_out", vocabulary).alias("held_out")).cache()
    sizes = ids.agg(F.count("*"), F.sum(F.size("train")), F.sum(F.size("held_out"))).first()
    data = {"source": source, "books": sizes[0], "train_tokens": sizes[1], "held_out_tokens": sizes[2],
            "vocabulary_size": len(vocabulary), "tokens": cfg.tokens}
    return Corpus(ids, vocabulary, data)


def baselines(ids_df, cfg: Config, vocabulary_size: int) -> dict:
    """Unigram and Kneser-Ney n-grams counted in Spark on the training blocks, scored on the held-out targets."""
    seq_length = cfg.resolved_seq_length
    blocks, first = books.scored_blocks(ids_df, "held_out", seq_length, context=seq_length)
    held_out = [row[0] for row in blocks.collect()]
    models = [ngram.unigram(ids_df, "train", vocabulary_size)]
    models += [ngram.kneser_ney(ids_df, "train", n, vocabulary_size) for n in range(2, cfg.max_order + 1)]
    return {model.name: ngram.score(model, held_out, first) for model in models}


def default_prompt(ids_df, vocabulary: list[str], cfg: Config) -> str:
    """Three words from the start of the first book's held-out block (text the model never trained on),
    after the first word, which the split may have cut."""
    first = ids_df.orderBy("book").select("held_out").first()[0][:200]
    text = books.detokenize_py([vocabulary[i] for i in first], cfg.tokens)
    return " ".join(text.split()[1:4]) or "The"


def make_scorer(model, x, y, scored: int, batch_size: int = 256):
    """``score()``: mean cross-entropy (nats) of ``model`` on the last ``scored`` targets of each window of
    ``x``/``y`` (the tokens before are context only)."""
    tf = tfos_lib.import_tensorflow()
    spec = tf.TensorSpec([None, None], tf.int32)

    @tf.function(input_signature=[spec, spec], autograph=False)
    def batch_loss(x, y):
        logits = model(x, training=False)[:, -scored:]
        return tf.reduce_sum(tf.keras.losses.sparse_categorical_crossentropy(y[:, -scored:], logits, from_logits=True))

    def score() -> float:
        total = sum(float(batch_loss(x[i:i + batch_size], y[i:i + batch_size])) for i in range(0, len(x), batch_size))
        return total / (len(x) * scored)

    return score


def train_fn(ctx: tfos_lib.WorkerContext, cfg: Config, vocabulary: list[str], prompt: str) -> dict:
    """Runs on every worker: train together; the chief scores the held-out windows, samples and saves."""
    tf = tfos_lib.import_tensorflow()
    tf.keras.utils.set_random_seed(cfg.seed)  # same initial weights on every worker
    train = ctx.data("train")
    steps = train.steps_per_epoch(cfg.batch_size)
    with ctx.strategy().scope():  # tfos: variables mirrored across workers
        model = build_model(cfg, len(vocabulary))
    dataset = ctx.distributed_dataset("train", "x", "y", global_batch_size=cfg.batch_size, seed=cfg.seed + ctx.rank)
    held_out = None
    if ctx.is_chief:
        # A plain copy the chief alone evaluates: work under the strategy would wait for the other workers.
        local_model = build_model(cfg, len(vocabulary))
        held = ctx.data("held_out")
        x_held, y_held = held.column("x").astype("int32"), held.column("y").astype("int32")
        score = make_scorer(local_model, x_held, y_held, cfg.resolved_seq_length)

        def held_out():  # after each epoch, beside the training loss
            local_model.set_weights(model.get_weights())
            return {"loss": score()}

    # tfos: resume + progress (+ the chief's held-out loss)
    callbacks = ctx.callbacks(cfg.batch_size, cfg.checkpoint_every_steps, held_out=held_out)
    history, train_seconds = ctx.fit(model, dataset, epochs=cfg.resolved_epochs, steps_per_epoch=steps, callbacks=callbacks)
    if not ctx.is_chief:
        return {}

    local_model.set_weights(model.get_weights())
    cross_entropy = score()
    generator = generation.make_generator(local_model, vocabulary, cfg.tokens, cfg.resolved_seq_length,
                                          books.WORD_SYMBOLS, books.OPENING_SYMBOLS)
    samples = {f"{t:g}": generation.generate(generator, prompt, cfg.sample_length, t, cfg.top_k, cfg.seed)
               for t in TEMPERATURES}
    models = f"{ctx.output_dir}/models/text_lstm"  # the TF Serving layout: <name>/<version>/
    generation.save_generator(generator, f"{models}/{saved_model.next_version(models)}")
    epochs_run = cfg.resolved_epochs - (ctx.resumed_from_epoch or 0)
    return {
        "history": history,
        "lstm": {"tokens": int(y_held[:, -cfg.resolved_seq_length:].size), "cross_entropy": cross_entropy,
                 "perplexity": math.exp(cross_entropy),
                 "bits_per_token": cross_entropy / math.log(2)},
        "samples": samples,
        "parameters": int(local_model.count_params()),
        "steps_per_worker": steps * epochs_run,
        "resumed_from_epoch": ctx.resumed_from_epoch,
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / max(epochs_run, 1),
        "tokens_per_second": steps * epochs_run * cfg.batch_size * cfg.resolved_seq_length / train_seconds,
    }


def write_samples(path: str, prompt: str, samples: dict, cfg: Config) -> None:
    parts = []
    for temperature, text in samples.items():
        kind = "greedy (the book's decoding)" if float(temperature) == 0 else f"temperature {temperature}"
        parts.append(f"=== {kind}, top-k {cfg.top_k or 'off'}, seed {cfg.seed}, prompt {prompt!r}\n{text}\n\n")
    storage.write_bytes(path, "".join(parts).encode("utf-8"))  # a local path or a URI


def main(argv=None) -> dict:
    cfg = job.parse_config(Config, argv, description=__doc__.split("\n\n")[0])
    log = job.setup_logging()
    run = job.JobRun("text_lstm", cfg)
    spark = job.spark_session("text_lstm")
    corpus = load_data(spark, cfg)
    ids, vocabulary, data = corpus
    seq_length = cfg.resolved_seq_length
    # Held-out windows carry seq_length tokens of context before their seq_length scored targets.
    train_df = books.windows(ids, "train", seq_length)
    held_df = books.windows(ids, "held_out", seq_length, context=seq_length)
    data |= {"train_windows": train_df.count(), "held_out_windows": held_df.count()}
    if data["train_windows"] < cfg.batch_size or not data["held_out_windows"]:
        raise ValueError(
            f"corpus too small: {data['train_tokens']} training and {data['held_out_tokens']} held-out tokens give "
            f"{data['train_windows']} training and {data['held_out_windows']} held-out windows of {seq_length}; "
            f"need at least --batch-size ({cfg.batch_size}) and 1 (a held-out block needs 2 windows). Use more text, "
            "or a smaller --seq-length or --batch-size.")
    log.info("n-gram baselines (orders 1..%d) on %d held-out %ss", cfg.max_order, data["held_out_tokens"], cfg.tokens)
    ngrams = baselines(ids, cfg, len(vocabulary))
    prompt = cfg.prompt if cfg.prompt is not None else default_prompt(ids, vocabulary, cfg)
    log.info("training on %s: %d windows, vocabulary %d, %d %s worker(s)", data["source"], data["train_windows"],
             len(vocabulary), cfg.num_workers, cfg.backend)
    inputs = {"train": train_df, "held_out": tfos_lib.Input(held_df, shard=False)}
    result = job.launch(train_fn, cfg, inputs, spark, extra_args=(vocabulary, prompt))
    best = min(ngrams, key=lambda name: ngrams[name]["cross_entropy"])
    result |= {"ngram": ngrams, "best_ngram": best, "prompt": prompt,
               "lstm_beats_best_ngram": result["lstm"]["cross_entropy"] < ngrams[best]["cross_entropy"]}
    write_samples(f"{cfg.output_dir}/samples.txt", prompt, result["samples"], cfg)
    report.plot_curves(f"{cfg.output_dir}/training_curves.png", result["history"],
                       title=f"2-layer LSTM, {cfg.tokens} tokens: training vs held-out loss (nats per token)")
    metrics = run.write_metrics(data=data, results=result, book_reference=BOOK_REFERENCE,
                                resolved={"seq_length": seq_length, "rnn_size": cfg.resolved_rnn_size,
                                          "epochs": cfg.resolved_epochs})
    unit = "character" if cfg.tokens == "char" else "word"
    log.info("held-out bits per %s: LSTM %.3f, %s %.3f; wrote %s/metrics.json", unit,
             result["lstm"]["bits_per_token"], best, ngrams[best]["bits_per_token"], cfg.output_dir)
    return metrics


if __name__ == "__main__":
    job.run_main(main)

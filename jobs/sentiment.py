"""Sentiment of short reviews: chapter 3's GRU trained data-parallel on Spark, served in the browser with TensorFlow.js.

Book: "TensorFlow Machine Learning Projects" (Packt, 2018), chapter 3. The book
tokenised the SI650 sentences (strip punctuation, lower-case, words seen >= 5
times), pre-padded them to the longest review (40 words), trained
Embedding(8) -> GRU(16) -> GRU(8) -> GRU(4) -> Dense(sigmoid) with Adam for 15
epochs of batch 32, exported it with ``tensorflowjs`` and scored typed text in a
web page. It reported no accuracy, only four probe scores ("Awesome movie"
0.9957, "Terrible Movie" 0.0023, "That movie really sucks" 0.0021, "I like that
movie" 0.9469).

What this job changes, and why:

- Index 0 is padding only (the book gave the word "hate" index 0); indices are
  deterministic (by count, then word).
- An honest evaluation. The file has 7,086 rows but only 1,410 distinct
  sentences, so the book's random row split puts most validation sentences in
  training too. The headline model is trained and tested on a split by distinct
  (tokenised) sentence; the random row split is trained as well, for comparison,
  with the share of its test rows seen in training. Vocabulary and padding length
  come from each split's training rows only.
- TensorFlow.js export without the ``tensorflowjs`` package (it does not import
  next to TensorFlow 2.21): :mod:`tfos_lib.export.tfjs` writes the layers-model
  format. The GRUs keep the book's ``reset_after=False`` and ``hard_sigmoid``,
  which TF.js supports (it rejects the TF 2 default ``reset_after=True``).
- The page tokenises exactly as Python and Spark do (the book's JavaScript removed
  only the first punctuation mark and broke on reviews over 40 words) and scores as
  you type, with TF.js loaded from the same folder (no CDN).

Data: ``--data-dir`` holds ``sentiment.txt`` (``label<TAB>sentence``); the book's is
in ``../shared/data/book/ch03``. Without it the job writes a generated file in the
same format to ``<output-dir>/default-data/sentiment.txt`` when that is a local path, else
in a local scratch folder (:func:`tfos_lib.storage.default_data_dir`).

Run::

    jobs/web/fetch_tfjs.sh                                    # once: build/tfjs/tf.min.js from npm
    ./spark-submit.sh sentiment                               # generated data, 1 worker
    ./spark-submit.sh sentiment -- --data-dir ../shared/data/book/ch03
    ./spark-submit.sh sentiment --master 'local[2]' -- --num-workers 2 --data-dir ../shared/data/book/ch03
    python3 -m http.server 8000 --bind 127.0.0.1 --directory output/sentiment/web   # then open http://127.0.0.1:8000/

Writes to ``--output-dir``: metrics.json, training_curves.png, models/sentiment/<version>/ (SavedModel, TF Serving layout),
web/ (index.html, model.json, group1-shard1of1.bin, token_index.csv, tf.min.js), and
the random split's checkpoints and TensorBoard logs under random_row_split/.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import tfos_lib
from tfos_lib import job, report, storage
from tfos_lib.datasets import sentences, text
from tfos_lib.export import tfjs
from tfos_lib.export.saved_model import export_saved_model

REPO = Path(__file__).resolve().parent.parent
PAGE_TEMPLATE = Path(__file__).resolve().parent / "web" / "sentiment.html"
PAGE_PLACEHOLDER = "__CONFIG__"
DEFAULT_TFJS_BUNDLE = REPO / "build" / "tfjs" / "tf.min.js"
EMBEDDING_SIZE = 8
GRU_UNITS = (16, 8, 4)
# The book's probe sentences and the scores it printed [ch. 3, L2516-2519].
BOOK_PROBES = {"Awesome movie": 0.9957, "Terrible Movie": 0.0023, "That movie really sucks": 0.0021, "I like that movie": 0.9469}
BOOK_REFERENCE = {
    "probes": BOOK_PROBES,
    "vocabulary_size": 452,
    "max_len": 40,
    "parameters": 5577,
    "source": "chapter 3; counts over all 7,086 rows, random 5% validation split, no accuracy reported",
}
SPLITS = {"distinct_sentence": "split by distinct sentence (no leakage)", "random_row": "the book's random row split (leaky)"}
_PLOT_LABELS = {"distinct_sentence": "by sentence", "random_row": "random rows (leaky)"}


@dataclass(frozen=True)
class Config(job.TrainingConfig):
    output_dir: str = job.option("output/sentiment", "where results go")
    epochs: int = job.option(15, "passes over the training data (the book's: 15)")
    batch_size: int = job.option(32, "global batch size (the book's: 32)")
    min_count: int = job.option(5, "keep words seen at least this often in the training rows", min=1)
    test_fraction: float = job.option(
        0.2, "share of distinct sentences (or rows, random split) held out", greater_than=0, less_than=1
    )
    random_split: bool = job.option(True, "also train on the book's leaky random row split and report it")
    synthetic_rows: int = job.option(2000, "rows of the generated file used without --data-dir", min=2)
    tfjs_bundle: str | None = job.option(
        None, f"tf.min.js to put next to the page; default: {DEFAULT_TFJS_BUNDLE.relative_to(REPO)}"
    )


@dataclass(frozen=True)
class ModelSpec:
    """What one training run needs besides the config (driver -> workers)."""

    split: str
    vocab_size: int  # Embedding rows: words + the padding index
    max_len: int
    export: bool  # the chief saves the SavedModel and the TF.js model


def build_model(vocab_size: int, max_len: int):
    """Chapter 3's model. Inputs: ``(batch, max_len)`` word indices. Outputs: ``(batch, 1)`` P(positive)."""
    tf = tfos_lib.import_tensorflow()
    layers = tf.keras.layers
    # reset_after=False and hard_sigmoid: the book's Keras 2.1 GRU (5,577 parameters on
    # its data), and what TF.js computes (it rejects reset_after=True).
    gru = functools.partial(layers.GRU, reset_after=False, recurrent_activation="hard_sigmoid")
    model = tf.keras.Sequential(
        [
            layers.InputLayer(input_shape=(max_len,), dtype="int32", name="token_ids"),
            layers.Embedding(vocab_size, EMBEDDING_SIZE, name="layer_embedding"),
            gru(GRU_UNITS[0], return_sequences=True, name="gru_1"),
            gru(GRU_UNITS[1], return_sequences=True, name="gru_2"),
            gru(GRU_UNITS[2], name="gru_3"),
            layers.Dense(1, activation="sigmoid", name="dense_1"),
        ]
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=1e-3), loss="binary_crossentropy", metrics=["accuracy"])
    return model


def load_data(spark, cfg: Config):
    """Reads the sentences and tokenises them in Spark.

    Returns ``(rows, source)``. ``rows`` (cached) has ``label``, ``sentence``,
    ``tokens`` (array<string>), ``key`` (the tokens joined by spaces: what "the same
    sentence" means), ``sentence_id`` (a hash of ``key``) and two uniform numbers in
    [0, 1) that place the row in a split: ``u_sentence`` (the same for every copy of
    a sentence) and ``u_row`` (per row, the book's random split).
    """
    from pyspark.sql import functions as F

    if cfg.data_dir:
        path, source = sentences.find_sentiment_file(cfg.data_dir), None
    else:
        conf = dict(spark.sparkContext.getConf().getAll())
        target = Path(storage.default_data_dir(cfg.output_dir, "default-data", conf)) / sentences.SENTIMENT_FILE
        path = str(sentences.write_synthetic(target, cfg.synthetic_rows, cfg.seed))
        source = f"generated ({cfg.synthetic_rows} rows, seed {cfg.seed})"
    rows = (
        sentences.read_sentences(spark, path)
        .withColumn("tokens", text.tokenize_column("sentence"))
        .withColumn("key", F.array_join("tokens", " "))
        .withColumn("sentence_id", F.xxhash64("key"))
        .withColumn("u_sentence", F.pmod(F.xxhash64(F.lit(cfg.seed), "key"), F.lit(1 << 30)) / float(1 << 30))
        .withColumn("u_row", F.rand(cfg.seed))
        .cache()  # also pins F.rand's values: every later query sees the same split
    )
    return rows, source or f"file:{path}"


def encode_split(rows, is_test, cfg: Config):
    """Vocabulary and padding length from the training rows, then every row encoded (driver plans, Spark runs).

    Returns ``(train, test, vocabulary, max_len)``; both frames have ``ids``
    (array<int> of max_len), ``label``, ``sentence_id`` and ``key``.
    """
    from pyspark.sql import functions as F

    train, test = rows.filter(~is_test), rows.filter(is_test)
    if train.isEmpty() or test.isEmpty():
        empty = "test" if test.isEmpty() else "training"
        sentences = rows.select("key").distinct().count()
        raise ValueError(
            f"--test-fraction {cfg.test_fraction} leaves the {empty} split empty ({rows.count()} rows, "
            f"{sentences} distinct sentences); use more data or another fraction."
        )
    vocabulary = text.build_vocabulary(train, "tokens", cfg.min_count)
    max_len = max(1, train.select(F.max(F.size("tokens"))).first()[0])
    ids = text.encode_column("tokens", vocabulary, max_len).alias("ids")
    return train.select(ids, "label", "sentence_id", "key"), test.select(ids, "label", "sentence_id", "key"), vocabulary, max_len


def train_fn(ctx: tfos_lib.WorkerContext, cfg: Config, spec: ModelSpec) -> dict:
    """Runs on every worker: train together; the chief scores held-out rows each epoch and at the end."""
    tf = tfos_lib.import_tensorflow()
    tf.keras.utils.set_random_seed(cfg.seed)  # same initial weights on every worker
    train = ctx.data("train")
    steps = train.steps_per_epoch(cfg.batch_size)
    with ctx.strategy().scope():  # tfos: variables mirrored across workers
        model = build_model(spec.vocab_size, spec.max_len)
    dataset = ctx.distributed_dataset("train", "ids", "label", global_batch_size=cfg.batch_size, seed=cfg.seed + ctx.rank)
    held_out = None
    if ctx.is_chief:
        # A plain copy outside the strategy, built before fit: only the chief evaluates,
        # and anything run under the strategy would wait for the other workers.
        local = build_model(spec.vocab_size, spec.max_len)
        test = ctx.data("test")
        x_test, y_test, ids_test = test.column("ids"), test.column("label").astype(np.float32), test.column("sentence_id")

        def score(x):
            return np.concatenate([local(x[i : i + 1024], training=False).numpy()[:, 0] for i in range(0, len(x), 1024)])

        def held_out():  # after each epoch: the test rows' figures beside the training ones
            local.set_weights(model.get_weights())
            p = np.clip(score(x_test), 1e-7, 1 - 1e-7)
            scores = evaluate(y_test, p, ids_test)
            return {"loss": -np.mean(y_test * np.log(p) + (1 - y_test) * np.log(1 - p)),
                    "accuracy": scores["test_accuracy"], "sentence_accuracy": scores["sentence_accuracy"]}

    # tfos: resume + progress (+ the chief's held-out scores)
    callbacks = ctx.callbacks(cfg.batch_size, cfg.checkpoint_every_steps, held_out=held_out)
    history, train_seconds = ctx.fit(model, dataset, epochs=cfg.epochs, steps_per_epoch=steps, callbacks=callbacks)
    if not ctx.is_chief:
        return {}

    local.set_weights(model.get_weights())
    probes = ctx.data("probes")
    result = {
        "history": history,
        "test_scores": score(x_test).tolist(),
        "test_labels": test.column("label").tolist(),
        "test_sentence_ids": ids_test.tolist(),
        "probe_scores": dict(zip(probes.column("text").tolist(), score(probes.column("ids")).tolist())),
        "parameters": int(local.count_params()),
        "steps_per_worker": steps * cfg.epochs,
        "examples_per_second": train.num_rows * ctx.num_workers * cfg.epochs / train_seconds,
        "resumed_from_epoch": ctx.resumed_from_epoch,
        "train_seconds": train_seconds,
    }
    if spec.export:
        export_saved_model(local, f"{ctx.output_dir}/models", "sentiment",
                           preprocessing=f"token ids, pre-padded with 0 to {spec.max_len} (the job's vocabulary)")
        tfjs.save_layers_model(local, f"{ctx.output_dir}/web", metadata={"max_len": spec.max_len})
    return result


def evaluate(labels, scores, sentence_ids) -> dict:
    """Accuracy and ROC AUC over held-out rows, and over distinct held-out sentences (driver and chief)."""
    from sklearn.metrics import roc_auc_score

    labels, scores, ids = np.asarray(labels).astype(np.int64), np.asarray(scores), np.asarray(sentence_ids)

    def summary(y, p):
        # AUC needs both classes; a tiny test split may lack one.
        return {"accuracy": float(np.mean((p >= 0.5) == (y == 1))),
                "auc": float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else None}

    rows = summary(labels, scores)
    # One vote per (sentence, label): a sentence copied 167 times counts once.
    _, first = np.unique(np.stack([ids, labels]), axis=1, return_index=True)
    sentences = summary(labels[first], scores[first])
    positive_share = float(np.mean(labels == 1)) if len(labels) else 0.0
    return {"test_accuracy": rows["accuracy"], "test_auc": rows["auc"],
            "sentence_accuracy": sentences["accuracy"], "sentence_auc": sentences["auc"],
            # The trivial baseline: always answering the test split's larger class.
            "majority_class_accuracy": max(positive_share, 1.0 - positive_share)}


def leakage(train, test) -> dict:
    """How much of the test split the model saw in training, by tokenised sentence (driver, Spark)."""
    seen = test.join(train.select("key").distinct(), "key", "left_semi")
    test_sentences = test.select("key").distinct().count()
    return {
        "train_rows": train.count(),
        "test_rows": test.count(),
        "train_sentences": train.select("key").distinct().count(),
        "test_sentences": test_sentences,
        "test_rows_seen_in_training": seen.count(),
        "test_sentences_seen_in_training": seen.select("key").distinct().count(),
    }


def run_split(spark, cfg: Config, rows, split: str, probes) -> tuple[dict, text.Vocabulary, int]:
    """Encodes one split, trains on it through the launcher and evaluates (driver)."""
    from pyspark.sql import functions as F

    is_test = F.col("u_sentence" if split == "distinct_sentence" else "u_row") < cfg.test_fraction
    train, test, vocabulary, max_len = encode_split(rows, is_test, cfg)
    export = split == "distinct_sentence"
    spec = ModelSpec(split, vocabulary.input_dim, max_len, export)
    probe_ids = probes.select("text", text.encode_column("tokens", vocabulary, max_len).alias("ids"))
    inputs = {
        "train": train.select("ids", "label"),
        "test": tfos_lib.Input(test.select("ids", "label", "sentence_id"), shard=False),
        "probes": tfos_lib.Input(probe_ids, shard=False),
    }
    # Each split trains in its own output folder, so one's checkpoints never resume the other.
    run_cfg = cfg if export else dataclasses.replace(cfg, output_dir=os.path.join(cfg.output_dir, f"{split}_split"))
    result = job.launch(train_fn, run_cfg, inputs, spark, extra_args=(spec,))
    metrics = {
        "description": SPLITS[split],
        **evaluate(result.pop("test_labels"), result.pop("test_scores"), result.pop("test_sentence_ids")),
        **leakage(train, test),
        "vocabulary_size": len(vocabulary),
        "max_len": max_len,
        **result,
    }
    return metrics, vocabulary, max_len


def write_page(web_dir: str, vocabulary: text.Vocabulary, max_len: int, bundle: Path | None) -> dict:
    """token_index.csv, index.html and tf.min.js next to the chief's model.json (driver; ``web_dir`` may be a URI)."""
    storage.write_bytes(storage.join(web_dir, "token_index.csv"), vocabulary.to_csv().encode("utf-8"))
    config = {**text.tokenizer_spec(max_len), "probes": list(BOOK_PROBES)}
    template = PAGE_TEMPLATE.read_text(encoding="utf-8")
    if template.count(PAGE_PLACEHOLDER) != 1:
        raise ValueError(f"{PAGE_TEMPLATE} must contain {PAGE_PLACEHOLDER!r} exactly once (where the page's config goes).")
    # "</" would end the <script> element the JSON sits in.
    page = template.replace(PAGE_PLACEHOLDER, json.dumps(config).replace("</", "<\\/"))
    storage.write_bytes(storage.join(web_dir, "index.html"), page.encode("utf-8"))
    if bundle is not None:
        storage.write_bytes(storage.join(web_dir, "tf.min.js"), bundle.read_bytes())
    return {"web_dir": web_dir, "files": sorted(storage.list_files(web_dir)),
            "tfjs_bundle": str(bundle) if bundle else None}


def main(argv=None) -> dict:
    cfg = job.parse_config(Config, argv, description=__doc__.split("\n\n")[0])
    log = job.setup_logging()
    run = job.JobRun("sentiment", cfg)
    bundle = Path(cfg.tfjs_bundle) if cfg.tfjs_bundle else DEFAULT_TFJS_BUNDLE
    if not bundle.is_file():
        if cfg.tfjs_bundle:
            raise FileNotFoundError(f"--tfjs-bundle {bundle}: no such file (expected TensorFlow.js's tf.min.js).")
        log.warning("no %s: the page will say tf.min.js is missing; run jobs/web/fetch_tfjs.sh first", bundle)
        bundle = None
    spark = job.spark_session("sentiment")
    rows, source = load_data(spark, cfg)
    probes = spark.createDataFrame([(p,) for p in BOOK_PROBES], "text string").withColumn("tokens", text.tokenize_column("text"))
    splits = ["distinct_sentence"] + (["random_row"] if cfg.random_split else [])
    evaluation, curves = {}, {}
    for split in splits:
        log.info("training on the %s split (%s) with %d %s worker(s)", split, source, cfg.num_workers, cfg.backend)
        evaluation[split], vocabulary, max_len = run_split(spark, cfg, rows, split, probes)
        if split == "distinct_sentence":
            page = write_page(storage.join(cfg.output_dir, "web"), vocabulary, max_len, bundle)
        curves |= {f"{_PLOT_LABELS[split]}: {name.replace('heldout_', 'held-out ').replace('_', ' ')}": values
                   for name, values in evaluation[split]["history"].items()}
    report.plot_curves(f"{cfg.output_dir}/training_curves.png", curves, title="Chapter 3 GRU: training vs held-out rows")
    headline = evaluation["distinct_sentence"]
    metrics = run.write_metrics(
        data={
            "source": source,
            "rows": rows.count(),
            "positive_rows": rows.filter("label = 1").count(),
            "distinct_sentences": rows.select("sentence").distinct().count(),
            "distinct_tokenised_sentences": rows.select("key").distinct().count(),
        },
        results={
            "test_accuracy": headline["test_accuracy"],
            "test_auc": headline["test_auc"],
            "evaluation": evaluation,
            "probes": {p: {"book": book, **{f"{s}_model": evaluation[s]["probe_scores"][p] for s in splits}}
                       for p, book in BOOK_PROBES.items()},
            "export": page,
        },
        book_reference=BOOK_REFERENCE,
    )
    log.info("held-out accuracy %.4f, AUC %s (split by distinct sentence); wrote %s/metrics.json and %s/index.html",
             headline["test_accuracy"], headline["test_auc"], cfg.output_dir, page["web_dir"])
    return metrics


if __name__ == "__main__":
    job.run_main(main)

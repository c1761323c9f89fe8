"""Product recommendations from Retailrocket's click log: chapter 11's two models, data-parallel on Spark.

Book: "TensorFlow Machine Learning Projects" (Packt, 2018), chapter 11. The book
mapped view/addtocart/transaction to 1/2/3, split the 2,756,101 event rows at
random 80/10/10, and regressed the code with MSE from a visitor and an item
embedding: matrix factorisation (MF, a dot product of 5 factors) and a network
(the two embeddings concatenated, dense 80 and 40 without activation, 20 relu,
1 relu). It reported a test MSE of 0.0571 for the network as "very low", and
never produced a recommendation.

What this job changes, and why:

- The book's bugs (spec A7) are fixed: inputs go in by name, so they cannot be
  swapped as the book's ``fit([visitorid, itemid])`` against
  ``Model([item_input, visitor_input])`` did; ids are indexed densely (item ids run
  to about 467k for 235k items, beyond the book's ``Embedding(n_items + 1)``).
- The book's setup is kept for comparison (``book_mse``), next to the MSE of
  predicting the training mean, which the book's 0.0571 does not beat (0.0560 on
  the real data), and the share of test rows whose pair is also in training.
- The headline is ranking, what a shop needs: repeated events of a pair become
  one interaction, each visitor's latest 20% of items are held out by time, and
  every model ranks all items with a training interaction, minus the visitor's
  own (precision, recall, NDCG and hit rate at 10). The same two architectures
  train to rank on implicit feedback (``--negatives`` sampled items per positive,
  logistic loss); the book's MSE on event codes cannot rank: almost every target
  is 1. Baselines: Spark's implicit ALS and popularity.
- Those two learn little beyond popularity, and ALS beats them. The model a
  recommender engineer would train today is added (``retrieval``, the default
  ``--recommend-all``): a two-tower model whose visitor tower is the mean of the
  visitor's ``--history-length`` most recent items' context vectors (most
  visitors have one or two items: a free vector per visitor overfits, measured)
  and whose item tower is a ``--retrieval-factors`` vector plus a bias, trained with
  a softmax over the batch's items (in-batch negatives) corrected by each item's
  log popularity (logQ). Its epochs are chosen by early stopping on a validation
  split of the training period (each visitor's latest training items), then it is
  refit on the whole period. ALS gets the same care: its rank, regParam and alpha
  are tuned on that validation split.
- Sparse embedding gradients are all-gathered across workers (a test checks 2
  workers end like 1); ``--optimizer lazy_adam`` (default) updates only the
  batch's rows, where Keras' Adam moved all 1.4M visitor rows every step.

Data: Retailrocket's ``events.csv`` (``--data-dir`` with it, or ``--events-csv``).
Without either, ``--generated-events`` rows (default 200,000) of
:mod:`tfos_lib.datasets.retailrocket`'s generated log are written to
``default-data/events.csv`` under ``--output-dir`` when that is a local path, else in a
local scratch folder (:func:`tfos_lib.storage.default_data_dir`); ``python3 -m tfos_lib.datasets.retailrocket --out
events.csv`` writes the full-size one (2,756,101 rows).

Run::

    ./spark-submit.sh recommend                                  # generated data, 1 worker
    ./spark-submit.sh recommend --master 'local[2]' -- --num-workers 2
    python3 -m tfos_lib.datasets.retailrocket --out /data/rr/events.csv && ./spark-submit.sh recommend -- --data-dir /data/rr

Writes to ``--output-dir`` (a local path, or a URI Spark's Hadoop can write: ``s3a://``
needs the hadoop-aws jar, refused at start without it): metrics.json (metrics per model with coverage and seconds, ALS's tuning trials, baselines, bad rows,
phase timings and driver peak memory), comparison.png, training_curves.png,
models/<mf|nn|retrieval>/<version>/ (SavedModels of the ranking models, TF Serving layout;
retrieval's takes ``history`` and ``item``), recommendations/evaluated/<model>/
(Parquet top-k of the evaluated visitors, every model) and
recommendations/all_visitors/ (Parquet top-k of every visitor, ``--recommend-all``; by blocked
products over all items, or ``--top-k-index faiss-ivf``: a FAISS IVF index built on the driver and
searched in the tasks, whose recall of the exact top-k is measured on the evaluated visitors).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

import tfos_lib
from tfos_lib import job, report, storage
from tfos_lib.datasets import retailrocket
from tfos_lib.export.saved_model import export_saved_model
from tfos_lib.recsys import ann, evaluation, models, prepare, ranking, retrieval, training

MODELS = ("mf", "nn", "retrieval")
MODEL_NAMES = {"mf": "book MF", "nn": "book network", "retrieval": "retrieval (TF, in-batch softmax)",
               "als": "ALS (implicit, tuned)", "popularity": "popularity"}
BOOK_REFERENCE = {
    "nn_test_mse": 0.05709125054560985,
    "mf": "diverged (companion notebook: test MSE 5.67e18), from the swapped inputs",
    "constant_mean_mse_real_data": 0.05603,
    "constant_one_mse_real_data": 0.05775,
    "latent_factors": 5,
    "epochs": 50,
    "batch_size": 32,
    "source": "chapter 11 (L6090, L6236, L6385-6389) and its companion notebook; constants from the L6090 counts",
}


@dataclass(frozen=True)
class Config(job.TrainingConfig):
    output_dir: str = job.option("output/recommend", "where results go")
    events_csv: str | None = job.option(None, "events.csv to read (instead of --data-dir)")
    generated_events: int = job.option(
        200_000, "rows of the generated events.csv used without --data-dir/--events-csv", min=20
    )
    epochs: int = job.option(5, "passes over the training interactions, per ranking model")
    book_epochs: int = job.option(
        3, "passes over the event rows in the book setup (the book's: 50; the MSE is flat after 2)", min=1
    )
    batch_size: int = job.option(
        1024, "global batch size: rows (book setup) or positives (ranking); the book's: 32"
    )
    learning_rate: float = job.option(
        0.001, "Adam's learning rate for the book setup (the book's: 0.001)", greater_than=0
    )
    optimizer: str = job.option(
        "lazy_adam",
        "lazy_adam: Adam's update for the embedding rows in the batch only; adam: Keras' Adam (the book's), which "
        "moves all 1.4M visitor rows every step",
        choices=("lazy_adam", "adam"),
    )
    ranking_learning_rate: float = job.option(0.01, "learning rate when training to rank", greater_than=0)
    factors: int = job.option(5, "latent factors of the book's MF and network, and ALS's rank when not tuned (the book's: 5)",
                              min=1)
    negatives: int = job.option(16, "sampled negative items per positive when training to rank", min=1)
    regularization: float = job.option(
        0.0, "L2 on the embedding rows each ranking batch looks up (0: none, as in the book)", min=0
    )
    models: str = job.option("mf,nn,retrieval", "comma-separated: mf (the book's matrix factorisation), nn (the book's "
                             "network), retrieval (MF with item biases, in-batch softmax with logQ correction)")
    retrieval_factors: int = job.option(32, "factors of the retrieval model (32 and 64 measured alike)", min=1)
    history_length: int = job.option(20, "the retrieval model's visitor tower: this many most recent items", min=1)
    retrieval_learning_rate: float = job.option(0.005, "the retrieval model's learning rate", greater_than=0)
    retrieval_regularization: float = job.option(0.0, "L2 on the retrieval model's looked-up rows", min=0)
    retrieval_epochs: int = job.option(
        20, "at most this many epochs for the retrieval model: it stops when validation NDCG stops improving", min=1)
    patience: int = job.option(2, "epochs without a better validation NDCG before the retrieval model stops", min=1)
    recency_half_life_days: float = job.option(
        0.0, "weight a training interaction by 0.5 ** (days before the visitor's latest / this); 0: all weigh 1", min=0)
    validation_visitors: int = job.option(
        5000, "visitors of the validation split (each one's latest training items) that tuning scores; 0: all", min=0)
    tune_als: bool = job.option(True, "tune ALS's rank, regParam and alpha on the validation split (else the given ones)")
    als_ranks: str = job.option("16,32,64", "ALS ranks tried (comma-separated)")
    als_regularizations: str = job.option("0.01,0.1,1", "ALS regParams tried (comma-separated)")
    als_alphas: str = job.option("1,10,40", "ALS alphas tried (comma-separated)")
    book_setup: bool = job.option(True, "also train the book's MSE regression on its random 80/10/10 row split")
    holdout_fraction: float = job.option(
        0.2, "share of each visitor's latest items held out (at least one, visitors with 2+ items)",
        greater_than=0, less_than=1,
    )
    eval_visitors: int = job.option(
        10_000, "held-out visitors ranked for the metrics (a seeded sample); 0: all of them", min=0
    )
    top_k: int = job.option(10, "recommendation list length (the k of the metrics)", min=1)
    recommend_all: str = job.option(
        "retrieval",
        "model whose top-k for every visitor is written as Parquet; none: skip",
        choices=("mf", "nn", "retrieval", "als", "popularity", "none"),
    )
    recommend_visitors: int = job.option(
        0, "--recommend-all for a seeded sample of this many visitors; 0: every visitor", min=0
    )
    top_k_index: str = job.option(
        "exact", "--recommend-all's search: exact (blocked products over all items), faiss (an exact FAISS index) or "
        "faiss-ivf (approximate; its recall of the exact top-k is measured on the evaluated visitors)",
        choices=ann.INDEXES)
    ivf_nprobe: int = job.option(
        128, "clusters a faiss-ivf search scans (of about 4 sqrt(items); at full size 128 of 1,927 found 0.98 of the "
        "exact top-10, 16 only 0.47)", min=1)
    als_iterations: int = job.option(10, "ALS iterations", min=1)
    als_regularization: float = job.option(0.1, "ALS regParam", min=0)
    als_alpha: float = job.option(10.0, "ALS implicit confidence alpha", min=0)
    max_bad_fraction: float = job.option(
        0.01, "fail when more than this share of rows is unusable (they are dropped either way)", min=0, max=1
    )

    def __post_init__(self):
        super().__post_init__()
        unknown = set(self.model_list) - set(MODELS)
        if unknown or not self.model_list:
            raise ValueError(f"--models takes a comma-separated subset of {list(MODELS)}; got {self.models!r}.")
        if self.recommend_all in MODELS and self.recommend_all not in self.model_list:
            raise ValueError(f"--recommend-all {self.recommend_all} needs that model in --models (got {self.models!r}).")
        if self.top_k_index != "exact" and self.recommend_all not in ("mf", "retrieval", "als"):
            raise ValueError(f"--top-k-index {self.top_k_index} indexes dot-product models (mf, retrieval, als); "
                             f"got --recommend-all {self.recommend_all}: use --top-k-index exact.")
        for name in ("als_ranks", "als_regularizations", "als_alphas"):
            try:
                values = self.als_grid[name]
            except ValueError:
                values = []
            if not values or min(values) < 0 or (name == "als_ranks" and min(values) < 1):
                raise ValueError(f"--{name.replace('_', '-')} takes comma-separated numbers >= 0 (ranks >= 1); "
                                 f"got {getattr(self, name)!r}.")

    @property
    def als_grid(self) -> dict:
        return {name: [int(float(v)) if name == "als_ranks" else float(v) for v in getattr(self, name).split(",")
                       if v.strip()] for name in ("als_ranks", "als_regularizations", "als_alphas")}

    @property
    def model_list(self) -> tuple[str, ...]:
        return tuple(m.strip() for m in self.models.split(",") if m.strip())


@dataclass(frozen=True)
class TrainPlan:
    """What the workers need besides the config (driver -> workers)."""

    num_visitors: int
    num_items: int
    models: tuple[str, ...]
    book_setup: bool
    ranking: bool = True
    inner_counts: np.ndarray | None = None  # per item: positives in the training period minus validation
    train_counts: np.ndarray | None = None  # per item: positives in the training period
    save_book_weights: bool = False  # tests compare the book models' weights across worker counts


# ---------------------------------------------------------------------------------------------
# Data (driver; the work is Spark's).


def events_source(cfg: Config, log, conf: dict) -> tuple[str, str]:
    """The events.csv to read, and how to describe it (generating the default file if needed)."""
    if cfg.events_csv:
        if not os.path.isfile(cfg.events_csv):
            raise FileNotFoundError(f"--events-csv {cfg.events_csv}: no such file (expected Retailrocket's events.csv).")
        return cfg.events_csv, f"file:{cfg.events_csv}"
    if cfg.data_dir:
        path = retailrocket.find_events_file(cfg.data_dir)
        return path, f"file:{path}"
    shape = retailrocket.RetailrocketShape.scaled(cfg.generated_events)
    path = os.path.join(storage.default_data_dir(cfg.output_dir, "default-data", conf), "events.csv")
    log.info("generating %s events (seed %d) into %s", f"{shape.events:,}", cfg.seed, path)
    retailrocket.write_events(path, retailrocket.generate(shape, cfg.seed), seed=cfg.seed)
    return path, f"generated ({shape.events} events, seed {cfg.seed})"


def preprocess(spark, events, cfg: Config) -> dict:
    """Dense ids, the book's row split and the ranking split (all Spark; the results are cached)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    indexed, num_visitors, num_items = prepare.index_events(events)
    # The book's split: random 80/10/10 over event rows (duplicates kept); its 10% validation is unused.
    u = F.rand(cfg.seed)
    book = indexed.select("visitor", "item", F.col("event_code").cast("float").alias("label"), u.alias("u"))
    book = book.persist(StorageLevel.MEMORY_AND_DISK)  # pins rand()'s values for every later query
    return {
        "num_visitors": num_visitors,
        "num_items": num_items,
        "indexed": indexed,
        "book_train": book.filter(F.col("u") < 0.8).select("visitor", "item", "label"),
        "book_test": book.filter(F.col("u") >= 0.9).select("visitor", "item", "label"),
        **prepare.ranking_split(indexed, cfg.holdout_fraction, cfg.eval_visitors, cfg.seed),
    }


def data_summary(data: dict) -> dict:
    """Sizes and the book split's leak (driver, Spark actions)."""
    from pyspark.sql import functions as F

    book_train, book_test = data["book_train"], data["book_test"]
    leaked = book_test.join(book_train.select("visitor", "item").distinct(), ["visitor", "item"], "left_semi").count()
    test_rows = book_test.count()
    pairs = data["pairs"]
    counts = pairs.agg(F.count(F.lit(1)).alias("pairs"), F.sum(F.col("held_out").cast("int")).alias("held")).first()
    return {
        "events": data["indexed"].count(),
        "visitors": data["num_visitors"],
        "items": data["num_items"],
        "book_split": {"train_rows": book_train.count(), "test_rows": test_rows,
                       "test_rows_whose_pair_is_in_train": leaked,
                       "leaked_share": leaked / test_rows if test_rows else None},
        "interactions": int(counts["pairs"]),
        "ranking_train_interactions": int(counts["pairs"] - counts["held"]),
        "held_out_interactions": int(counts["held"]),
        "held_out_visitors": pairs.filter("held_out").select("visitor").distinct().count(),
        "evaluated_visitors": data["eval_visitors"].count(),
    }


def constant_baselines(book_train, book_test) -> dict:
    """Test MSE of predicting the training mean, and of predicting 1 (driver, Spark)."""
    from pyspark.sql import functions as F

    mean = book_train.agg(F.avg("label")).first()[0]
    row = book_test.agg(F.avg((F.col("label") - mean) ** 2).alias("mean"), F.avg((F.col("label") - 1.0) ** 2).alias("one")).first()
    return {"train_mean": float(mean), "constant_mean_mse": float(row["mean"]), "constant_one_mse": float(row["one"])}


# ---------------------------------------------------------------------------------------------
# Training (on every worker): the models are tfos_lib.recsys.models' MF and network.


def train_fn(ctx: tfos_lib.WorkerContext, cfg: Config, plan: TrainPlan) -> dict:
    """Runs on every worker: trains each model (book setup, then ranking); the chief evaluates and saves."""
    import resource

    tfos_lib.import_tensorflow()
    ctx.strategy()  # before any TensorFlow op: collectives must be configured at startup
    result: dict = {"book_mse": {}, "ranking": {}, "history": {}}
    factors_dir = os.path.join(ctx.output_dir, "factors")
    if ctx.is_chief:
        os.makedirs(factors_dir, exist_ok=True)

    def fit(name, kind, objective, dataset, steps):
        to_rank = objective == "ranking"

        def build():
            return models.build_model(kind, plan.num_visitors, plan.num_items, cfg.factors, objective,
                                      cfg.ranking_learning_rate if to_rank else cfg.learning_rate,
                                      cfg.regularization if to_rank else 0.0, cfg.optimizer)

        losses, local, seconds = training.fit_replicated(
            ctx, build, dataset, name=name, epochs=cfg.epochs if to_rank else cfg.book_epochs, steps=steps,
            global_batch_size=cfg.batch_size, checkpoint_every_steps=cfg.checkpoint_every_steps, seed=cfg.seed)
        result["history"][name] = losses
        return local, seconds

    if plan.book_setup:
        train = ctx.data("book_train")
        for kind in [m for m in plan.models if m != "retrieval"]:
            dataset = training.labelled_pairs_dataset(ctx, "book_train", cfg.batch_size, cfg.seed)
            local, seconds = fit(f"book_{kind}", kind, "mse", dataset, train.steps_per_epoch(cfg.batch_size))
            if local is None:
                continue
            result["book_mse"][kind] = {
                "test_mse": training.mean_squared_error(local, ctx.data("book_test")),
                "train_seconds": seconds,
                "train_rows_per_second": train.num_rows * ctx.num_workers * cfg.book_epochs / seconds,
                "parameters": int(local.count_params()),
            }
            if plan.save_book_weights:
                np.savez(os.path.join(factors_dir, f"book_{kind}.npz"), *local.get_weights())

    if plan.ranking:
        for kind in [m for m in plan.models if m != "retrieval"]:
            positives = ctx.data("rank_train")
            dataset = training.implicit_feedback_dataset(ctx, "rank_train", cfg.batch_size, cfg.negatives,
                                                         plan.num_items, cfg.seed)
            local, seconds = fit(f"ranking_{kind}", kind, "ranking", dataset, positives.steps_per_epoch(cfg.batch_size))
            if local is None:
                continue
            if kind == plan.models[0]:  # evidence for metrics.json: the embedding gradient really is sparse
                result["embedding_gradient_type"] = training.embedding_gradient_type(local)
            factors_file = os.path.join(factors_dir, f"{kind}.npz")
            np.savez(factors_file, **models.scorer_arrays(kind, local, cfg.factors))
            export_saved_model(local, os.path.join(ctx.output_dir, "models"), kind)
            result["ranking"][kind] = {
                "train_seconds": seconds,
                "train_positives_per_second": positives.num_rows * ctx.num_workers * cfg.epochs / seconds,
                "parameters": int(local.count_params()),
                "factors_file": f"factors/{kind}.npz",  # under the output directory (copied there if a URI)
            }
    if plan.ranking and "retrieval" in plan.models:
        settings = retrieval.Settings(plan.num_items, cfg.retrieval_factors, cfg.history_length, cfg.retrieval_learning_rate,
                                      cfg.retrieval_regularization, cfg.optimizer, cfg.batch_size, cfg.retrieval_epochs,
                                      cfg.patience, cfg.top_k, cfg.seed, cfg.checkpoint_every_steps)
        result["ranking"]["retrieval"] = retrieval.train(ctx, settings, plan.inner_counts, plan.train_counts,
                                                         result["history"])
        if result["ranking"]["retrieval"] is None:
            del result["ranking"]["retrieval"]
    result["worker_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return result


def main(argv=None) -> dict:
    cfg = job.parse_config(Config, argv, description=__doc__.split("\n\n")[0])
    log = job.setup_logging()
    spark = job.spark_session("recommend")
    storage.check_spark_writable(spark, cfg.output_dir)  # before the run lock: Spark writes the Parquet
    run = job.JobRun("recommend", cfg)
    timer = ranking.PhaseTimer(ranking.driver_jvm_pid(spark))
    with timer.phase("generate" if not (cfg.events_csv or cfg.data_dir) else "locate", log):
        path, source = events_source(cfg, log, dict(spark.sparkContext.getConf().getAll()))
    with timer.phase("read", log):
        validated = retailrocket.read_events(spark, path, cfg.max_bad_fraction)
        if validated.dropped_rows:
            log.warning("dropped %d of %d rows: %s", validated.dropped_rows, validated.total_rows,
                        {k: v for k, v in validated.bad_rows.items() if v})
    with timer.phase("preprocess", log):
        data = preprocess(spark, validated.events, cfg)
        summary = data_summary(data)
        baselines = constant_baselines(data["book_train"], data["book_test"])
        # The validation split of the training period: each visitor's latest training items.
        validation = prepare.split_pairs(data["train_pairs"], cfg.holdout_fraction, cfg.validation_visitors, cfg.seed + 1)
        inner_counts = evaluation.item_counts(validation["rank_train"], data["num_items"])
        train_counts = evaluation.item_counts(data["rank_train"], data["num_items"])
        summary["validation_visitors"] = validation["eval_visitors"].count()
    log.info("%s: %s events, %s visitors, %s items; %s training interactions, %s held-out visitors (%s evaluated)",
             source, f"{summary['events']:,}", f"{summary['visitors']:,}", f"{summary['items']:,}",
             f"{summary['ranking_train_interactions']:,}", f"{summary['held_out_visitors']:,}",
             f"{summary['evaluated_visitors']:,}")

    plan = TrainPlan(data["num_visitors"], data["num_items"], cfg.model_list, cfg.book_setup,
                     inner_counts=inner_counts, train_counts=train_counts)
    inputs = {"rank_train": data["rank_train"].select("visitor", "item")}
    if "retrieval" in cfg.model_list:
        inputs |= retrieval.inputs(data, validation, cfg.history_length, data["num_items"], cfg.recency_half_life_days)
    if cfg.book_setup:
        inputs["book_train"] = data["book_train"]
        inputs["book_test"] = tfos_lib.Input(data["book_test"], shard=False)
    with timer.phase("train", log):
        log.info("training %s with %d %s worker(s)", ", ".join(cfg.model_list), cfg.num_workers, cfg.backend)
        trained = job.launch(train_fn, cfg, inputs, spark, extra_args=(plan,))
    with timer.phase("train_als", log):
        als_model, als_info = evaluation.train_als(data, validation, inner_counts, cfg, log)

    with timer.phase("evaluate", log):
        factors_files = {kind: storage.join(cfg.output_dir, info["factors_file"])
                         for kind, info in trained["ranking"].items()}
        histories = prepare.visitor_histories(data["train_pairs"], cfg.history_length, data["num_items"])
        scorers, vectors = ranking.build_scorers(spark, data["num_items"], data["rank_train"], factors_files, als_model,
                                                 histories)
        ranked = evaluation.evaluate(spark, cfg, data, scorers, vectors, summary["evaluated_visitors"], log)
    all_visitors = None
    if cfg.recommend_all != "none":
        with timer.phase("recommend_all", log):
            all_visitors = evaluation.recommend_everyone(spark, cfg, data, scorers, vectors)

    book_mse = {}
    if cfg.book_setup:
        book_mse = {f"{kind} (book setup)": v["test_mse"] for kind, v in trained["book_mse"].items()}
        book_mse |= {"constant train mean": baselines["constant_mean_mse"], "constant 1": baselines["constant_one_mse"]}
    ranking.plot_comparison(os.path.join(cfg.output_dir, "comparison.png"),
                            {MODEL_NAMES[n]: m for n, m in ranked.items()}, book_mse, cfg.top_k,
                            f"Chapter 11 on {source}: {summary['events']:,} events")
    report.plot_curves(os.path.join(cfg.output_dir, "training_curves.png"),
                       {name.replace("_", " ") + " loss": values for name, values in trained["history"].items()},
                       title="Chapter 11: training loss per model")
    metrics = run.write_metrics(
        data={"source": source, "path": path, "total_rows": validated.total_rows,
              "dropped_rows": validated.dropped_rows, "bad_rows": validated.bad_rows,
              "bad_row_examples": validated.examples, "bad_row_rules": retailrocket.BAD_ROW_REASONS, **summary},
        results={
            "ranking": ranked,
            "k": cfg.top_k,
            "book_mse": {
                "models": trained["book_mse"],
                **baselines,
                "beats_constant_mean": {k: v["test_mse"] < baselines["constant_mean_mse"]
                                        for k, v in trained["book_mse"].items()},
            } if cfg.book_setup else None,
            "ranking_training": trained["ranking"],
            "als": als_info,
            "seconds_per_model": {
                **{name: round(info["train_seconds"] + info.get("validation_run_seconds", 0.0), 2)
                   for name, info in trained["ranking"].items()},
                "als": round(als_info["train_seconds"] + sum(t["seconds"] for t in als_info["trials"]), 2),
                "popularity": 0.0,
            },
            "retrieval_beats_als_by_stderrs": evaluation.beats_by_stderrs(ranked, "retrieval", "als"),
            "embedding_gradient_type": trained.get("embedding_gradient_type"),
            "worker_peak_rss_mb": trained["worker_peak_rss_mb"],
            "recommendations_all_visitors": all_visitors,
            "timings": timer.summary(),
        },
        book_reference=BOOK_REFERENCE,
    )
    timings = metrics["results"]["timings"]
    log.info("phases (s): %s; dominant: %s; wrote %s/metrics.json",
             {k: v["seconds"] for k, v in timings["phases"].items()}, timings["dominant_phase"], cfg.output_dir)
    return metrics


if __name__ == "__main__":
    job.run_main(main)

"""Exoplanets (chapter 2): gradient-boosted trees trained by Spark executors together, and a detector that finds planets.

Book: "TensorFlow Machine Learning Projects" (Packt, 2018), chapter 2. The book trains
``tf.estimator.BoostedTreesClassifier`` (100 trees, depth 6, shrinkage 0.1) on the raw
fluxes of Kaggle's Kepler light curves (each bucketized at its train mean) and reports
test accuracy 0.9912 (AUC 0.4991, precision 0, recall 0): exactly the share of stars
without a planet (565/570). Its model says "no planet" for every star.

This job cleans each light curve in Spark (robust normalisation, running-median
detrending, clipping), computes the features a planet hunter uses (FFT bands and a
box-least-squares transit search), and trains gradient-boosted trees distributed
over the executors: YDF's distributed GBT with one YDF worker per tfos_lib worker
(``--engine ydf``), or Spark MLlib's ``GBTClassifier`` (``--engine mllib``). Positives
are weighted to balance the classes; the decision threshold is chosen on a
validation split of the training file, never on the test file.

Data: Kaggle's ``exoTrain.csv`` and ``exoTest.csv`` from ``--data-dir``; without it,
synthetic files of the same format, sizes and positive counts
(:mod:`tfos_lib.datasets.kepler`).

Run::

    ./spark-submit.sh exoplanets                                    # default data, YDF, 1 worker
    ./spark-submit.sh exoplanets --master local[2] -- --num-workers 2
    ./spark-submit.sh exoplanets -- --data-dir ~/datasets/kaggle-kepler --engine mllib

Writes to ``--output-dir``: metrics.json, models/exoplanets/<version>/ (YDF, the TF Serving
layout) or mllib_model/, curves.png
(PR and ROC), light_curves.png, default_data/ (the synthetic files).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass

import numpy as np

import tfos_lib
from tfos_lib import job, report, storage
from tfos_lib.datasets import files, kepler
from tfos_lib.ml import forest, lightcurves

BOOK_REFERENCE = {
    "test_accuracy": 0.9912280440330505, "test_roc_auc": 0.4991151690483093, "test_precision": 0.0,
    "test_recall": 0.0, "confusion_matrix": {"tp": 0, "fp": 0, "fn": 5, "tn": 565},
    "source": "chapter 2, tf.estimator.BoostedTreesClassifier, 100 trees, depth 6, raw bucketized fluxes",
}


@dataclass(frozen=True)
class Config(job.LaunchConfig):
    output_dir: str = job.option("output/exoplanets", "where results go")
    engine: str = job.option("ydf", "ydf: YDF's distributed GBT on the tfos_lib workers; mllib: Spark MLlib's "
                             "GBTClassifier", choices=("ydf", "mllib"))
    features: str = job.option("transit", "transit: statistics + FFT bands + box-least-squares search; fft: without "
                               "the search; raw: the book's 3,197 fluxes", choices=lightcurves.FEATURE_SETS)
    fft_bins: int = job.option(64, "log-spaced FFT bands", min=1, max=1598)
    num_trees: int = job.option(100, "boosting rounds (the book's: 100)", min=1)
    max_depth: int = job.option(6, "tree depth (the book's: 6)", min=1, max=30)
    learning_rate: float = job.option(0.1, "shrinkage (the book's: 0.1)", greater_than=0, max=1)
    validation_fraction: float = job.option(0.2, "share of the training stars held out to choose the threshold",
                                            greater_than=0, less_than=1)
    batch_size: int = job.option(32, "unused: trees see the whole split", command_line=False)
    max_restarts: int = job.option(0, "unused", command_line=False)
    stall_timeout: float = job.option(600.0, "unused: no training steps to watch", command_line=False)


# ---------------------------------------------------------------------------------------------
# Data and features (Spark).


def load_data(spark, cfg: Config):
    """``(train_stars, test_stars, source)`` (``star``, ``label`` 0/1, ``flux``), checked."""
    if cfg.data_dir:
        how = "Download Kaggle's keplersmachines/kepler-labelled-time-series-data and unzip it there."
        paths = {split: files.find_data_file(cfg.data_dir, name, "Kepler light curves, LABEL,FLUX.1..FLUX.3197", how)
                 for split, name in kepler.FILES.items()}
        source = f"kaggle-csv:{cfg.data_dir}"
    else:
        directory = storage.default_data_dir(cfg.output_dir, "default_data", dict(spark.sparkContext.getConf().getAll()))
        paths = kepler.write_default_data(directory, seed=cfg.seed)
        source = f"synthetic (seed {cfg.seed})"
    return kepler.read_split(spark, paths["train"]), kepler.read_split(spark, paths["test"]), source


def featurize(spark, stars, cfg: Config):
    """One row per star: ``star``, ``label`` and one double column per feature, cached. Returns (df, names)."""
    from pyspark.sql import functions as F

    names = lightcurves.feature_names(cfg.features, cfg.fft_bins, kepler.NUM_FLUX)
    with_features = lightcurves.add_features(stars, cfg.features, cfg.fft_bins, kepler.NUM_FLUX,
                                             partitions=2 * spark.sparkContext.defaultParallelism)
    flat = with_features.select("star", "label", *[F.col("features")[i].alias(n) for i, n in enumerate(names)])
    return flat.cache(), names


def split_validation(df, fraction: float, seed: int):
    """Stratified split of the training stars: ``(fit, validation)``, each with hosts."""
    from pyspark.sql import functions as F

    labels = df.select("star", "label").toPandas()
    rng = np.random.default_rng(seed)
    held = []
    for label in (0, 1):
        stars = labels.star[labels.label == label].to_numpy()
        held += list(rng.choice(stars, max(1, int(round(fraction * len(stars)))), replace=False))
    if (labels.label == 1).sum() < 2:
        raise ValueError("the training file needs at least 2 planet hosts: one to train on, one to choose the threshold.")
    is_held = F.col("star").isin([int(s) for s in held])
    return df.where(~is_held), df.where(is_held)


# ---------------------------------------------------------------------------------------------
# Training: YDF on the tfos_lib workers, or MLlib.


def train_fn(ctx: tfos_lib.WorkerContext, cfg: Config, dataset: str, working_dir: str, names: list) -> dict:
    """Runs on every worker: serve a YDF worker; the chief manages the distributed GBT and exports it."""
    from tfos_lib.export import saved_model

    started = time.perf_counter()
    model = forest.train_gbt(
        ctx, dataset, working_dir, label="label", weights="weight", num_trees=cfg.num_trees,
        max_depth=cfg.max_depth, shrinkage=cfg.learning_rate, random_seed=cfg.seed,
    )
    if not ctx.is_chief:
        return {}
    seconds = time.perf_counter() - started
    export = saved_model.export_ydf_model(model, os.path.join(ctx.output_dir, "models"), "exoplanets", names)
    return {"train_seconds": seconds, "trees": model.num_trees(), "export": export}


def train_ydf(spark, fit, names, cfg: Config):
    """Writes the weighted training rows as CSV shards and trains on ``cfg.num_workers`` tfos_lib workers."""
    out = storage.require_mounted(cfg.output_dir, "YDF's workers share the training shards and snapshots under it")
    working_dir = os.path.join(out, "ydf_work")
    shutil.rmtree(working_dir, ignore_errors=True)  # no resuming from an earlier run's snapshot
    dataset = forest.write_shards(fit.select("label", "weight", *names), os.path.join(out, "ydf_data"),
                                  2 * cfg.num_workers)
    result = job.launch(train_fn, cfg, {}, spark, extra_args=(dataset, working_dir, names))
    # Evaluated as it would be served: the TF Serving export, scored in the executors.
    return result, lambda df: forest.score(df, result["export"], names)


def train_mllib(fit, names, cfg: Config):
    from pyspark.ml.classification import GBTClassifier
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.functions import vector_to_array

    assembler = VectorAssembler(inputCols=names, outputCol="vector")
    gbt = GBTClassifier(labelCol="label", featuresCol="vector", weightCol="weight", maxIter=cfg.num_trees,
                        maxDepth=cfg.max_depth, stepSize=cfg.learning_rate, seed=cfg.seed, maxBins=64)
    started = time.perf_counter()
    model = gbt.fit(assembler.transform(fit))
    seconds = time.perf_counter() - started
    model.write().overwrite().save(os.path.join(cfg.output_dir, "mllib_model"))

    def score(df):
        scored = model.transform(assembler.transform(df))
        return scored.withColumn("probability", vector_to_array("probability")[1]).drop("vector", "rawPrediction",
                                                                                      "prediction")

    return {"train_seconds": seconds, "trees": model.getNumTrees}, score


# ---------------------------------------------------------------------------------------------
# Evaluation (driver).


def evaluate(y_val, p_val, y_test, p_test) -> dict:
    """Test figures at the threshold with the best validation F1, at the book's 0.5, and the majority baseline."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    precision, recall, thresholds = precision_recall_curve(y_val, p_val)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    threshold = float(thresholds[int(np.argmax(f1[:-1]))])

    def at(t):
        pred = p_test >= t
        tp, fp = int(np.sum(pred & (y_test == 1))), int(np.sum(pred & (y_test == 0)))
        fn, tn = int(np.sum(~pred & (y_test == 1))), int(np.sum(~pred & (y_test == 0)))
        prec, rec = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
        return {"threshold": t, "precision": prec, "recall": rec, "f1": 2 * prec * rec / max(prec + rec, 1e-12),
                "accuracy": (tp + tn) / len(y_test), "confusion_matrix": {"tp": tp, "fp": fp, "fn": fn, "tn": tn}}

    ours = at(threshold)
    return {
        "test_pr_auc": float(average_precision_score(y_test, p_test)),
        "test_roc_auc": float(roc_auc_score(y_test, p_test)),
        "validation_pr_auc": float(average_precision_score(y_val, p_val)),
        **{f"test_{k}": v for k, v in ours.items()},
        "book_operating_point": at(0.5),
        "majority_baseline": {"test_accuracy": float(np.mean(y_test == 0)), "test_pr_auc": float(np.mean(y_test)),
                              "test_roc_auc": 0.5, "test_recall": 0.0},
    }


def plot_curves(path, y_test, p_test, title):
    from sklearn.metrics import precision_recall_curve, roc_curve

    fig = report.new_figure((10, 4))
    pr, roc = fig.subplots(1, 2)
    precision, recall, _ = precision_recall_curve(y_test, p_test)
    pr.plot(recall, precision, drawstyle="steps-post")
    pr.axhline(np.mean(y_test), color="grey", linestyle="--", label="majority / chance")
    pr.set(xlabel="recall", ylabel="precision", title="precision-recall (test)")
    fpr, tpr, _ = roc_curve(y_test, p_test)
    roc.plot(fpr, tpr)
    roc.plot([0, 1], [0, 1], color="grey", linestyle="--", label="chance (the book's AUC 0.499)")
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    for ax in (pr, roc):
        ax.legend(loc="lower left")
    fig.suptitle(title)
    report.save_figure(fig, path)


def plot_light_curves(path, examples: list[tuple[str, np.ndarray]]):
    """Rows of (raw, detrended, folded at the transit search's best period) for a few named stars."""
    fig = report.new_figure((13, 2.2 * max(len(examples), 1)))
    axes = fig.subplots(max(len(examples), 1), 3, squeeze=False)
    t = np.arange(kepler.NUM_FLUX) * kepler.CADENCE_DAYS
    for row, (name, flux) in zip(axes, examples):
        _, detrended = lightcurves.detrend(flux)
        found = lightcurves.bls_search(detrended)
        phase = (t - found["bls_epoch"] + found["bls_period"] / 2) % found["bls_period"] - found["bls_period"] / 2
        row[0].plot(t, flux, lw=0.5)
        row[0].set(title=f"{name}: raw flux", xlabel="days")
        row[1].plot(t, detrended, lw=0.5)
        row[1].set(title="detrended (MADs)", xlabel="days")
        row[2].plot(phase * 24, detrended, ".", ms=1)
        row[2].set(title=f"folded at {found['bls_period']:.3f} d (SNR {found['bls_depth_snr']:.1f})",
                   xlabel="hours from transit", xlim=(-12, 12))
    report.save_figure(fig, path)


def example_stars(test_stars, scored, threshold: float, per_kind: int = 2):
    """A few true positives, missed hosts and false alarms of the test split, with their raw flux."""
    kinds = {"true positive": (1, True), "missed host": (1, False), "false alarm": (0, True)}
    picked = []
    for name, (label, flagged) in kinds.items():
        rows = scored[(scored.label == label) & ((scored.probability >= threshold) == flagged)]
        picked += [(name, int(star)) for star in rows.sort_values("probability", ascending=not flagged).star[:per_kind]]
    fluxes = dict(test_stars.where(test_stars.star.isin([s for _, s in picked])).select("star", "flux").collect())
    return [(f"{name} (star {star})", np.asarray(fluxes[star])) for name, star in picked]


def main(argv=None) -> dict:
    from pyspark.sql import functions as F

    cfg = job.parse_config(Config, argv, description=__doc__.split("\n\n")[0])
    log = job.setup_logging()
    run = job.JobRun("exoplanets", cfg)
    spark = job.spark_session("exoplanets")
    train_stars, test_stars, source = load_data(spark, cfg)
    started = time.perf_counter()
    train, names = featurize(spark, train_stars, cfg)
    test, _ = featurize(spark, test_stars, cfg)
    num_train, num_test = train.count(), test.count()
    feature_seconds = time.perf_counter() - started
    log.info("features (%s, %d columns) of %d stars in %.1f s", cfg.features, len(names), num_train + num_test,
             feature_seconds)
    fit, validation = split_validation(train, cfg.validation_fraction, cfg.seed)
    counts = dict(fit.groupBy("label").count().collect())
    fit = fit.withColumn("weight", F.when(F.col("label") == 1, counts[0] / counts[1]).otherwise(1.0))
    log.info("training %s GBT on %d stars (%d hosts) with %d worker(s)", cfg.engine, sum(counts.values()), counts[1],
             cfg.num_workers if cfg.engine == "ydf" else 0)
    if cfg.engine == "ydf":
        result, score = train_ydf(spark, fit, names, cfg)
    else:
        result, score = train_mllib(fit, names, cfg)
    scored_val = score(validation).select("label", "probability").toPandas()
    scored_test = score(test).select("star", "label", "probability").toPandas()
    results = evaluate(scored_val.label.to_numpy(), scored_val.probability.to_numpy(),
                       scored_test.label.to_numpy(), scored_test.probability.to_numpy())
    plot_curves(f"{cfg.output_dir}/curves.png", scored_test.label.to_numpy(), scored_test.probability.to_numpy(),
                f"{cfg.engine} GBT on {cfg.features} features: test PR-AUC {results['test_pr_auc']:.3f}, "
                f"recall {results['test_recall']:.2f} (book: recall 0)")
    plot_light_curves(f"{cfg.output_dir}/light_curves.png",
                      example_stars(test_stars, scored_test, results["test_threshold"]))
    metrics = run.write_metrics(
        data={"source": source, "train_stars": num_train, "test_stars": num_test, "fit_stars": sum(counts.values()),
              "fit_hosts": counts[1], "validation_stars": num_train - sum(counts.values()),
              "test_hosts": int(scored_test.label.sum()), "feature_columns": len(names)},
        results={**result, **results, "feature_seconds": feature_seconds,
                 "features_per_second": (num_train + num_test) / feature_seconds},
        book_reference=BOOK_REFERENCE,
    )
    log.info("test PR-AUC %.3f, ROC-AUC %.3f, recall %.2f, precision %.2f at threshold %.3f; wrote %s/metrics.json",
             results["test_pr_auc"], results["test_roc_auc"], results["test_recall"], results["test_precision"],
             results["test_threshold"], cfg.output_dir)
    return metrics


if __name__ == "__main__":
    job.run_main(main)

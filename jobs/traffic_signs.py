"""Traffic signs with a Bayesian neural network (chapter 8): uncertainty a driver-assistance team can act on.

Book: "TensorFlow Machine Learning Projects" (Packt, 2018), chapter 8. A LeNet whose
weights are distributions (TensorFlow Probability's Flipout layers, trained by
variational inference on the negative ELBO, KL divided by the number of training
images) classifies GTSRB's 43 sign classes from 32x32 grey images; 50 Monte-Carlo
passes per test image give ~89% test accuracy of the averaged prediction after
1,000 steps of 128 (the book's "1,000 epochs", Adam 0.001), and per-image
histograms of the 50 sampled classes show four case studies.

This job trains that network data-parallel through tfos_lib, runs the 50 passes in
Spark executors over a DataFrame of images, and checks the uncertainty instead of
only drawing it: expected calibration error and a reliability diagram, accuracy
when the most uncertain images go to a human, and the predictive entropy of images
that are not signs (photo crops, noise) against test signs (AUROC). A deterministic
LeNet trained the same way is the baseline.

Data: GTSRB as distributed (``Final_Training/Images/000NN/*.ppm`` with ``GT-000NN.csv``,
``Final_Test/Images`` and ``GT-final_test.csv``) from ``--data-dir``, cropped to each
ROI, with the book's preprocessing (see :mod:`tfos_lib.datasets.gtsrb`). Training and
validation are split by track (the frames of one track are near duplicates).
Without ``--data-dir`` the job renders the 43 signs into ``default-gtsrb`` in the
same layout (reused when present), under ``--output-dir`` when that is a local path,
else in a local scratch folder (:func:`tfos_lib.storage.default_data_dir`).

Run::

    ./spark-submit.sh traffic_signs                                       # generated signs, 1 worker
    ./spark-submit.sh traffic_signs -- --data-dir /data/GTSRB
    ./spark-submit.sh traffic_signs --master 'local-cluster[2,1,2048]' -- --num-workers 2

Writes to ``--output-dir`` (a local path or a URI): metrics.json,
models/traffic_signs/<version>/ (the Flipout LeNet) and models/traffic_signs_baseline/<version>/,
SavedModels in the TF Serving layout (input ``inputs``: 1,024 grey values in [0, 1],
the preprocessing of :func:`tfos_lib.datasets.gtsrb.preprocess`; output ``outputs``:
43 logits, one Monte-Carlo pass for the Flipout model), training_curves.png,
uncertainty.png, case_studies.png.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

import tfos_lib
from tfos_lib import job, report, storage
from tfos_lib.datasets import gtsrb
from tfos_lib.export.saved_model import export_saved_model
from tfos_lib.ml import bayesian, inference

BOOK_REFERENCE = {
    "mc_test_accuracy": 0.89,
    "mc_samples": 50,
    "steps": 1000,
    "batch_size": 128,
    "train_images": "26,640 stated (the official training set has 39,209)",
    "test_images": 12630,
    "source": "chapter 8, L4255, L4446-4481; real GTSRB, no calibration or OOD figures reported",
}
SUMMARY = ["mean_probs", "entropy", "mutual_information", "sampled_class"]
MODEL_NAMES = {True: "traffic_signs", False: "traffic_signs_baseline"}  # by is_bayesian


@dataclass(frozen=True)
class Config(job.TrainingConfig):
    output_dir: str = job.option("output/traffic_signs", "where results go")
    batch_size: int = job.option(128, "global batch size (the book's: 128)", min=1)
    steps: int = job.option(1000, "optimizer steps in all (the book's 1,000 'epochs' are steps)", min=1)
    epochs: int = job.option(10, "the steps are cut into this many epochs: a checkpoint and a validation score each", min=1)
    learning_rate: float = job.option(0.001, "Adam's learning rate (the book's)", greater_than=0)
    mc_samples: int = job.option(50, "Monte-Carlo passes per test image (the book's: 50)", min=1)
    validation_fraction: float = job.option(0.2, "share of training tracks held out", greater_than=0, less_than=1)
    max_bad_fraction: float = job.option(0.01, "stop when more than this share of rows is unusable", min=0, max=1)
    ood_images: int = job.option(400, "out-of-distribution images (photo crops and noise)", min=2)
    baseline: bool = job.option(True, "also train the deterministic LeNet")
    default_tracks: int = job.option(15, "generated data: training tracks per class", min=2)
    default_frames: int = job.option(10, "generated data: frames per track", min=1)
    default_test_tracks: int = job.option(4, "generated data: test tracks per class", min=1)

    def __post_init__(self):
        super().__post_init__()
        if self.steps < self.epochs:
            raise ValueError(f"--steps {self.steps} must be >= --epochs {self.epochs} (every epoch takes a step).")


def load_data(spark, cfg: Config):
    """Reads (or generates, then reads) GTSRB; returns ``(train, validation, test, ood, data_info)`` DataFrames."""
    from pyspark.sql import functions as F

    data_dir, info = cfg.data_dir, {}
    if not data_dir:
        conf = dict(spark.sparkContext.getConf().getAll())
        data_dir = storage.default_data_dir(cfg.output_dir, "default-gtsrb", conf)
        info = gtsrb.write_synthetic_gtsrb(data_dir, cfg.default_tracks, cfg.default_frames, cfg.default_test_tracks,
                                           seed=cfg.seed)
    info = {"source": f"gtsrb:{cfg.data_dir}" if cfg.data_dir else "generated-gtsrb-pictograms", "generated": info}
    # The reader's join leaves spark.sql.shuffle.partitions (200) tiny partitions: a few are enough.
    partitions = max(2, spark.sparkContext.defaultParallelism)
    splits = {split: gtsrb.read_gtsrb(spark, data_dir, split).coalesce(partitions).cache() for split in ("train", "test")}
    for split, df in splits.items():
        bad = df.where(F.col("error").isNotNull()).select("key", "error").orderBy("key").collect()
        total = df.count()
        reasons: dict[str, int] = {}
        for row in bad:
            reason = ("ROI outside the image" if row.error.startswith("ROI") else
                      "class id outside 0-42" if row.error.startswith("class id") else row.error.split(":")[0])
            reasons[reason] = reasons.get(reason, 0) + 1
        info[f"{split}_rows"], info[f"{split}_bad"] = total - len(bad), reasons
        info[f"{split}_bad_files"] = [f"{r.key}: {r.error}" for r in bad[:50]]
        if total == 0 or len(bad) > cfg.max_bad_fraction * total:
            listed = "; ".join(info[f"{split}_bad_files"][:10])
            raise ValueError(
                f"{len(bad)} of {total} {split} rows in {data_dir} are unusable ({reasons}), more than "
                f"--max-bad-fraction {cfg.max_bad_fraction:g}: {listed}. Fix or remove those files/CSV rows, or raise "
                "--max-bad-fraction to skip them."
            )
    good = {split: df.where(F.col("error").isNull()).drop("error") for split, df in splits.items()}
    train, validation = gtsrb.split_by_track(good["train"], cfg.validation_fraction, cfg.seed)
    ood_files = gtsrb.out_of_distribution_images(cfg.ood_images, seed=cfg.seed)
    ood = spark.createDataFrame([(f"ood-{i:04d}", data) for i, data in enumerate(ood_files)], "key string, content binary")
    ood = ood.repartition(partitions)
    none = F.lit(None).cast("int")
    ood = ood.select("key", gtsrb.decode_images()(F.col("content"), none, none, none, none)["image"].alias("image"))
    return train.cache(), validation.cache(), good["test"], ood, info


def train_fn(ctx: tfos_lib.WorkerContext, cfg: Config, is_bayesian: bool, num_train: int) -> dict:
    """Runs on every worker: trains one LeNet (Flipout or plain) together; the chief saves it."""
    tf = tfos_lib.import_tensorflow()
    tf.keras.utils.set_random_seed(cfg.seed)  # same initial weights on every worker
    build = functools.partial(bayesian.build_lenet, gtsrb.NUM_CLASSES, is_bayesian, num_train,
                              learning_rate=cfg.learning_rate)
    with ctx.strategy().scope():  # tfos: variables mirrored across workers
        model = build()
    dataset = ctx.distributed_dataset("train", "image", "label", global_batch_size=cfg.batch_size, seed=cfg.seed + ctx.rank)
    held_out = None
    if ctx.is_chief:
        local_model = build()  # a plain copy: the chief alone scores and saves it
        validation = ctx.data("validation")
        x_val, y_val = validation.column("image"), validation.column("label")

        def held_out():  # one stochastic pass for the Bayesian model: a cheap running figure
            local_model.set_weights(model.get_weights())
            logits = np.concatenate([local_model(x_val[i : i + 1000]).numpy() for i in range(0, len(x_val), 1000)])
            return {"accuracy": float(np.mean(logits.argmax(axis=1) == y_val))}

    callbacks = ctx.callbacks(cfg.batch_size, cfg.checkpoint_every_steps, held_out=held_out)  # tfos: resume + progress
    steps_per_epoch = cfg.steps // cfg.epochs
    history, seconds = ctx.fit(model, dataset, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks)
    if not ctx.is_chief:
        return {}
    local_model.set_weights(model.get_weights())
    export_saved_model(local_model, f"{ctx.output_dir}/models", MODEL_NAMES[is_bayesian],
                       preprocessing="1,024 grey values in [0, 1] (tfos_lib.datasets.gtsrb.preprocess); outputs: "
                                     "43 logits" + (", one Monte-Carlo pass per call" if is_bayesian else ""))
    examples = steps_per_epoch * cfg.epochs * cfg.batch_size
    return {"history": history, "train_seconds": seconds, "steps": steps_per_epoch * cfg.epochs,
            "examples_per_second": examples / seconds}


def score(df, cfg: Config, is_bayesian: bool) -> dict[str, np.ndarray]:
    """Scores ``df`` (``key``, ``image``[, ``label``]) in the executors; returns the columns on the driver.

    Bayesian: ``cfg.mc_samples`` passes per image, summarised in the executors
    (:func:`bayesian.mc_summary`). Deterministic: one pass, the same summary with one sample.
    """
    path = storage.join(cfg.output_dir, "models", MODEL_NAMES[is_bayesian])  # its latest version, local or URI
    loader = functools.partial(bayesian.load_lenet, num_classes=gtsrb.NUM_CLASSES, bayesian=is_bayesian)
    scored = inference.predict(
        df, path, ["image"], output_col="mc", output_names=SUMMARY, batch_size=256, loader=loader,
        samples=cfg.mc_samples if is_bayesian else 1, seed=cfg.seed,
        summarize=functools.partial(bayesian.mc_summary, from_logits=True),
    )
    columns = [c for c in ("key", "label", "image") if c in df.columns]
    rows = scored.select(*columns, *[f"mc.{name}" for name in SUMMARY]).orderBy("key").collect()
    out = {name: np.array([row[name] for row in rows]) for name in columns + SUMMARY}
    out["entropy"], out["mutual_information"] = out["entropy"][:, 0], out["mutual_information"][:, 0]
    return out


def evaluate(name: str, test: dict, ood: dict) -> dict:
    """Accuracy, calibration, coverage and OOD detection of one model's scores."""
    labels = test["label"]
    predicted = test["mean_probs"].argmax(axis=1)
    ece, bins = bayesian.expected_calibration_error(test["mean_probs"], labels)
    return {
        "model": name,
        "test_accuracy": float(np.mean(predicted == labels)),
        "ece": ece,
        "reliability": bins,
        "coverage": bayesian.coverage_curve(test["entropy"], predicted == labels),
        "ood_auroc_entropy": bayesian.auroc(test["entropy"], ood["entropy"]),
        "mean_entropy": {"test": float(test["entropy"].mean()), "ood": float(ood["entropy"].mean())},
    }


def case_studies(test: dict) -> list[tuple[int, str]]:
    """The book's cases, each the first image (by file) that fits: all passes right; mean right with some passes
    wrong (cases 1, 2); mean wrong with some passes right (case 3); mean wrong, no pass right (case 4)."""
    labels, mean_class = test["label"], test["mean_probs"].argmax(axis=1)
    right_passes = (test["sampled_class"] == labels[:, None]).sum(axis=1)
    passes = test["sampled_class"].shape[1]
    wanted = [("all passes right", (mean_class == labels) & (right_passes == passes)),
              ("case 1-2: mean right, some passes wrong", (mean_class == labels) & (right_passes < passes)),
              ("case 3: mean wrong, some passes right", (mean_class != labels) & (right_passes > 0)),
              ("case 4: mean wrong, no pass right", (mean_class != labels) & (right_passes == 0))]
    chosen = []
    for title, mask in wanted:
        found = np.flatnonzero(mask)
        if len(found):
            i = int(found[0])
            chosen.append((i, f"{title}: label {labels[i]:02d}, mean prediction {mean_class[i]:02d}"))
    return chosen


def main(argv=None) -> dict:
    cfg = job.parse_config(Config, argv, description=__doc__.split("\n\n")[0])
    log = job.setup_logging()
    run = job.JobRun("traffic_signs", cfg)
    spark = job.spark_session("traffic_signs")
    train, validation, test, ood, data = load_data(spark, cfg)
    num_train = train.count()
    data |= {"train_images": num_train, "validation_images": validation.count(),
             "train_tracks": train.select("track").distinct().count(),
             "validation_tracks": validation.select("track").distinct().count()}
    log.info("training on %s: %d train / %d validation images (split by track), %d test", data["source"],
             num_train, data["validation_images"], data["test_rows"])
    inputs = {"train": train.select("image", "label"), "validation": tfos_lib.Input(validation.select("image", "label"),
                                                                                    shard=False)}
    trained = {"bayesian": job.launch(train_fn, cfg, inputs, spark, extra_args=(True, num_train))}
    if cfg.baseline:
        trained["deterministic"] = job.launch(train_fn, cfg, inputs, spark, extra_args=(False, num_train))
    scores = {name: (score(test, cfg, name == "bayesian"), score(ood, cfg, name == "bayesian")) for name in trained}
    evaluations = {name: evaluate(name, *pair) for name, pair in scores.items()}
    bnn_test, bnn_ood = scores["bayesian"]
    pass_accuracies = np.mean(bnn_test["sampled_class"] == bnn_test["label"][:, None], axis=0)
    cases = case_studies(bnn_test)

    report.plot_curves(f"{cfg.output_dir}/training_curves.png",
                       {f"{name} {k}": v for name, r in trained.items() for k, v in r["history"].items()},
                       title="Traffic signs: training loss/accuracy and validation accuracy (one pass)")
    bayesian.plot_uncertainty(
        f"{cfg.output_dir}/uncertainty.png", pass_accuracies,
        {n: e["reliability"] for n, e in evaluations.items()}, {n: e["coverage"] for n, e in evaluations.items()},
        {"test signs": bnn_test["entropy"], "not signs (OOD)": bnn_ood["entropy"]},
        title=f"Flipout LeNet, {cfg.mc_samples} MC passes: MC accuracy {evaluations['bayesian']['test_accuracy']:.3f}",
    )
    if cases:
        index = [i for i, _ in cases]
        bayesian.plot_case_studies(f"{cfg.output_dir}/case_studies.png", bnn_test["image"][index],
                                   bnn_test["sampled_class"][index], bnn_test["label"][index], [t for _, t in cases],
                                   gtsrb.NUM_CLASSES)
    bnn = evaluations["bayesian"]
    results = {
        "mc_test_accuracy": bnn["test_accuracy"],
        "mc_samples": cfg.mc_samples,
        "pass_accuracy": {"mean": float(pass_accuracies.mean()), "min": float(pass_accuracies.min()),
                          "max": float(pass_accuracies.max())},
        "table": [{k: e[k] for k in ("model", "test_accuracy", "ece", "ood_auroc_entropy")} for e in evaluations.values()]
        + [{"model": "book (real GTSRB)", "test_accuracy": BOOK_REFERENCE["mc_test_accuracy"], "ece": None,
            "ood_auroc_entropy": None}],
        "ood_auroc_mutual_information": bayesian.auroc(bnn_test["mutual_information"], bnn_ood["mutual_information"]),
        "evaluations": evaluations,
        "case_studies": [title for _, title in cases],
        "training": {name: {k: v for k, v in r.items()} for name, r in trained.items()},
    }
    metrics = run.write_metrics(data=data, results=results, book_reference=BOOK_REFERENCE,
                                resolved={"steps_per_epoch": cfg.steps // cfg.epochs})
    for row in results["table"]:
        log.info("%-20s accuracy %.4f  ECE %s  OOD AUROC %s", row["model"], row["test_accuracy"], row["ece"],
                 row["ood_auroc_entropy"])
    log.info("wrote %s/metrics.json", cfg.output_dir)
    return metrics


if __name__ == "__main__":
    job.run_main(main)

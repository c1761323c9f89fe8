"""Buses vs cars: transfer learning with an image featurizer and MLlib, in one Spark ML Pipeline.

Book: "TensorFlow Machine Learning Projects" (Packt, 2018), chapter 12, second half.
The book read 49 bus and 41 car photos with ``ImageSchema.readImages``, split each
class 60/40 (``randomSplit`` seeds 123 for buses, 122 for cars), and fitted
``Pipeline([DeepImageFeaturizer(modelName="InceptionV3"), LogisticRegression(maxIter=30)])``
with Databricks' sparkdl: 100% accuracy on 36 test images (22 buses, 14 cars),
with InceptionV3's ImageNet weights. sparkdl and ImageSchema are gone; this job
does the same with Spark's ``binaryFile`` source and :class:`DeepImageFeaturizer`
(``tf.keras.applications`` run through ``predict_batch_udf``).

Weights: nothing may be downloaded, so ``--weights`` takes a local no-top weights
file of ``--backbone`` (e.g. Keras' ``inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5``).
Without one (``--weights none``, the default) the backbone is randomly initialised
and metrics.json says so: such features are far weaker than ImageNet ones.

Data: ``--data-dir`` holds one folder per class (``buses/``, ``cars/``); the label
is the folder (classes sorted: buses 0, cars 1, as in the book). Files that are
not decodable images are skipped and listed in metrics.json. Without
``--data-dir`` the job draws synthetic buses and cars (JPEG) into ``default-images``
under ``--output-dir`` when that is a local path, else in a local scratch folder
(:func:`tfos_lib.storage.default_data_dir`).

Run::

    ./spark-submit.sh transfer_learning                                       # synthetic images
    ./spark-submit.sh transfer_learning -- --data-dir ../shared/data/book/ch12  # the book's photos
    ./spark-submit.sh transfer_learning -- --data-dir ch12 --weights inception_v3_notop.h5
    ./spark-submit.sh transfer_learning --master 'local-cluster[2,1,2048]' -- --classifier keras --num-workers 2

Writes to ``--output-dir`` (a local path, or a URI Spark's Hadoop can write:
``s3a://`` needs the hadoop-aws jar, refused at start without it): metrics.json,
pipeline_model/ (a Spark ML PipelineModel),
test_predictions.png (test images with predicted and true class), confusion_matrix.png.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import tfos_lib
from tfos_lib import job, report, storage
from tfos_lib.datasets import image_folders
from tfos_lib.launcher import BACKENDS
from tfos_lib.ml.image_featurizer import BACKBONES, DeepImageFeaturizer

BOOK_REFERENCE = {
    "test_accuracy": 1.0,
    "test_images": 36,
    "test_per_class": {"buses": 22, "cars": 14},
    "images": {"buses": 49, "cars": 41},
    "model": "sparkdl DeepImageFeaturizer InceptionV3 (ImageNet weights) + LogisticRegression(maxIter=30)",
    "source": "chapter 12, L7041-7091",
}


@dataclass(frozen=True)
class Config(job.JobConfig):
    """Options. Not a ``job.TrainingConfig``: the book's pipeline trains no TensorFlow model, and
    ``--classifier keras`` trains through ``KerasEstimator``, which takes workers, backend, epochs and
    batch size but none of the launcher's restart, stall or checkpoint options."""

    output_dir: str = job.option("output/transfer_learning", "where results go")
    backbone: str = job.option("InceptionV3", "Keras application without its top", choices=tuple(BACKBONES))
    weights: str = job.option("none", "local no-top weights file of --backbone; 'none': random initialisation (reported)")
    image_size: int = job.option(0, "input height/width; 0: the backbone's own (InceptionV3: 299)", min=0)
    alpha: float = job.option(1.0, "MobileNetV2 width multiplier", greater_than=0)
    classifier: str = job.option(
        "logreg",
        "logreg: the book's MLlib LogisticRegression; keras: a softmax layer trained by tfos_lib workers",
        choices=("logreg", "keras"),
    )
    max_iter: int = job.option(30, "LogisticRegression iterations (the book's: 30)", min=1)
    train_fraction: float = job.option(
        0.6, "share of each class used for training (the book's: 0.6)", greater_than=0, less_than=1
    )
    split_seed: int = job.option(
        123, "randomSplit seed of the first class; class i uses split_seed - i (book: 123, 122)"
    )
    batch_size: int = job.option(16, "images per backbone call; for --classifier keras also its global batch", min=1)
    num_workers: int = job.option(1, "TensorFlow workers of --classifier keras (one Spark task slot each)", min=1)
    backend: str = job.option("barrier", "how the workers of --classifier keras are launched", choices=BACKENDS)
    epochs: int = job.option(50, "epochs of --classifier keras", min=1)
    default_images: int = job.option(30, "synthetic images per class without --data-dir", min=1)
    grid_images: int = job.option(48, "at most this many test images in test_predictions.png", min=1)

    def __post_init__(self):
        super().__post_init__()
        if self.classifier == "keras":
            job.check_batch_split(self.batch_size, self.num_workers)


def build_pipeline(cfg: Config, num_classes: int):
    """The book's Pipeline: featurizer then classifier. Runs on the driver; stages run in executors."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import StandardScaler

    featurizer = DeepImageFeaturizer(
        inputCol="content",
        outputCol="features",
        modelName=cfg.backbone,
        weights=cfg.weights,
        imageSize=cfg.image_size,
        alpha=cfg.alpha,
        batchSize=cfg.batch_size,
        seed=cfg.seed,
    )
    if cfg.classifier == "logreg":
        return Pipeline(stages=[featurizer, LogisticRegression(maxIter=cfg.max_iter, labelCol="label")])
    from tfos_lib.ml.estimator import KerasEstimator

    # Random backbones give features of very different scales; the softmax layer
    # needs them standardised (MLlib's LogisticRegression standardises internally).
    return Pipeline(
        stages=[
            featurizer,
            StandardScaler(inputCol="features", outputCol="scaled", withMean=True),
            KerasEstimator(
                buildFn=make_build_fn(num_classes),
                featuresCol="scaled",
                labelCol="label",
                numWorkers=cfg.num_workers,
                backend=cfg.backend,
                epochs=cfg.epochs,
                batchSize=cfg.batch_size,
                seed=cfg.seed,
                modelDir=storage.join(cfg.output_dir, "keras_classifier"),
            ),
        ]
    )


def make_build_fn(num_classes: int):
    """The Keras classifier for ``--classifier keras``: one softmax layer (multinomial logistic regression)."""

    def build_model():
        tf = tfos_lib.import_tensorflow()
        model = tf.keras.Sequential([tf.keras.layers.Dense(num_classes, activation="softmax")])
        model.compile(tf.keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    return build_model


def load_images(spark, cfg: Config):
    """Reads the class folders; returns ``(usable images DataFrame, classes, skipped files, source)``."""
    from pyspark.sql import functions as F

    if cfg.data_dir:
        data_dir, source = cfg.data_dir, f"image-folders:{cfg.data_dir}"
    else:
        conf = dict(spark.sparkContext.getConf().getAll())
        data_dir = storage.default_data_dir(cfg.output_dir, "default-images", conf)
        image_folders.write_synthetic_image_folders(data_dir, per_class=cfg.default_images, seed=cfg.seed)
        source = "synthetic-buses-and-cars"
    folders = image_folders.read_image_folders(spark, data_dir)
    images = folders.df.cache()  # decoding checks run once
    skipped = [row.asDict() for row in images.where(F.col("error").isNotNull()).select("path", "error").collect()]
    skipped += [{"path": path, "error": "empty file"} for path in folders.empty_files]
    return images.where(F.col("error").isNull()).drop("error"), folders.classes, skipped, source


def split(images, classes, cfg: Config):
    """The book's split: each class 60/40 on its own, seeds 123, 122, ... Returns ``(train, test)``."""
    from pyspark.sql import DataFrame
    from pyspark.sql import functions as F

    train_parts, test_parts = [], []
    for index in range(len(classes)):
        # One partition, sorted by path: randomSplit's result then depends on the seed
        # and the files only, not on how many cores read them.
        rows = images.where(F.col("label") == index).coalesce(1).sortWithinPartitions("path")
        train, test = rows.randomSplit([cfg.train_fraction, 1 - cfg.train_fraction], seed=cfg.split_seed - index)
        train_parts.append(train)
        test_parts.append(test)
    return functools.reduce(DataFrame.unionByName, train_parts), functools.reduce(DataFrame.unionByName, test_parts)


def main(argv=None) -> dict:
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.sql import functions as F

    cfg = job.parse_config(Config, argv, description=__doc__.split("\n\n")[0])
    log = job.setup_logging()
    spark = job.spark_session("transfer_learning")
    storage.check_spark_writable(spark, cfg.output_dir)  # before the run lock: Spark writes the model
    run = job.JobRun("transfer_learning", cfg, training=cfg.classifier == "keras")
    images, classes, skipped, source = load_images(spark, cfg)
    for row in skipped:
        log.warning("skipping %s: %s", row["path"], row["error"])
    train, test = split(images, classes, cfg)
    train, test = train.cache(), test.cache()
    counts = {
        name: dict(zip(("train", "test"), (part.where(F.col("label") == i).count() for part in (train, test))))
        for i, name in enumerate(classes)
    }
    if any(c["train"] == 0 for c in counts.values()) or len(classes) < 2:
        raise ValueError(
            f"every class needs training images; found {counts} in {cfg.data_dir or 'the default images'} "
            "(corrupt files are skipped). Add images or use fewer, fuller class folders."
        )
    pipeline = build_pipeline(cfg, len(classes))
    featurizer = pipeline.getStages()[0]
    log.info("featurizing with %s (%s); %s", cfg.backbone, featurizer.describe()["weights"], counts)
    fit_started = time.perf_counter()
    model = pipeline.fit(train)
    fit_seconds = time.perf_counter() - fit_started
    predictions = model.transform(test).select("path", "label", "prediction", "content").cache()
    accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(predictions)
    crosstab = {
        row["prediction_label"]: {k: v for k, v in row.asDict().items() if k != "prediction_label"}
        for row in predictions.crosstab("prediction", "label").collect()
    }
    model.write().overwrite().save(storage.join(cfg.output_dir, "pipeline_model"))

    rows = predictions.orderBy("label", "path").collect()
    y_true, y_pred = [r.label for r in rows], [int(r.prediction) for r in rows]
    confusion = report.plot_confusion_matrix(
        f"{cfg.output_dir}/confusion_matrix.png",
        y_true,
        y_pred,
        list(classes),
        title=f"{cfg.backbone} + {cfg.classifier}: test accuracy {accuracy:.3f}",
    )
    shown = rows[: cfg.grid_images]
    report.plot_image_grid(
        f"{cfg.output_dir}/test_predictions.png",
        image_folders.thumbnails([r.content for r in shown]),
        [
            ("" if r.label == int(r.prediction) else "WRONG ")
            + f"pred {classes[int(r.prediction)]}\ntrue {classes[r.label]}"
            for r in shown
        ],
        ncols=8,
    )
    backbone = featurizer.describe()
    results = {
        "test_accuracy": accuracy,
        "test_images": len(rows),
        "correct": sum(t == p for t, p in zip(y_true, y_pred)),
        "crosstab": crosstab,
        "confusion_matrix": confusion,
        "classes": list(classes),
        "backbone": backbone,
        "weights_note": (
            f"pretrained weights from {backbone['weights']}"
            if backbone["pretrained"]
            else "no pretrained weights: the backbone was randomly initialised (nothing may be downloaded), so these "
            "features are much weaker than the book's ImageNet InceptionV3 and the accuracy is not comparable"
        ),
        "classifier": cfg.classifier,
        "fit_seconds": fit_seconds,
    }
    metrics = run.write_metrics(
        data={"source": source, "per_class": counts, "skipped_files": len(skipped), "skipped": skipped},
        results=results,
        book_reference=BOOK_REFERENCE,
    )
    log.info("test accuracy %.4f (%d/%d), %d file(s) skipped; wrote %s/metrics.json",
             accuracy, results["correct"], len(rows), len(skipped), cfg.output_dir)
    return metrics


if __name__ == "__main__":
    job.run_main(main)

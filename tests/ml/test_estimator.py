"""KerasEstimator / KerasModel: fit through tfos_lib.run, transform, save, load, inside a Pipeline."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import tfos_lib
from tfos_lib.ml.estimator import KerasEstimator, KerasModel


def build_classifier():
    tf = tfos_lib.import_tensorflow()
    model = tf.keras.Sequential(
        [tf.keras.layers.Dense(8, activation="relu", input_shape=(2,)), tf.keras.layers.Dense(2, activation="softmax")]
    )
    model.compile(tf.keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def build_regressor():
    tf = tfos_lib.import_tensorflow()
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(3,))])
    model.compile(tf.keras.optimizers.SGD(0.1), "mse")
    return model


def build_uncompiled():
    tf = tfos_lib.import_tensorflow()
    return tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(3,))])


def _two_blobs(spark, rows=120, seed=0):
    """Two separable classes: label 1 where a + b > 0."""
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(rows, 2))
    labels = (points.sum(axis=1) > 0).astype(int)
    return spark.createDataFrame(
        [(float(a), float(b), int(c)) for (a, b), c in zip(points, labels)], "a double, b double, label int"
    )


def test_pipeline_fit_transform_save_load_with_two_barrier_workers(spark, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.feature import VectorAssembler

    df = _two_blobs(spark)
    pipeline = Pipeline(
        stages=[
            VectorAssembler(inputCols=["a", "b"], outputCol="features"),
            KerasEstimator(
                buildFn=build_classifier, numWorkers=2, epochs=8, batchSize=20, modelDir=str(tmp_path / "fit")
            ),
        ]
    )
    fitted = pipeline.fit(df)
    first = fitted.transform(df).select("output", "prediction", "label").collect()
    keras_stage = fitted.stages[1]
    assert isinstance(keras_stage, KerasModel)
    assert len(keras_stage.history["loss"]) == 8 and keras_stage.history["loss"][-1] < keras_stage.history["loss"][0]
    assert np.mean([r.prediction == r.label for r in first]) >= 0.9
    assert all(len(r.output) == 2 for r in first)

    fitted.write().overwrite().save(str(tmp_path / "pipeline_model"))
    shutil.rmtree(tmp_path / "fit")  # the saved pipeline must carry its own copy of the SavedModel
    loaded = PipelineModel.load(str(tmp_path / "pipeline_model"))
    assert loaded.stages[1].model_path.startswith(str(tmp_path / "pipeline_model"))
    again = loaded.transform(df).select("output", "prediction", "label").collect()
    assert [r.output for r in again] == [r.output for r in first]
    assert [r.prediction for r in again] == [r.prediction for r in first]

    # The unfitted Pipeline saves too: its estimator keeps every Param and the build function.
    pipeline.write().overwrite().save(str(tmp_path / "pipeline"))
    estimator = Pipeline.load(str(tmp_path / "pipeline")).getStages()[1]
    assert isinstance(estimator, KerasEstimator)
    assert (estimator.getNumWorkers(), estimator.getEpochs(), estimator.getBatchSize()) == (2, 8, 20)
    assert estimator.getBuildFn()().count_params() == build_classifier().count_params()


def test_model_alone_round_trip_with_local_backend(spark, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = x @ np.array([1.0, -2.0, 0.5], dtype=np.float32) + 0.3
    df = spark.createDataFrame([(r.tolist(), float(t)) for r, t in zip(x, y)], "x array<float>, y double")
    estimator = KerasEstimator(
        buildFn=build_regressor,
        featuresCol="x",
        labelCol="y",
        backend="local",
        epochs=30,
        batchSize=16,
        outputCol="raw",
        predictionCol="yhat",
        predictBatchSize=10,
    )
    model = estimator.fit(df)
    first = model.transform(df).select("raw", "yhat", "y").collect()
    # One output value: the prediction is that value (regression), not an argmax.
    assert all(r.yhat == pytest.approx(r.raw[0]) for r in first)
    assert np.mean([(r.yhat - r.y) ** 2 for r in first]) < 0.05

    model.save(str(tmp_path / "keras_model"))
    shutil.rmtree(model.model_path)  # the saved stage must carry its own copy of the SavedModel
    loaded = KerasModel.load(str(tmp_path / "keras_model"))
    assert (loaded.getFeaturesCol(), loaded.getPredictionCol(), loaded.getOutputCol()) == ("x", "yhat", "raw")
    assert loaded.getPredictBatchSize() == 10 and loaded.history == model.history
    again = loaded.transform(df).select("raw", "yhat", "y").collect()
    assert [r.raw for r in again] == [r.raw for r in first]


def test_uncompiled_model_is_refused_with_the_fix(spark, tmp_path):
    df = spark.createDataFrame([([1.0, 2.0, 3.0], 1.0), ([0.0, 1.0, 0.0], 0.0)], "x array<float>, y double")
    estimator = KerasEstimator(buildFn=build_uncompiled, featuresCol="x", labelCol="y", backend="local")
    with pytest.raises(Exception, match=r"compiled tf.keras model.*model.compile"):
        estimator.fit(df)


def test_bad_params_and_columns_are_named(spark):
    df = spark.createDataFrame([("a", [1.0], "x")], "name string, features array<float>, label string")
    with pytest.raises(ValueError, match="buildFn is not set"):
        KerasEstimator().fit(df)
    with pytest.raises(ValueError, match="numWorkers must be >= 1.*backend must be one of"):
        KerasEstimator(buildFn=build_regressor, numWorkers=0, backend="mpi").fit(df)
    with pytest.raises(ValueError, match="featuresCol='name' has type string.*VectorAssembler"):
        KerasEstimator(buildFn=build_regressor, featuresCol="name").fit(df)
    with pytest.raises(ValueError, match="labelCol='label' has type string.*StringIndexer"):
        KerasEstimator(buildFn=build_regressor).fit(df)
    with pytest.raises(ValueError, match="holds no model"):
        KerasModel().transform(df)
    with pytest.raises(TypeError, match="buildFn must be a function"):
        KerasEstimator(buildFn=42)


def test_model_dir_on_s3_fit_transform_and_save_elsewhere(s3, spark, tmp_path):
    """modelDir is a URI: the chief's export goes to the S3 server, executors load it from there; the fitted
    stage saves to a local path with its own copy; a save Spark's Hadoop cannot write (s3a without the
    hadoop-aws jar) is refused before anything is written, naming the jar."""
    from tfos_lib import storage

    rng = np.random.default_rng(2)
    x = rng.normal(size=(48, 3)).astype(np.float32)
    y = x @ np.array([1.0, -2.0, 0.5], dtype=np.float32) + 0.3
    df = spark.createDataFrame([(r.tolist(), float(t)) for r, t in zip(x, y)], "x array<float>, y double")
    model = KerasEstimator(buildFn=build_regressor, featuresCol="x", labelCol="y", backend="local", epochs=20,
                           batchSize=16, modelDir="s3a://runs/estimator").fit(df)
    assert model.model_path == "s3a://runs/estimator/model"
    assert "model/1/saved_model.pb" in storage.list_files("s3a://runs/estimator")
    first = [r.prediction for r in model.transform(df).select("prediction").collect()]
    assert np.mean([(p - t) ** 2 for p, t in zip(first, y)]) < 0.1

    model.save(str(tmp_path / "stage"))
    again = KerasModel.load(str(tmp_path / "stage"))
    assert (tmp_path / "stage" / "model" / "1" / "saved_model.pb").exists()
    assert [r.prediction for r in again.transform(df).select("prediction").collect()] == first
    with pytest.raises(ValueError, match=r"Spark cannot write to 's3a://runs/stage'.*hadoop-aws"):
        model.save("s3a://runs/stage")
    assert storage.list_files("s3a://runs/stage") == []

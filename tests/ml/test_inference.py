"""Batch inference over DataFrames (tfos_lib.ml.inference): Keras and plain SavedModels, several inputs and outputs."""

from __future__ import annotations

import os

import numpy as np
import pytest

import tfos_lib
from tfos_lib.ml import inference


def _two_in_two_out_model(tf):
    """Inputs: a (2, 3) tensor and a scalar. Outputs: "scores" (2 values) and "total" (1 value)."""
    grid = tf.keras.Input((2, 3), name="grid")
    extra = tf.keras.Input((1,), name="extra")
    joined = tf.keras.layers.Concatenate()([tf.keras.layers.Flatten()(grid), extra])
    scores = tf.keras.layers.Dense(2, name="scores", kernel_initializer="glorot_uniform")(joined)
    total = tf.keras.layers.Dense(1, name="total", kernel_initializer="ones")(joined)
    return tf.keras.Model([grid, extra], [scores, total])


def test_keras_model_with_two_inputs_and_two_outputs_matches_model_predict(spark, tmp_path):
    tf = tfos_lib.import_tensorflow()
    tf.keras.utils.set_random_seed(0)
    model = _two_in_two_out_model(tf)
    model.save(tmp_path / "model", save_format="tf")
    rng = np.random.default_rng(0)
    grids, extras = rng.random((11, 6), dtype=np.float32), rng.random(11, dtype=np.float32)
    df = spark.createDataFrame(
        [(g.tolist(), float(e)) for g, e in zip(grids, extras)], "grid array<float>, extra float"
    ).coalesce(1)  # one task: only one Python worker pays for importing TensorFlow

    scored = (
        inference.predict(
            df,
            str(tmp_path / "model"),
            ["grid", "extra"],
            output_col="out",
            output_names=["scores", "total"],
            batch_size=4,
        )
        .select("out.scores", "out.total")
        .collect()
    )

    expected_scores, expected_total = model.predict([grids.reshape(-1, 2, 3), extras], verbose=0)
    np.testing.assert_allclose([r.scores for r in scored], expected_scores, rtol=1e-5)
    np.testing.assert_allclose([r.total for r in scored], expected_total, rtol=1e-5)
    # The kernel of "total" is all ones: the sum of every input value.
    np.testing.assert_allclose([r.total[0] for r in scored], grids.sum(axis=1) + extras, rtol=1e-5)


def test_plain_saved_model_signature_and_output_choice(spark, tmp_path):
    tf = tfos_lib.import_tensorflow()

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x):
            return {"double": 2.0 * x, "total": tf.reduce_sum(x, axis=1)}

    module = Doubler()
    tf.saved_model.save(module, str(tmp_path / "saved"), signatures={"serving_default": module.serve})
    df = spark.createDataFrame([([1.0, 2.0, 3.0],), ([4.0, 5.0, 6.0],)], "x array<float>").coalesce(1)

    rows = inference.predict(
        df, str(tmp_path / "saved"), ["x"], output_col="o", output_names=["total", "double"]
    ).collect()
    assert [r.o.total for r in rows] == [[6.0], [15.0]]
    assert [r.o.double for r in rows] == [[2.0, 4.0, 6.0], [8.0, 10.0, 12.0]]

    with pytest.raises(Exception, match=r"has 2 outputs .*pass output_names"):
        inference.predict(df, str(tmp_path / "saved"), ["x"]).collect()


def test_evaluate_classifier_counts_argmax_hits(spark, tmp_path):
    tf = tfos_lib.import_tensorflow()
    # An identity layer: the predicted class is the position of the largest input value.
    model = tf.keras.Sequential(
        [tf.keras.layers.Dense(3, input_shape=(3,), kernel_initializer="identity", use_bias=False)]
    )
    model.save(tmp_path / "identity", save_format="tf")
    rows = [([0.9, 0.1, 0.0], 0), ([0.0, 0.2, 0.8], 2), ([0.1, 0.7, 0.2], 1), ([0.5, 0.4, 0.1], 2)]
    df = spark.createDataFrame(rows, "features array<float>, label int").coalesce(1)

    result = inference.evaluate_classifier(df, str(tmp_path / "identity"), "features", "label", batch_size=3)
    assert result == {"accuracy": 0.75, "rows": 4, "correct": 3}


def test_argmax_takes_the_first_of_ties(spark):
    df = spark.createDataFrame([([0.1, 0.9, 0.9],), ([3.0],), ([-1.0, -2.0],)], "v array<float>")
    assert [r.p for r in df.select(inference.argmax("v").alias("p")).collect()] == [1.0, 0.0, 0.0]


def test_input_problems_are_named(spark, tmp_path):
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql import types as T

    schema = T.StructType(
        [T.StructField("v", VectorUDT()), T.StructField("nested", T.ArrayType(T.ArrayType(T.FloatType())))]
    )
    df = spark.createDataFrame([(Vectors.dense([1.0, 2.0]), [[1.0], [2.0]])], schema)
    with pytest.raises(ValueError, match=r"no column 'nope'.*\['nested', 'v'\]"):
        inference.predict(df, str(tmp_path), ["nope"])
    with pytest.raises(ValueError, match="'v' is an ML vector.*vector_to_array"):
        inference.predict(df, str(tmp_path), ["v"])
    with pytest.raises(ValueError, match="'nested' is a nested array.*F.flatten"):
        inference.predict(df, str(tmp_path), ["nested"])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        inference.predict_udf(str(tmp_path), input_sizes=[2], batch_size=0)


def _save_row_sum(path: str, width: int) -> str:
    """A plain SavedModel at ``path``: input ``x`` (``width`` floats per row), output ``total``, their sum."""
    tf = tfos_lib.import_tensorflow()

    class Total(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, width], tf.float32, name="x")])
        def serve(self, x):
            return {"total": tf.reduce_sum(x, axis=1)}

    module = Total()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def test_rows_the_model_cannot_take_stop_with_their_column_named(spark, tmp_path):
    from pyspark.sql import functions as F

    model = _save_row_sum(str(tmp_path / "saved"), width=2)
    ragged = spark.createDataFrame([([1.0, 2.0],), ([1.0, 2.0, 3.0],)], "x array<float>").coalesce(1)
    with pytest.raises(Exception, match=r"column 'x' holds arrays of 2 to 3 values; the first row had 2"):
        inference.predict(ragged, model, ["x"]).collect()
    holes = spark.createDataFrame([([1.0, 2.0],), (None,)], "x array<float>").coalesce(1)
    with pytest.raises(Exception, match=r"column 'x' has 1 null row\(s\).*dropna"):
        inference.predict(holes, model, ["x"]).collect()
    with pytest.raises(ValueError, match="output_col='x' is also an input column"):
        inference.predict(holes, model, ["x"], output_col="x")
    # An existing column of the output's name is replaced; the other columns pass through unchanged.
    scored = inference.predict(holes.dropna().withColumn("total", F.lit(1)), model, ["x"], output_col="total")
    assert scored.columns == ["x", "total"] and [r.total for r in scored.collect()] == [[3.0]]


def test_missing_model_names_the_path(spark, tmp_path):
    df = spark.createDataFrame([([1.0],)], "x array<float>")
    with pytest.raises(Exception, match=r"no model at .*does-not-exist"):
        inference.predict(df, str(tmp_path / "does-not-exist"), ["x"]).collect()


def test_the_model_is_loaded_once_per_python_worker_not_per_task_or_batch(spark, tmp_path, monkeypatch):
    _save_row_sum(str(tmp_path / "saved"), width=3)
    loads = tmp_path / "loads"
    make_predict_fn = inference.make_predict_fn

    def counting_make_predict_fn(*args, **kwargs):
        factory = make_predict_fn(*args, **kwargs)

        def counted():  # runs in the executors' Python workers: one line per model load
            with open(loads, "a") as out:
                out.write(f"{os.getpid()}\n")
            return factory()

        return counted

    monkeypatch.setattr(inference, "make_predict_fn", counting_make_predict_fn)
    from pyspark.sql import functions as F

    x = F.col("id").cast("float")
    df = spark.range(0, 400, 1, 8).select(F.array(x, x, x).alias("x"))  # 8 tasks, 40 batches of 10
    rows = inference.predict(df, str(tmp_path / "saved"), ["x"], output_col="total", batch_size=10).collect()
    assert sorted(r.total[0] for r in rows) == [3.0 * i for i in range(400)]
    pids = loads.read_text().split()
    assert 1 <= len(pids) == len(set(pids)) <= 2, pids  # local[2]: at most two Python workers, one load each

"""The TFLite exporter: three variants, int8 calibration, refusals; LiteRT scoring of a DataFrame in executors."""

from __future__ import annotations

import numpy as np
import pytest

import tfos_lib
from tfos_lib.export import saved_model, tflite
from tfos_lib.ml import inference


def _classifier(tf):
    tf.keras.utils.set_random_seed(0)
    layers = tf.keras.layers
    return tf.keras.Sequential([layers.InputLayer(input_shape=(16,)), layers.Rescaling(1 / 255),
                                layers.Reshape((4, 4, 1)), layers.Conv2D(4, 2, activation="relu"),
                                layers.Flatten(), layers.Dense(256, activation="relu"),
                                layers.Dense(3, activation="softmax")])


def _pixels(rows, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (rows, 16)).astype(np.float32)


def test_three_variants_agree_with_keras_and_int8_is_smallest(tmp_path):
    tf = tfos_lib.import_tensorflow()
    model = _classifier(tf)
    export = saved_model.export_saved_model(model, str(tmp_path), "m")
    x = _pixels(40)
    expected = model(x).numpy()
    sizes = {}
    for quantization in tflite.QUANTIZATIONS:
        written = tflite.convert(export, str(tmp_path / f"{quantization}.tflite"), quantization=quantization,
                                 representative_data=x, int8_io=quantization == "int8")
        sizes[quantization] = written["size_bytes"]
        run, shapes = tflite.batch_runner(tflite.interpreter(written["path"]), 1)
        assert shapes == [(16,)]
        (out,) = run([x]).values()
        assert out.shape == (40, 3)
        tolerance = {"float32": 1e-5, "float16": 1e-2, "int8": 0.05}[quantization]
        np.testing.assert_allclose(out, expected, atol=tolerance)
    # int8 inputs in the file itself, quantised by the runner.
    assert tflite.input_details(str(tmp_path / "int8.tflite"))[0]["dtype"] == np.int8
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]
    timing = tflite.latency(str(tmp_path / "int8.tflite"), x[:5])
    assert timing["images"] == 5 and 0 < timing["median_ms"] <= timing["p95_ms"]


def test_a_keras_model_converts_directly(tmp_path):
    tf = tfos_lib.import_tensorflow()
    model = _classifier(tf)
    written = tflite.convert(model, str(tmp_path / "k.tflite"))
    run, _ = tflite.batch_runner(tflite.interpreter(written["path"]), 1)
    np.testing.assert_allclose(next(iter(run([_pixels(3)]).values())), model(_pixels(3)).numpy(), atol=1e-5)


def test_bad_calibration_shape_and_missing_ops_are_refused(tmp_path):
    tf = tfos_lib.import_tensorflow()
    model = _classifier(tf)
    with pytest.raises(ValueError, match=r"calibration set has rows of shape \[9\].*shape \[16\]"):
        tflite.convert(model, str(tmp_path / "bad.tflite"), quantization="int8", representative_data=np.zeros((4, 9)))
    with pytest.raises(ValueError, match="needs representative_data"):
        tflite.convert(model, str(tmp_path / "bad.tflite"), quantization="int8")

    class Inverse(tf.keras.layers.Layer):
        def call(self, x):
            return tf.linalg.inv(x)

    inverting = tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=(2, 2)), Inverse()])
    with pytest.raises(tflite.UnsupportedOpsError, match=r"do not include tf\.MatrixInverse.*select_tf_ops=True"):
        tflite.convert(inverting, str(tmp_path / "inv.tflite"))
    assert not (tmp_path / "bad.tflite").exists() and not (tmp_path / "inv.tflite").exists()
    assert tflite.convert(inverting, str(tmp_path / "inv.tflite"), select_tf_ops=True)["size_bytes"] > 0


def test_dataframe_scoring_with_litert_in_executors_and_column_check(spark, tmp_path):
    tf = tfos_lib.import_tensorflow()
    model = _classifier(tf)
    x = _pixels(23, seed=1)
    path = tflite.convert(model, str(tmp_path / "m.tflite"), quantization="int8", representative_data=x,
                          int8_io=True)["path"]
    df = spark.createDataFrame([(row.tolist(), i) for i, row in enumerate(x)], "pixels array<float>, id int")
    rows = inference.predict(df.repartition(2), path, ["pixels"], output_col="p", batch_size=5).orderBy("id").collect()
    assert [r.id for r in rows] == list(range(23))
    np.testing.assert_allclose([r.p for r in rows], model(x).numpy(), atol=0.05)

    wrong = spark.createDataFrame([([1.0] * 9,)], "pixels array<float>")
    with pytest.raises(ValueError, match=r"takes rows of shape \[16\] \(16 values\), but 'pixels' holds arrays of 9"):
        inference.predict(wrong, path, ["pixels"])

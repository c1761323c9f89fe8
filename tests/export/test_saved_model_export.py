"""The TF Serving layout exporter: versions, the signature's names and values, preprocessing, the resolver."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tfos_lib
from tfos_lib.export import saved_model


def _classifier(tf):
    """Raw pixels (0..255, 12 values) -> 3 class probabilities, with scaling in the model."""
    tf.keras.utils.set_random_seed(0)
    layers = tf.keras.layers
    return tf.keras.Sequential([layers.InputLayer(input_shape=(12,), name="pixels"), layers.Rescaling(1 / 255),
                                layers.Reshape((3, 4, 1)), layers.Conv2D(2, 2, activation="relu"),
                                layers.Flatten(), layers.Dense(3, activation="softmax")])


def test_export_loads_with_tf_saved_model_and_scores_equal_to_keras(tmp_path):
    tf = tfos_lib.import_tensorflow()
    model = _classifier(tf)
    first = saved_model.export_saved_model(model, str(tmp_path), "digits", preprocessing="raw pixels 0..255")
    second = saved_model.export_saved_model(model, str(tmp_path), "digits")
    assert (first, second) == (str(tmp_path / "digits" / "1"), str(tmp_path / "digits" / "2"))
    assert sorted(os.listdir(tmp_path / "digits")) == ["1", "2"]  # no temporary directory left
    assert saved_model.resolve_saved_model(str(tmp_path / "digits")) == second
    assert saved_model.resolve_saved_model(first) == first

    x = np.random.default_rng(0).integers(0, 256, (7, 12)).astype(np.float32)
    serving = tf.saved_model.load(second).signatures["serving_default"]
    _, inputs = serving.structured_input_signature
    assert list(inputs) == ["inputs"] and list(serving.structured_outputs) == ["outputs"]
    np.testing.assert_allclose(serving(inputs=tf.constant(x))["outputs"].numpy(), model(x).numpy(), atol=1e-6)
    # Still a Keras model too.
    np.testing.assert_allclose(tf.keras.models.load_model(second, compile=False)(x).numpy(), model(x).numpy(),
                               atol=1e-6)
    described = saved_model.read_signature(first)
    assert described["inputs"] == {"inputs": {"dtype": "float32", "shape": [None, 12]}}
    assert described["outputs"] == {"outputs": {"dtype": "float32", "shape": [None, 3]}}
    assert described["preprocessing"] == "raw pixels 0..255" and described["version"] == 1


def test_preprocessing_in_the_graph_and_chosen_names(tmp_path):
    tf = tfos_lib.import_tensorflow()
    inner = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,), kernel_initializer="ones")])

    path = saved_model.export_saved_model(
        inner, str(tmp_path), "scaled", version=7, input_names=["raw"], output_names=["scores"],
        preprocess=lambda feeds: {"raw": tf.cast(feeds["raw"], tf.float32) / 255.0},
        input_dtypes={"raw": tf.uint8},
    )
    serving = tf.saved_model.load(path).signatures["serving_default"]
    out = serving(raw=tf.constant([[255, 0, 255]], tf.uint8))["scores"].numpy()
    np.testing.assert_allclose(out, inner(np.array([[1.0, 0.0, 1.0]])).numpy(), atol=1e-6)
    assert saved_model.read_signature(path)["preprocessing"] == "in the graph"
    assert json.loads((tmp_path / "scaled" / "7" / saved_model.SIGNATURE_FILE).read_text())["inputs"]["raw"]["dtype"] \
        == "uint8"


def test_refusals_name_the_problem(tmp_path):
    tf = tfos_lib.import_tensorflow()
    model = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))])
    saved_model.export_saved_model(model, str(tmp_path), "m", version=1)
    with pytest.raises(ValueError, match=r"exists already; pass overwrite=True"):
        saved_model.export_saved_model(model, str(tmp_path), "m", version=1)
    with pytest.raises(ValueError, match="positive integer"):
        saved_model.export_saved_model(model, str(tmp_path), "m", version=0)
    with pytest.raises(ValueError, match=r"input_names must be 1 distinct name"):
        saved_model.export_saved_model(model, str(tmp_path), "m", input_names=["a", "b"])
    with pytest.raises(FileNotFoundError, match=r"no model version under .*empty.*export_saved_model"):
        os.makedirs(tmp_path / "empty" / "latest")
        saved_model.resolve_saved_model(str(tmp_path / "empty"))


def test_saved_model_cli_lists_the_signature(tmp_path):
    tf = tfos_lib.import_tensorflow()
    path = saved_model.export_saved_model(_classifier(tf), str(tmp_path), "digits")
    shown = subprocess.run(
        [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--dir", path,
         "--tag_set", "serve", "--signature_def", "serving_default"],
        capture_output=True, text=True, timeout=300,
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "inputs['inputs']" in shown.stdout and "outputs['outputs']" in shown.stdout, shown.stdout


def test_a_ydf_forest_exports_for_serving_and_loads_in_a_fresh_process(tmp_path):
    import ydf

    rng = np.random.default_rng(0)
    features = ["depth", "period", "noise"]  # the forest reads only two: a column it ignores stays in place
    x = rng.normal(size=(300, 3)).astype(np.float32)
    label = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    forest = ydf.GradientBoostedTreesLearner(label="label", num_trees=15, max_depth=3).train(
        {"depth": x[:, 0], "period": x[:, 1], "label": label})
    path = saved_model.export_ydf_model(forest, str(tmp_path), "planets", features)
    assert path == str(tmp_path / "planets" / "1")
    described = saved_model.read_signature(path)
    assert described["features"] == features and described["requires"] == ["ydf_tf"]
    assert described["inputs"] == {"inputs": {"dtype": "float32", "shape": [None, 3]}}
    expected = forest.predict({"depth": x[:50, 0], "period": x[:50, 1]})
    np.save(tmp_path / "x.npy", x[:50])
    # A new process has not imported ydf_tf: the op comes from signature.json's "requires".
    script = (
        "import sys, numpy as np, tfos_lib\n"
        "from tfos_lib.export import saved_model\n"
        "tf = tfos_lib.import_tensorflow()\n"
        "path = saved_model.resolve_saved_model(sys.argv[1])\n"
        "saved_model.import_required_ops(path)\n"
        "serve = tf.saved_model.load(path).signatures['serving_default']\n"
        "np.save(sys.argv[2], serve(inputs=tf.constant(np.load(sys.argv[3])))['probability'].numpy())\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "planets"), str(tmp_path / "p.npy"),
                           str(tmp_path / "x.npy")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected, rtol=1e-6)

    with pytest.raises(ValueError, match=r"reads features \['period'\] that are not in feature_names"):
        saved_model.export_ydf_model(forest, str(tmp_path), "planets", ["depth"])
    signature = tmp_path / "planets" / "1" / saved_model.SIGNATURE_FILE
    signature.write_text(json.dumps({**described, "requires": ["no_such_ops_package"]}))
    with pytest.raises(ImportError, match="pip install no-such-ops-package"):
        saved_model.import_required_ops(path)

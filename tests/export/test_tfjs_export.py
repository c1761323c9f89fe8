"""The TF.js layers-model exporter: manifest, shards, round trip, refusals.

The browser itself loads an export in tests/jobs/test_sentiment_browser.py; these tests
check the files without one.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import tfos_lib
from tfos_lib.export import tfjs
from tfos_lib.export.tfjs import TfjsCompatibilityError


def _model(reset_after=False):
    tf = tfos_lib.import_tensorflow()
    tf.keras.utils.set_random_seed(1)
    layers = tf.keras.layers
    model = tf.keras.Sequential(
        [
            layers.InputLayer(input_shape=(6,), dtype="int32", name="ids"),
            layers.Embedding(20, 4, name="embedding"),
            layers.GRU(5, return_sequences=True, reset_after=reset_after, name="gru_a"),
            layers.GRU(3, reset_after=reset_after, recurrent_activation="hard_sigmoid", name="gru_b"),
            layers.Dense(1, activation="sigmoid", name="out"),
        ]
    )
    return model


def test_round_trip_keeps_every_weight_and_the_topology(tmp_path):
    tf = tfos_lib.import_tensorflow()
    model = _model()
    path = tfjs.save_layers_model(model, tmp_path, metadata={"max_len": 6})
    document, weights = tfjs.read_layers_model(tmp_path)

    assert path == tmp_path / "model.json"
    assert document["format"] == "layers-model" and document["generatedBy"].startswith("keras v2.")
    assert document["userDefinedMetadata"] == {"max_len": 6}
    assert document["weightsManifest"][0]["paths"] == ["group1-shard1of1.bin"]
    # Names as the official converter writes them: layer scope first, no ":0" (TF.js drops
    # the inner cell scope itself when it matches them to its layers).
    assert list(weights) == [
        "embedding/embeddings",
        "gru_a/gru_cell/kernel", "gru_a/gru_cell/recurrent_kernel", "gru_a/gru_cell/bias",
        "gru_b/gru_cell/kernel", "gru_b/gru_cell/recurrent_kernel", "gru_b/gru_cell/bias",
        "out/kernel", "out/bias",
    ]
    for value, (name, read) in zip(model.get_weights(), weights.items(), strict=True):
        assert read.dtype == np.float32 and read.shape == value.shape, name
        np.testing.assert_array_equal(read, value)
    # 3 gates x (input + recurrent + bias) without reset_after's second bias: 3*5*(4+5+1) = 150.
    assert weights["gru_a/gru_cell/kernel"].shape == (4, 15) and weights["gru_a/gru_cell/bias"].shape == (15,)
    assert sum(w.nbytes for w in weights.values()) == (tmp_path / "group1-shard1of1.bin").stat().st_size

    # The topology is a Keras model JSON: rebuilding it and loading the weights predicts the same.
    rebuilt = tf.keras.models.model_from_json(json.dumps(document["modelTopology"]["model_config"]))
    rebuilt.set_weights(list(weights.values()))
    x = np.array([[0, 0, 3, 7, 1, 19], [5, 5, 5, 5, 5, 5]], dtype=np.int32)
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), model.predict(x, verbose=0), rtol=0, atol=1e-7)


def test_weights_straddle_small_shards_in_order(tmp_path):
    model = _model()
    tfjs.save_layers_model(model, tmp_path, shard_bytes=100)
    document, weights = tfjs.read_layers_model(tmp_path)
    paths = document["weightsManifest"][0]["paths"]
    total = sum(w.nbytes for w in weights.values())
    assert len(paths) == -(-total // 100) > 1
    assert paths[0] == f"group1-shard1of{len(paths)}.bin" and paths[-1] == f"group1-shard{len(paths)}of{len(paths)}.bin"
    assert all((tmp_path / p).stat().st_size == 100 for p in paths[:-1])
    for value, read in zip(model.get_weights(), weights.values(), strict=True):
        np.testing.assert_array_equal(read, value)

    # Re-exporting into the same folder with one shard removes the old shards.
    tfjs.save_layers_model(model, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.bin")) == ["group1-shard1of1.bin"]


def test_bytes_are_little_endian_float32_in_manifest_order(tmp_path):
    manifest = tfjs.write_weight_shards(
        [("a/w", np.array([[1.0, -2.5]], np.float32)), ("b/i", np.array([7], np.int32))], tmp_path
    )
    assert manifest == [{"paths": ["group1-shard1of1.bin"], "weights": [
        {"name": "a/w", "shape": [1, 2], "dtype": "float32"}, {"name": "b/i", "shape": [1], "dtype": "int32"}]}]
    assert (tmp_path / "group1-shard1of1.bin").read_bytes() == (
        np.array([1.0, -2.5], "<f4").tobytes() + np.array([7], "<i4").tobytes()
    )


def test_refuses_float64_weights(tmp_path):
    with pytest.raises(TfjsCompatibilityError, match=r"'w'.*float64.*float32"):
        tfjs.write_weight_shards([("w", np.zeros(3))], tmp_path)


def test_refuses_gru_with_reset_after_true(tmp_path):
    """TF 2's default GRU: tfjs-layers throws "GRUCell does not support reset_after" when loading it."""
    with pytest.raises(TfjsCompatibilityError, match=r"'gru_a'.*reset_after=True.*reset_after=False"):
        tfjs.save_layers_model(_model(reset_after=True), tmp_path)
    assert not (tmp_path / "model.json").exists()


def test_check_compatible_reports_time_major_and_keras_3():
    config = {"class_name": "Sequential", "keras_version": "2.21.0", "config": {"layers": [
        {"class_name": "Bidirectional", "config": {"name": "bi", "layer": {
            "class_name": "LSTM", "config": {"name": "inner", "time_major": True}}}},
    ]}}
    with pytest.raises(TfjsCompatibilityError, match=r"'inner'.*time_major=True"):
        tfjs.check_compatible(config)
    with pytest.raises(TfjsCompatibilityError, match="Keras 3.*tf-keras"):
        tfjs.check_compatible({"class_name": "Sequential", "keras_version": "3.15.1", "config": {}})
    config["config"]["layers"][0]["config"]["layer"]["config"]["time_major"] = False
    tfjs.check_compatible(config)  # no error


def test_read_names_truncated_and_missing_shards(tmp_path):
    tfjs.save_layers_model(_model(), tmp_path, shard_bytes=256)
    shards = sorted(tmp_path.glob("*.bin"))
    shards[-1].write_bytes(shards[-1].read_bytes()[:-8])
    with pytest.raises(ValueError, match="truncated"):
        tfjs.read_layers_model(tmp_path)
    shards[0].unlink()
    with pytest.raises(FileNotFoundError, match=shards[0].name):
        tfjs.read_layers_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="model.json"):
        tfjs.read_layers_model(tmp_path / "nowhere")

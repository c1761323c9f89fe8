"""MLflow tracking (--mlflow): the MNIST job logged to a local SQLite store, read back through MLflow."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jobs import mnist
from tfos_lib.datasets import idx
from tfos_lib.tracking import flatten_numbers


def test_flatten_numbers_keeps_finite_numbers_under_dotted_keys():
    values = {"a": 1, "b": {"c": 2.5, "d": "text", "e": [1, 2]}, "f": True, "g": float("nan"), "h": np.float32(3)}
    assert flatten_numbers(values) == {"a": 1.0, "b.c": 2.5, "h": 3.0}


def test_mnist_run_is_logged_with_params_epochs_artifacts_and_a_model(spark, tmp_path, monkeypatch,
                                                                       check_metrics_envelope):
    import mlflow

    import tfos_lib

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 48), ("t10k", 24)):
        idx.write_idx(data / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        idx.write_idx(data / f"{split}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    out = tmp_path / "out"
    mnist.main(["--backend", "local", "--model", "logreg", "--epochs", "3", "--batch-size", "8",
                "--data-dir", str(data), "--output-dir", str(out), "--mlflow"])

    saved = json.loads((out / "metrics.json").read_text())
    check_metrics_envelope(saved, "mnist", training=True)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(saved["mlflow"]["run_id"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "mnist" == saved["mlflow"]["experiment"]
    params = run.data.params
    assert params["epochs"] == "3" and params["model"] == "logreg" and params["batch_size"] == "8"
    assert params["optimizer"] == "sgd" and params["learning_rate"] == "0.01"  # the resolved values too

    # One point per epoch, logged when the chief's epoch event reached the driver, before the final figures.
    results = saved["results"]
    for name in ("loss", "accuracy", "heldout_accuracy", "examples_per_second"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [1, 2, 3], name
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [m.value for m in losses] == pytest.approx(results["history"]["loss"], rel=1e-6)
    (final,) = client.get_metric_history(run.info.run_id, "test_accuracy")
    assert final.value == pytest.approx(results["test_accuracy"]) and final.timestamp >= losses[-1].timestamp
    assert run.data.metrics["examples_per_worker"] == results["examples_per_worker"]

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "training_curves.png", "confusion_matrix.png"} <= artifacts
    logged = json.loads(open(client.download_artifacts(run.info.run_id, "metrics.json", str(tmp_path))).read())
    assert logged == saved

    # The logged model (TensorFlow flavour, signature, input example) scores like the job's SavedModel.
    model_uri = saved["mlflow"]["models"]["mnist"]
    info = mlflow.models.get_model_info(model_uri)
    assert info.flavors.keys() >= {"tensorflow", "python_function"} and info.signature is not None
    assert info.saved_input_example_info is not None
    tf = tfos_lib.import_tensorflow()
    x = rng.random((5, 784), dtype=np.float32)
    served = tf.saved_model.load(results["saved_model"]).signatures["serving_default"](inputs=tf.constant(x))
    predicted = np.asarray(mlflow.pyfunc.load_model(model_uri).predict(x))
    np.testing.assert_allclose(predicted, served["outputs"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(mlflow.tensorflow.load_model(model_uri)(x)), served["outputs"].numpy(),
                               rtol=1e-5, atol=1e-6)


def test_an_export_that_is_not_keras_is_logged_as_its_files(tmp_path, monkeypatch):
    """A YDF forest's Serving export has no Keras model to log: MLflow keeps its SavedModel files."""
    import mlflow
    import ydf

    from tfos_lib.export import saved_model
    from tfos_lib.tracking import MlflowRun

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    rng = np.random.default_rng(0)
    x = rng.normal(size=200).astype(np.float32)
    forest = ydf.GradientBoostedTreesLearner(label="y", num_trees=3).train({"x": x, "y": (x > 0).astype(np.int64)})
    saved_model.export_ydf_model(forest, str(tmp_path / "out" / "models"), "forest", ["x"])
    run = MlflowRun("forest-job", {})
    logged = run.log_models(str(tmp_path / "out"))
    run.end()
    assert logged == {"forest": f"runs:/{run.run_id}/models/forest"}
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    files = {a.path for a in client.list_artifacts(run.run_id, "models/forest")}
    assert "models/forest/saved_model.pb" in files and "models/forest/assets.extra" in files


def test_tensorboard_serves_the_logs_on_the_driver_and_stops(tmp_path):
    import time
    import urllib.request

    from tfos_lib.tracking import TensorBoardServer

    tf = __import__("tfos_lib").import_tensorflow()
    with tf.summary.create_file_writer(str(tmp_path / "tensorboard" / "train")).as_default():
        for step in range(3):
            tf.summary.scalar("epoch_loss", 1.0 / (step + 1), step=step)
    server = TensorBoardServer(str(tmp_path / "tensorboard"), host="127.0.0.1")
    try:
        assert server.url == f"http://127.0.0.1:{server.port}/"
        deadline, runs = time.monotonic() + 60, None
        while time.monotonic() < deadline and not runs:
            try:
                runs = json.loads(urllib.request.urlopen(server.url + "data/runs", timeout=5).read())
            except OSError:
                time.sleep(0.5)
        assert runs == ["train"]
    finally:
        server.stop()
    assert server.process.poll() is not None  # it stops with the job

"""MLflow tracking of a job run, from the driver (``--mlflow``; the workers need no MLflow access).

One MLflow run per job run, in the experiment named after the job (or
``MLFLOW_EXPERIMENT_NAME``, e.g. ``/Users/me/mnist`` on Databricks, where experiment names
are workspace paths), on the tracking server ``MLFLOW_TRACKING_URI`` names (MLflow's own
default without it: ``sqlite:///mlflow.db`` in the working directory). It logs:

* parameters: the resolved config (and the values the job derived from it);
* per-epoch metrics while training, step = epoch: the chief's ``epoch`` events reach the
  driver's monitor, which hands them to :data:`tfos_lib.monitor.EPOCH_LISTENERS`;
* the final metrics: every number in metrics.json's ``results`` (nested keys joined by ``.``; ``result.<name>``
  where a per-epoch curve has that name, e.g. ``result.examples_per_second``);
* artifacts: metrics.json and the plots (``*.png``) of the output directory;
* each exported SavedModel (``models/<name>/``, latest version) through MLflow's
  TensorFlow flavour, with a signature and an input example.

The run id goes into metrics.json (``mlflow.run_id``). :class:`JobRun` drives all this.
"""

from __future__ import annotations

import atexit
import logging
import os
import posixpath
import tempfile
import time
from typing import Any

from tfos_lib import monitor, storage

log = logging.getLogger("tfos_lib.tracking")

#: metrics.json's and the plots' suffixes, logged as artifacts.
ARTIFACT_SUFFIXES = (".json", ".png")
#: Per-epoch event keys that are not metrics.
_EVENT_KEYS = {"kind", "rank", "epoch", "epochs"}


def import_mlflow():
    try:
        import mlflow
    except ImportError as error:
        raise ValueError(
            "--mlflow needs the mlflow package, which is not installed: pip install 'tfos_lib[mlflow]' "
            "(or run without --mlflow)."
        ) from error
    return mlflow


def flatten_numbers(values: Any, prefix: str = "") -> dict[str, float]:
    """The finite numbers in a nested mapping, keyed ``a.b.c`` (lists and strings are left out)."""
    import math

    found: dict[str, float] = {}
    if isinstance(values, dict):
        for key, value in values.items():
            found |= flatten_numbers(value, f"{prefix}{key}.")
        return found
    if hasattr(values, "item") and getattr(values, "ndim", 1) == 0:  # numpy scalars
        values = values.item()
    if isinstance(values, (int, float)) and not isinstance(values, bool) and math.isfinite(values):
        found[prefix.rstrip(".")] = float(values)
    return found


class MlflowRun:
    """The MLflow run of one job run (driver side)."""

    def __init__(self, job: str, params: dict):
        from tfos_lib.version import __version__

        mlflow = import_mlflow()
        self.mlflow = mlflow
        self.client = mlflow.MlflowClient()
        self.experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or job
        experiment = mlflow.set_experiment(self.experiment)
        run = self.client.create_run(
            experiment.experiment_id, tags={"tfos_lib.job": job, "tfos_lib.version": __version__},
            run_name=f"{job}-{time.strftime('%Y%m%d-%H%M%S')}",
        )
        self.run_id = run.info.run_id
        self.tracking_uri = mlflow.get_tracking_uri()
        self._params: dict[str, str] = {}
        self._epoch_metrics: set[str] = set()
        # Options left at None are often resolved by the job later (write_metrics' ``resolved``): logged then.
        self._unset = {key for key, value in params.items() if value is None}
        self.log_params({key: value for key, value in params.items() if value is not None})
        self._ended = False
        monitor.EPOCH_LISTENERS.append(self.log_epoch)
        atexit.register(self.end, "FAILED")  # a job that dies before write_metrics
        log.info("MLflow run %s in experiment %r at %s", self.run_id, self.experiment, self.tracking_uri)

    def log_params(self, params: dict) -> None:
        """Logs ``params``; a key logged before with another value is logged as ``resolved.<key>`` (MLflow's params
        are write-once)."""
        from mlflow.entities import Param

        fresh = {}
        for key, value in params.items():
            value = str(value)[:6000]
            if key in self._params and self._params[key] != value:
                key = f"resolved.{key}"
            if self._params.get(key) != value:
                fresh[key] = value
        self._params |= fresh
        items = [Param(key, value) for key, value in sorted(fresh.items())]
        for start in range(0, len(items), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, values: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, value, now, step) for key, value in sorted(values.items())]
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[start : start + 1000])

    def log_epoch(self, event: dict) -> None:
        """A chief ``epoch`` event (called from the monitor's thread): its numbers at step = epoch."""
        numbers = flatten_numbers({k: v for k, v in event.items() if k not in _EVENT_KEYS})
        self._epoch_metrics |= set(numbers)
        self.log_metrics(numbers, step=int(event.get("epoch") or 0))

    def log_results(self, values: dict[str, float]) -> None:
        """The run's final figures; a name the per-epoch curves use already becomes ``result.<name>``."""
        self.log_metrics({f"result.{k}" if k in self._epoch_metrics else k: v for k, v in values.items()})

    def log_models(self, output_dir: str, input_example=None) -> dict[str, str]:
        """Logs every ``models/<name>/`` export of ``output_dir`` (latest version); returns name -> model URI."""
        from tfos_lib.export.saved_model import SIGNATURE_FILE

        models = storage.join(output_dir, "models")
        names = sorted({rel.split("/", 1)[0] for rel in storage.list_files(models)
                        if rel.endswith(SIGNATURE_FILE.replace(os.sep, "/"))})
        logged = {}
        for name in names:
            try:
                logged[name] = self._log_model(storage.join(models, name), name, input_example)
            except Exception as error:  # the run's other records stay useful without the model
                log.warning("MLflow: could not log the model %s: %s", name, error)
        return logged

    def _log_model(self, model_dir: str, name: str, input_example) -> str:
        import numpy as np
        from mlflow.models import infer_signature

        from tfos_lib.export.saved_model import read_signature, resolve_saved_model
        from tfos_lib.tfenv import import_tensorflow

        tf = import_tensorflow()
        with storage.local_copy(model_dir) as local:
            path = resolve_saved_model(local)
            signature = read_signature(path)
            if not os.path.exists(os.path.join(path, "keras_metadata.pb")):
                # Not a Keras model (a YDF forest's export): MLflow keeps the SavedModel's files as they are.
                self.client.log_artifacts(self.run_id, path, f"models/{name}")
                return f"runs:/{self.run_id}/models/{name}"
            model = tf.keras.models.load_model(path, compile=False)
        if input_example is None:  # zeros of the signature's shapes (a job passes real rows when it can)
            inputs = {key: np.zeros([2, *[d or 1 for d in spec["shape"][1:]]], dtype=spec["dtype"])
                      for key, spec in signature["inputs"].items()}
            input_example = next(iter(inputs.values())) if len(inputs) == 1 else inputs
        output = model(input_example, training=False)
        output = {k: np.asarray(v) for k, v in output.items()} if isinstance(output, dict) else np.asarray(output)
        with self.mlflow.start_run(run_id=self.run_id):  # the flavour logs to the active run
            info = self.mlflow.tensorflow.log_model(
                model, name=name, signature=infer_signature(input_example, output), input_example=input_example,
            )
        # start_run's context ended the run: the job's run goes on until end().
        self.client.update_run(self.run_id, status="RUNNING")
        return info.model_uri

    def log_artifacts(self, output_dir: str) -> list[str]:
        """metrics.json and the plots at the top of ``output_dir``."""
        files = [rel for rel in storage.list_files(output_dir)
                 if "/" not in rel and not rel.startswith(".") and rel.endswith(ARTIFACT_SUFFIXES)]
        with tempfile.TemporaryDirectory(prefix="tfos-mlflow-") as tmp:
            for rel in files:
                local = os.path.join(tmp, rel)
                with open(local, "wb") as f:
                    f.write(storage.read_bytes(storage.join(output_dir, rel)))
                self.client.log_artifact(self.run_id, local)
        return [posixpath.basename(rel) for rel in files]

    def end(self, status: str = "FINISHED") -> None:
        if self._ended:
            return
        if status == "FINISHED":  # options nothing resolved: None, as in metrics.json's config
            self.log_params({key: None for key in self._unset if key not in self._params})
        self._ended = True
        if self.log_epoch in monitor.EPOCH_LISTENERS:
            monitor.EPOCH_LISTENERS.remove(self.log_epoch)
        atexit.unregister(self.end)
        try:
            self.client.set_terminated(self.run_id, status)
        except Exception as error:  # at exit: the store may be gone
            log.warning("MLflow: could not end run %s: %s", self.run_id, error)


class TensorBoardServer:
    """TensorBoard on the driver host serving ``logdir`` (``--tensorboard``), as TFoS's ``tensorboard=True`` does.

    ``logdir`` may be a URI that TensorFlow's file system reads (gs://, hdfs://; s3:// needs
    tensorflow-io). The server listens on every interface (as TensorFlowOnSpark's does) so that a
    browser beside a cluster's driver reaches it; :meth:`stop` (or the end of the process) ends it.
    """

    def __init__(self, logdir: str, host: str | None = None):
        import socket
        import subprocess
        import sys

        with socket.socket() as probe:  # a free port, so that the URL is known before TensorBoard answers
            probe.bind(("", 0))
            self.port = probe.getsockname()[1]
        self.logdir = logdir
        self.url = f"http://{host or socket.getfqdn()}:{self.port}/"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--port", str(self.port), "--bind_all",
             "--load_fast", "false"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        atexit.register(self.stop)
        log.info("TensorBoard serves %s at %s (until the job ends)", logdir, self.url)
        print(f"TensorBoard: {self.url}", flush=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except Exception:
                self.process.kill()
        atexit.unregister(self.stop)

"""Keras models as Spark ML stages: :class:`KerasEstimator` trains, :class:`KerasModel` predicts.

::

    from pyspark.ml import Pipeline
    from pyspark.ml.feature import VectorAssembler
    from tfos_lib.ml.estimator import KerasEstimator

    def build_model():                        # runs in the workers, imports TensorFlow there
        import tfos_lib
        tf = tfos_lib.import_tensorflow()
        model = tf.keras.Sequential([tf.keras.layers.Dense(3, activation="softmax", input_shape=(4,))])
        model.compile("adam", "sparse_categorical_crossentropy")
        return model

    pipeline = Pipeline(stages=[
        VectorAssembler(inputCols=["a", "b", "c", "d"], outputCol="features"),
        KerasEstimator(buildFn=build_model, labelCol="species", numWorkers=2, epochs=20, batchSize=32),
    ])
    fitted = pipeline.fit(train_df)           # data-parallel training through tfos_lib.run
    fitted.transform(test_df)                 # adds "output" (array<float>) and "prediction" (double)
    fitted.write().overwrite().save("iris_pipeline")   # PipelineModel.load("iris_pipeline") restores it

``fit`` hands ``featuresCol``/``labelCol`` to :func:`tfos_lib.run` (equal shards,
one per worker, ``MultiWorkerMirroredStrategy``); the chief exports the trained
model in the TF Serving layout, ``modelDir/model/1/`` (signature ``serving_default``:
input ``inputs``, output ``outputs``; see :mod:`tfos_lib.export.saved_model`). ``transform`` applies it with
:mod:`tfos_lib.ml.inference` (Spark's ``predict_batch_udf``, the model loaded once per
Python worker).

Saving: both stages write the usual Spark ML ``metadata/`` (their Params as JSON);
the estimator's ``buildFn`` is one of them, cloudpickled (so loading it needs the
same Python and cloudpickle major versions, like any pickled UDF); a fitted
:class:`KerasModel` also copies its SavedModel into ``<path>/model``, which needs no
pickles to load. ``modelDir`` and the save path may be local or shared paths or
URIs (``s3a://``, ``gs://``, ``hdfs://``, ...): the SavedModel goes through
:mod:`tfos_lib.storage`, the ``metadata/`` through Spark's own writers, which need
Hadoop's connector for the scheme (for ``s3a://`` the ``hadoop-aws`` jar, not part
of pyspark's wheel; :func:`tfos_lib.storage.check_spark_writable` says so before anything is written).
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasFeaturesCol, HasLabelCol, HasPredictionCol, HasSeed
from pyspark.ml.util import (
    DefaultParamsReadable,
    DefaultParamsReader,
    DefaultParamsWritable,
    DefaultParamsWriter,
    MLReadable,
    MLWritable,
)

from tfos_lib import storage
from tfos_lib.context import WorkerContext
from tfos_lib.export.saved_model import export_saved_model
from tfos_lib.launcher import BACKENDS, run
from tfos_lib.ml import inference
from tfos_lib.tfenv import import_tensorflow

__all__ = ["KerasEstimator", "KerasModel"]

#: Where a saved KerasModel keeps its SavedModel, under the stage's path.
MODEL_SUBDIR = "model"


class _KerasModelParams(HasFeaturesCol, HasPredictionCol):
    """Params the estimator and its model share (``_copyValues`` passes them on)."""

    outputCol = Param(
        Params._dummy(),
        "outputCol",
        "column for the model's raw output (array<float>: class scores, or the regression value)",
        typeConverter=TypeConverters.toString,
    )
    predictBatchSize = Param(
        Params._dummy(), "predictBatchSize", "rows per model call in transform()", typeConverter=TypeConverters.toInt
    )

    def __init__(self, *args):
        super().__init__(*args)
        self._setDefault(outputCol="output", predictBatchSize=inference.DEFAULT_BATCH_SIZE)

    def getOutputCol(self) -> str:
        return self.getOrDefault(self.outputCol)

    def getPredictBatchSize(self) -> int:
        return self.getOrDefault(self.predictBatchSize)


# ---------------------------------------------------------------------------------------------
# The estimator.


class KerasEstimator(Estimator, _KerasModelParams, HasLabelCol, HasSeed, DefaultParamsReadable, DefaultParamsWritable):
    """Trains a Keras model data-parallel on Spark executors; ``fit`` returns a :class:`KerasModel`.

    Runs on the driver; training runs in the workers of :func:`tfos_lib.run`.

    Params (keyword arguments of the constructor, ``set*``/``get*`` methods):
        buildFn: a function of no arguments returning a *compiled* tf.keras model
            (tf-keras). It runs in the workers, under the distribution strategy, so
            it must import TensorFlow itself (``tfos_lib.import_tensorflow()``).
            Module-level functions and closures both work (cloudpickled).
        featuresCol: the model input: ``array<float>``, an ML vector, or a number.
            Arrays are flat; the model's input shape restores the dimensions.
        labelCol: the training target (a number per row).
        predictionCol: ``double``: the argmax of the output when it has several
            values (classification), else the single output value (regression).
        outputCol: the raw model output, ``array<float>``.
        numWorkers: TensorFlow workers (one Spark task slot each).
        backend: ``barrier`` (default), ``tfos`` or ``local`` (see :func:`tfos_lib.run`).
        epochs: passes over the training rows.
        batchSize: global batch size, summed over the workers (a multiple of numWorkers).
        predictBatchSize: rows per model call in ``transform``.
        seed: initial weights and shuffling.
        modelDir: where ``fit`` saves the model (``modelDir/model/1/``): a local or
            shared path, or a URI (see :mod:`tfos_lib.storage`); the driver and every
            executor must reach it. Default: a new temporary directory (fine in local
            mode and on one host).
        verbose: print Keras's per-epoch lines on the chief.
    """

    buildFn = Param(
        Params._dummy(),
        "buildFn",
        "function returning a compiled tf.keras model (stored cloudpickled, base64)",
        typeConverter=lambda value: _encode_build_fn(value),
    )
    numWorkers = Param(Params._dummy(), "numWorkers", "TensorFlow workers", typeConverter=TypeConverters.toInt)
    backend = Param(Params._dummy(), "backend", f"how workers start: one of {list(BACKENDS)}", TypeConverters.toString)
    epochs = Param(Params._dummy(), "epochs", "passes over the training rows", typeConverter=TypeConverters.toInt)
    batchSize = Param(Params._dummy(), "batchSize", "global training batch size", typeConverter=TypeConverters.toInt)
    modelDir = Param(Params._dummy(), "modelDir", "where fit() saves the model", typeConverter=TypeConverters.toString)
    verbose = Param(Params._dummy(), "verbose", "Keras per-epoch output on the chief", TypeConverters.toBoolean)

    @keyword_only
    def __init__(
        self,
        *,
        buildFn: Callable[[], Any] | None = None,
        featuresCol: str = "features",
        labelCol: str = "label",
        predictionCol: str = "prediction",
        outputCol: str = "output",
        numWorkers: int = 1,
        backend: str = "barrier",
        epochs: int = 1,
        batchSize: int = 32,
        predictBatchSize: int = inference.DEFAULT_BATCH_SIZE,
        seed: int = 0,
        modelDir: str | None = None,
        verbose: bool = False,
    ):
        super().__init__()
        self._setDefault(numWorkers=1, backend="barrier", epochs=1, batchSize=32, seed=0, verbose=False)
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, **kwargs) -> "KerasEstimator":
        """Sets Params by keyword (the constructor's arguments)."""
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        return self._set(**kwargs)

    def setBuildFn(self, value: Callable[[], Any]) -> "KerasEstimator":
        return self._set(buildFn=value)

    def getBuildFn(self) -> Callable[[], Any]:
        """The model-building function (unpickled)."""
        import cloudpickle

        if not self.isDefined(self.buildFn):
            raise ValueError("KerasEstimator needs buildFn: a function returning a compiled tf.keras model.")
        return cloudpickle.loads(base64.b64decode(self.getOrDefault(self.buildFn)))

    def setNumWorkers(self, value: int) -> "KerasEstimator":
        return self._set(numWorkers=value)

    def getNumWorkers(self) -> int:
        return self.getOrDefault(self.numWorkers)

    def getBackend(self) -> str:
        return self.getOrDefault(self.backend)

    def setEpochs(self, value: int) -> "KerasEstimator":
        return self._set(epochs=value)

    def getEpochs(self) -> int:
        return self.getOrDefault(self.epochs)

    def getBatchSize(self) -> int:
        return self.getOrDefault(self.batchSize)

    def getModelDir(self) -> str | None:
        return self.getOrDefault(self.modelDir) if self.isDefined(self.modelDir) else None

    def _validate(self) -> None:
        problems = []
        if not self.isDefined(self.buildFn):
            problems.append("buildFn is not set (a function returning a compiled tf.keras model)")
        for name in ("numWorkers", "epochs", "batchSize", "predictBatchSize"):
            if self.getOrDefault(name) < 1:
                problems.append(f"{name} must be >= 1; got {self.getOrDefault(name)}")
        if self.getBackend() not in BACKENDS:
            problems.append(f"backend must be one of {list(BACKENDS)}; got {self.getBackend()!r}")
        if problems:
            raise ValueError("KerasEstimator: " + "; ".join(problems) + ".")

    def _fit(self, dataset) -> "KerasModel":
        self._validate()
        features = _features_column(dataset, self.getFeaturesCol(), "featuresCol")
        label = _label_column(dataset, self.getLabelCol())
        train = dataset.select(features.alias("features"), label.alias("label"))
        model_dir = storage.normalize(self.getModelDir() or tempfile.mkdtemp(prefix="tfos-keras-estimator-"))
        spec = _TrainSpec(
            build_fn=base64.b64decode(self.getOrDefault(self.buildFn)),
            epochs=self.getEpochs(),
            batch_size=self.getBatchSize(),
            seed=self.getOrDefault(self.seed),
            verbose=self.getOrDefault(self.verbose),
        )
        result = run(
            _train_fn,
            spec,
            num_workers=self.getNumWorkers(),
            backend=self.getBackend(),
            inputs={"train": train},
            output_dir=model_dir,
            spark=dataset.sparkSession,
        )
        model = KerasModel()
        model._set_trained(storage.join(model_dir, MODEL_SUBDIR), result["input_size"], result["history"])
        return self._copyValues(model)


@dataclass(frozen=True)
class _TrainSpec:
    """What every worker needs to train (picklable; the build function as cloudpickle bytes)."""

    build_fn: bytes
    epochs: int
    batch_size: int
    seed: int
    verbose: bool


def _train_fn(ctx: WorkerContext, spec: _TrainSpec) -> dict:
    """Runs on every worker: build under the strategy, fit on this worker's shard, the chief saves."""
    import cloudpickle

    tf = import_tensorflow()
    build_fn = cloudpickle.loads(spec.build_fn)
    tf.keras.utils.set_random_seed(spec.seed)  # same initial weights on every worker
    train = ctx.data("train")
    with ctx.strategy().scope():
        model = build_fn()
    if not isinstance(model, tf.keras.Model) or model.optimizer is None:
        raise ValueError(
            f"KerasEstimator's buildFn must return a compiled tf.keras model; it returned {type(model).__name__}"
            + (
                ""
                if isinstance(model, tf.keras.Model)
                else " (not a tf.keras.Model: build it with tfos_lib.import_tensorflow().keras)"
            )
            + ". Call model.compile(optimizer, loss) before returning it."
        )
    dataset = ctx.distributed_dataset(
        "train", "features", "label", global_batch_size=spec.batch_size, seed=spec.seed + ctx.rank
    )
    history = model.fit(
        dataset,
        epochs=spec.epochs,
        steps_per_epoch=train.steps_per_epoch(spec.batch_size),
        verbose=2 if (spec.verbose and ctx.is_chief) else 0,
        callbacks=[ctx.progress_callback(spec.batch_size)],  # heartbeats: the driver's stall watch covers fit
    )
    if not ctx.is_chief:
        return {}
    # Save a plain (non-distributed) copy, so the chief alone can write it without the
    # other workers joining the collective ops a distributed save would run.
    features = train.column("features")
    local_model = build_fn()
    if not local_model.built:  # a model without an input shape builds on its first call
        local_model(features[:1])
    local_model.set_weights(model.get_weights())
    export_saved_model(local_model, ctx.output_dir, MODEL_SUBDIR, version=1, overwrite=True)
    return {
        "history": {k: [float(v) for v in values] for k, values in history.history.items()},
        "input_size": int(features[0].size) if features.ndim > 1 else None,
    }


# ---------------------------------------------------------------------------------------------
# The fitted model.


class KerasModel(Model, _KerasModelParams, MLReadable, MLWritable):
    """A trained Keras model as a Spark ML Transformer. Runs on the driver; predictions run in executors.

    ``transform(df)`` adds ``outputCol`` (the model's output, ``array<float>``) and,
    when ``predictionCol`` is non-empty, ``predictionCol`` (``double``: the argmax
    of a multi-value output, else the single value).

    Attributes:
        model_path: the SavedModel the executors load (after ``fit``: ``modelDir/model``, whose
            latest version is read).
        history: training history from ``fit`` (loss per epoch, ...).
    """

    @keyword_only
    def __init__(self, **params):
        """Params by keyword: ``featuresCol``, ``predictionCol``, ``outputCol``, ``predictBatchSize``.

        They are the estimator's (``fit`` copies them over), so their defaults are
        declared once, in the Params classes both share.
        """
        super().__init__()
        self.model_path: str | None = None
        self.history: dict = {}
        self._input_size: int | None = None
        self._set(**self._input_kwargs)

    @classmethod
    def from_saved_model(cls, model_path: str, input_size: int | None = None, **params) -> "KerasModel":
        """Wraps an existing saved Keras model (no training) as a Transformer.

        Args:
            model_path: a Keras model saved to a path, or an export of :func:`export_saved_model`
                (a version directory, or ``<base_dir>/<name>``: its latest version), readable on
                every executor.
            input_size: the flat length of the features arrays (None: scalar features).
            **params: Params, e.g. ``featuresCol="image"``.
        """
        model = cls(**params)
        model._set_trained(storage.normalize(model_path), input_size, {})
        return model

    def _set_trained(self, model_path: str, input_size: int | None, history: dict) -> None:
        self.model_path = model_path
        self._input_size = input_size
        self.history = history

    def _transform(self, dataset):
        from pyspark.sql import functions as F

        if self.model_path is None:
            raise ValueError("this KerasModel holds no model: get one from KerasEstimator.fit() or KerasModel.load().")
        features = _features_column(dataset, self.getFeaturesCol(), "featuresCol")
        output, scratch = self.getOutputCol(), f"_{self.uid}_features"
        result = inference.predict(
            dataset.withColumn(scratch, features), self.model_path, [scratch], output_col=output,
            batch_size=self.getPredictBatchSize(),
        ).drop(scratch)
        if self.getPredictionCol():
            scores = F.col(f"`{output}`")
            result = result.withColumn(
                self.getPredictionCol(),
                F.when(F.size(scores) > 1, inference.argmax(scores)).otherwise(scores[0].cast("double")),
            )
        return result

    def write(self) -> "_KerasModelWriter":
        return _KerasModelWriter(self)

    @classmethod
    def read(cls) -> "_KerasModelReader":
        return _KerasModelReader(cls)


class _KerasModelWriter(DefaultParamsWriter):
    """Writes ``metadata/`` (Params, input size, history) and copies the SavedModel into ``model/``."""

    def saveImpl(self, path: str) -> None:
        model: KerasModel = self.instance
        if model.model_path is None:
            raise ValueError("cannot save a KerasModel that holds no model (fit or load one first).")
        storage.check_spark_writable(self.sparkSession, path)
        destination = storage.join(path, MODEL_SUBDIR)
        DefaultParamsWriter.saveMetadata(
            model, path, self.sparkSession, extraMetadata={"inputSize": model._input_size, "history": model.history}
        )
        storage.delete(destination)  # overwrite(): Spark removed the stage directory already
        with storage.local_copy(model.model_path) as local:
            if storage.is_remote(destination):
                storage.upload(local, destination)
            else:
                shutil.copytree(local, destination)


class _KerasModelReader(DefaultParamsReader):
    def load(self, path: str) -> KerasModel:
        metadata = DefaultParamsReader.loadMetadata(path, self.sparkSession)
        model = self.cls()
        model._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(model, metadata)
        saved = storage.join(path, MODEL_SUBDIR)
        if not storage.list_files(saved):
            raise FileNotFoundError(f"{path} is not a saved KerasModel: it has no {MODEL_SUBDIR}/ directory.")
        model._set_trained(saved, metadata.get("inputSize"), metadata.get("history") or {})
        return model


# ---------------------------------------------------------------------------------------------
# Helpers.


def _encode_build_fn(value) -> str:
    """Param converter: a callable becomes base64 cloudpickle; an encoded string (from a saved stage) stays."""
    if isinstance(value, str):
        return value
    if not callable(value):
        raise TypeError(f"buildFn must be a function returning a compiled tf.keras model; got {type(value).__name__}.")
    from tfos_lib.process import pickle_with_code

    # The function's own code goes by value, so executors need not import it (a job or
    # test module is not on their path); tfos_lib is shipped to them.
    return base64.b64encode(pickle_with_code(value)).decode("ascii")


def _features_column(dataset, name: str, param: str):
    """The features as a column the model can take: vectors become ``array<float>``, number arrays float."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    kind = inference.column_type(dataset, name, param)
    column = F.col(f"`{name}`")
    if isinstance(kind, VectorUDT):
        return vector_to_array(column, "float32")
    if isinstance(kind, T.ArrayType) and isinstance(kind.elementType, T.NumericType):
        return column.cast(T.ArrayType(T.FloatType()))
    if isinstance(kind, T.NumericType):
        return column.cast(T.FloatType())
    raise ValueError(
        f"{param}={name!r} has type {kind.simpleString()}; expected an ML vector, an array of numbers, or a number "
        "(assemble columns with pyspark.ml.feature.VectorAssembler)."
    )


def _label_column(dataset, name: str):
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    kind = inference.column_type(dataset, name, "labelCol")
    if not isinstance(kind, T.NumericType):
        raise ValueError(
            f"labelCol={name!r} has type {kind.simpleString()}; expected a number "
            "(index string labels with pyspark.ml.feature.StringIndexer)."
        )
    return F.col(f"`{name}`")

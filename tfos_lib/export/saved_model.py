"""Writes a tf-keras model as a SavedModel in the TensorFlow Serving layout, and finds the latest version.

The layout is what TF Serving (``--model_base_path=<base_dir>/<name>``) and
``tf.saved_model.load`` read::

    <base_dir>/<name>/<version>/saved_model.pb
                                variables/
                                assets.extra/signature.json   (what the signature takes and returns)

``version`` is a positive integer; a new export without one takes the next free
number, so a server that watches ``<base_dir>/<name>`` picks it up. Each version is
written under a temporary name and renamed into place, so a watcher never sees
half a model.

The ``serving_default`` signature has stable names, independent of Keras's layer
auto-naming:

* inputs: ``inputs`` for a single-input model (else the Keras input names),
  shape ``[batch, *model input shape]``; pass ``input_names`` to choose them;
* outputs: ``outputs`` for a single-output model (else the Keras output names);
  pass ``output_names`` to choose them;
* ``preprocess``, when given, is traced into the signature before the model (e.g.
  scaling raw pixels to [0, 1]), so a client sends raw values; otherwise the
  expected input range is stated in ``signature.json``'s ``preprocessing``.

The directory is also a Keras SavedModel (``tf.keras.models.load_model`` loads it),
and ``saved_model_cli show --dir <version dir> --all`` lists the signature.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from typing import Any, Callable, Sequence

from tfos_lib import storage

__all__ = [
    "SERVING_SIGNATURE",
    "SIGNATURE_FILE",
    "export_saved_model",
    "export_ydf_model",
    "import_required_ops",
    "latest_version",
    "next_version",
    "read_signature",
    "resolve_saved_model",
]

SERVING_SIGNATURE = "serving_default"
#: Written into every export: the signature's inputs, outputs and preprocessing, as JSON.
SIGNATURE_FILE = os.path.join("assets.extra", "signature.json")


def _versions(model_dir: str) -> list[int]:
    """Version numbers under ``model_dir`` (a local path or a URI) that hold a complete SavedModel."""
    if storage.is_remote(model_dir):
        return sorted({int(rel.split("/")[0]) for rel in storage.list_files(model_dir)
                       if rel.split("/")[0].isdigit() and rel.split("/", 1)[1:] == ["saved_model.pb"]})
    if not os.path.isdir(model_dir):
        return []
    return sorted(
        int(entry)
        for entry in os.listdir(model_dir)
        if entry.isdigit() and os.path.exists(os.path.join(model_dir, entry, "saved_model.pb"))
    )


def next_version(model_dir: str) -> int:
    """One more than the highest complete version under ``model_dir`` (1 for a new model)."""
    return (_versions(model_dir) or [0])[-1] + 1


def latest_version(model_dir: str) -> int:
    """The highest version under ``model_dir`` (``<base_dir>/<name>``).

    Raises:
        FileNotFoundError: no ``<version>/saved_model.pb`` there.
    """
    versions = _versions(model_dir)
    if not versions:
        if storage.is_remote(model_dir):
            found = storage.list_files(model_dir)[:20] or "nothing"
        else:
            found = sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else "nothing (no such directory)"
        raise FileNotFoundError(
            f"no model version under {model_dir!r}: expected <version>/saved_model.pb with an integer version, "
            f"found {found}. Export one with tfos_lib.export.saved_model.export_saved_model(model, base_dir, name)."
        )
    return versions[-1]


def resolve_saved_model(path: str) -> str:
    """The SavedModel directory ``path`` means: itself if it holds ``saved_model.pb``, else its latest version.

    Accepts a version directory, a model directory (``<base_dir>/<name>``, served
    as its highest version) or a plain unversioned SavedModel, as a local path or a
    URI. Other paths (a ``.keras``/``.h5``/``.tflite`` file, a missing path) come
    back unchanged.
    """
    if storage.is_remote(path):
        if path.endswith((".keras", ".h5", ".tflite")) or storage.exists(storage.join(path, "saved_model.pb")):
            return path
        return storage.join(path, str(latest_version(path))) if storage.list_files(path) else path
    if not os.path.isdir(path) or os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    return os.path.join(path, str(latest_version(path)))


def read_signature(path: str) -> dict | None:
    """The ``signature.json`` of an export (a version or model directory, local or URI); None for other models."""
    path = resolve_saved_model(path)
    try:
        return json.loads(storage.read_bytes(storage.join(path, *SIGNATURE_FILE.split(os.sep))))
    except (FileNotFoundError, NotADirectoryError):
        return None


def _names(given: Sequence[str] | None, defaults: list[str], single: str, what: str) -> list[str]:
    if given is not None:
        names = list(given)
        if len(names) != len(defaults) or len(set(names)) != len(names):
            raise ValueError(f"{what} must be {len(defaults)} distinct name(s), one per model {what[:-6]}; "
                             f"got {names} (the model's are {defaults}).")
        return names
    return [single] if len(defaults) == 1 else defaults


def _model_inputs(tf, model) -> list:
    """The model's input tensors or specs (a subclassed model: what it was first called with)."""
    if model.inputs:
        return list(model.inputs)
    saved = model.save_spec() if model.built else None
    if not saved:
        raise ValueError("the model has no defined inputs; build it with an Input layer (or call it once) first.")
    return [spec if spec.name else tf.TensorSpec(spec.shape, spec.dtype, name=f"input_{i}")
            for i, spec in enumerate(tf.nest.flatten(saved[0]))]


def export_saved_model(
    model,
    base_dir: str,
    name: str,
    *,
    version: int | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    preprocess: Callable[[dict], dict] | None = None,
    input_dtypes: dict[str, Any] | None = None,
    preprocessing: str | None = None,
    overwrite: bool = False,
) -> str:
    """Writes ``model`` to ``<base_dir>/<name>/<version>/`` with a ``serving_default`` signature.

    Runs wherever the model is (the chief worker, the driver); imports TensorFlow.

    Args:
        model: a built tf-keras model.
        base_dir: the model base directory (local or shared path).
        name: the model name (a directory name).
        version: a positive integer; default: one more than the highest there.
        input_names, output_names: the signature's names (default: ``inputs``/``outputs``
            for one input/output, the Keras names otherwise).
        preprocess: ``fn({input name: tensor}) -> {input name: tensor}`` traced into the
            signature before the model (its inputs then take raw values).
        input_dtypes: signature dtypes by input name when ``preprocess`` takes other
            dtypes than the model (e.g. ``{"inputs": tf.uint8}``).
        preprocessing: what a client must do to its inputs (or what ``preprocess``
            does), recorded in ``signature.json``.
        overwrite: replace an existing ``version`` (else that is an error).

    Returns:
        The version directory written.

    Raises:
        ValueError: a bad name or version, names that do not match the model, or an
            existing version without ``overwrite``.
    """
    from tfos_lib.tfenv import import_tensorflow

    tf = import_tensorflow()
    model_dir, version = _target(base_dir, name, version, overwrite)
    model_inputs = _model_inputs(tf, model)
    inputs = _names(input_names, [t.name.split(":")[0] for t in model_inputs], "inputs", "input_names")
    outputs = _names(output_names, list(model.output_names or ["outputs"]), "outputs", "output_names")
    dtypes = input_dtypes or {}
    specs = [tf.TensorSpec([None, *t.shape[1:]], dtypes.get(n, t.dtype), name=n) for n, t in zip(inputs, model_inputs)]

    @tf.function(input_signature=specs)
    def serve(*tensors):
        feeds = dict(zip(inputs, tensors))
        if preprocess is not None:
            feeds = preprocess(feeds)
        args = [feeds[n] for n in inputs]
        result = model(args if len(args) > 1 else args[0], training=False)
        result = result if isinstance(result, (list, tuple)) else [result]
        return dict(zip(outputs, result))

    return _publish(
        model_dir, version, serve, specs,
        lambda path: model.save(path, save_format="tf", include_optimizer=False, signatures={SERVING_SIGNATURE: serve}),
        {"preprocessing": preprocessing or ("in the graph" if preprocess is not None else "none")},
    )


def export_ydf_model(
    model,
    base_dir: str,
    name: str,
    feature_names: Sequence[str],
    *,
    version: int | None = None,
    output_name: str = "probability",
    overwrite: bool = False,
) -> str:
    """Writes a YDF model (e.g. a gradient-boosted forest) to ``<base_dir>/<name>/<version>/`` for TF Serving.

    Runs on the driver or the chief; imports TensorFlow and ``ydf_tf`` (the
    ``ydf-tf`` package, which provides the forest inference op for this TensorFlow).
    The ``serving_default`` signature takes one float32 matrix ``inputs``
    ``[batch, len(feature_names)]``, columns in ``feature_names`` order (recorded in
    ``signature.json``), and returns ``output_name``: YDF's prediction (for a binary
    classifier, the positive class's probability, ``[batch]``).

    The SavedModel uses the YDF inference op, which TF Serving has built in. A Python
    process registers it with ``import ydf_tf`` before ``tf.saved_model.load``;
    :func:`import_required_ops` does that from ``signature.json``'s ``requires``, and
    :mod:`tfos_lib.ml.inference` calls it.

    Returns:
        The version directory written.
    """
    from tfos_lib.tfenv import import_tensorflow

    tf = import_tensorflow()
    features = list(feature_names)
    if not features or len(set(features)) != len(features):
        raise ValueError(f"feature_names must be distinct and non-empty; got {features}.")
    missing = sorted(set(model.input_feature_names()) - set(features))
    if missing:
        raise ValueError(f"the YDF model reads features {missing} that are not in feature_names.")
    model_dir, version = _target(base_dir, name, version, overwrite)
    module = tf.Module()
    module.forest = model.to_tensorflow_function()  # needs ydf_tf; a tf.Module that takes {feature: [batch]}
    specs = [tf.TensorSpec([None, len(features)], tf.float32, name="inputs")]

    used = [(n, features.index(n)) for n in model.input_feature_names()]  # a forest may ignore some columns

    @tf.function(input_signature=specs)
    def serve(inputs):
        return {output_name: module.forest({n: inputs[:, i] for n, i in used})}

    module.serve = serve
    return _publish(
        model_dir, version, serve, specs,
        lambda path: tf.saved_model.save(module, path, signatures={SERVING_SIGNATURE: serve}),
        {"preprocessing": "none: raw feature values, columns in 'features' order", "features": features,
         "requires": ["ydf_tf"]},
    )


def import_required_ops(path: str) -> None:
    """Imports the modules an export's ``signature.json`` lists under ``requires`` (custom TensorFlow ops).

    Call before ``tf.saved_model.load`` on a local version directory.

    Raises:
        ImportError: a module is missing; says which package provides it.
    """
    signature = read_signature(path) or {}
    for module in signature.get("requires", []):
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ImportError(
                f"the model at {path!r} uses TensorFlow ops from {module!r}, which does not import here ({error}). "
                f"Install it on every executor: pip install {module.replace('_', '-')}."
            ) from error


def _target(base_dir: str, name: str, version: int | None, overwrite: bool) -> tuple[str, int]:
    """``(<base_dir>/<name>, version)`` for a new export, the version checked (and chosen when None)."""
    if not name or os.sep in name or name in (".", ".."):
        raise ValueError(f"name must be a plain directory name; got {name!r}.")
    model_dir = os.path.join(base_dir, name)
    if version is None:
        version = next_version(model_dir)
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer (TF Serving's layout); got {version!r}.")
    path = os.path.join(model_dir, str(version))
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"{path} exists already; pass overwrite=True or another version.")
    return model_dir, version


def _publish(model_dir: str, version: int, serve, specs, save: Callable[[str], None], extra: dict) -> str:
    """Saves under a temporary name, adds ``signature.json``, and renames the version into place."""
    path = os.path.join(model_dir, str(version))
    temporary = os.path.join(model_dir, f".tmp-{version}-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    save(temporary)
    returned = serve.get_concrete_function().structured_outputs
    description = {
        "model": os.path.basename(model_dir),
        "version": version,
        "signature": SERVING_SIGNATURE,
        "inputs": {s.name: {"dtype": s.dtype.name, "shape": [d for d in s.shape.as_list()]} for s in specs},
        "outputs": {n: {"dtype": t.dtype.name, "shape": t.shape.as_list()} for n, t in returned.items()},
        **extra,
    }
    os.makedirs(os.path.join(temporary, "assets.extra"), exist_ok=True)
    with open(os.path.join(temporary, SIGNATURE_FILE), "w") as f:
        json.dump(description, f, indent=2)
    if os.path.exists(path):
        shutil.rmtree(path)
    os.replace(temporary, path)
    return path

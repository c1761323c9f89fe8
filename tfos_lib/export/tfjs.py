"""Writes a tf-keras model in TensorFlow.js's *layers-model* format, and reads it back.

The format is what ``tf.loadLayersModel(url)`` loads: a ``model.json`` and binary
weight shards next to it::

    {
      "format": "layers-model",
      "generatedBy": "keras v2.21.0",
      "convertedBy": "tfos_lib.export.tfjs",
      "modelTopology": {"keras_version": "2.21.0", "backend": "tensorflow",
                        "model_config": <the Keras model JSON: {"class_name", "config"}>},
      "weightsManifest": [{"paths": ["group1-shard1of1.bin"],
                           "weights": [{"name": "gru_1/gru_cell/kernel", "shape": [8, 48],
                                        "dtype": "float32"}, ...]}]
    }

A group's shards, concatenated, hold its weights back to back in manifest order,
little-endian and row-major; a weight may straddle two shards. TF.js matches
weights to layers by name (``<layer>/<weight>``; it drops the inner cell scope of
RNN weight names itself).

Why not the ``tensorflowjs`` pip package (``tfjs.converters.save_keras_model``):
it does not import next to TensorFlow 2.21 (it imports tensorflow-decision-forests,
which pins an older TensorFlow), and it would pull in a large dependency set
(jax, flax, tensorflow-hub) for what is a JSON document plus float arrays. This
module writes exactly what the official converter writes for a Keras HDF5 model
(topology from the model's JSON, weight names without the ``:0`` suffix, one
weight group, 4 MiB shards) and refuses configurations TF.js cannot load.

Nothing here imports TensorFlow: :func:`save_layers_model` needs only a tf-keras
model's ``to_json()``, ``layers`` and ``weights``, so it runs wherever the model is
(in jobs, the chief worker, an executor). :func:`read_layers_model` is plain numpy.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

__all__ = [
    "DEFAULT_SHARD_BYTES",
    "MODEL_JSON",
    "TfjsCompatibilityError",
    "check_compatible",
    "read_layers_model",
    "save_layers_model",
    "write_weight_shards",
]

MODEL_JSON = "model.json"
FORMAT = "layers-model"
#: The official converter's default shard size; browsers cache files of this size well.
DEFAULT_SHARD_BYTES = 4 * 1024 * 1024
# Dtypes TF.js weights can have that tf-keras models also use; little-endian on disk.
_DTYPES = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4")}
_RNN_LAYERS = {"GRU", "LSTM", "SimpleRNN"}


class TfjsCompatibilityError(ValueError):
    """The model uses something TensorFlow.js's layers API cannot load or would compute differently."""


def _layer_configs(config: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    """Every layer config in a Keras model config, wrappers and nested models included."""
    inner = config.get("config", {})
    if isinstance(inner, Mapping):
        for layer in inner.get("layers", []) or []:
            yield layer
            yield from _layer_configs(layer)
        if isinstance(inner.get("layer"), Mapping):  # Bidirectional, TimeDistributed
            yield inner["layer"]
            yield from _layer_configs(inner["layer"])


def check_compatible(model_config: Mapping[str, Any]) -> None:
    """Raises if a Keras model config has settings TF.js (tfjs-layers 4.x) rejects or ignores.

    Checked, because they load silently wrong or fail in the browser only:

    - ``GRU(reset_after=True)`` (the TF 2 default): tfjs-layers throws "GRUCell does
      not support reset_after parameter set to true". Build the GRU with
      ``reset_after=False`` (the Keras 2.1 behaviour the book's model had).
    - ``time_major=True`` on an RNN: tfjs-layers has no such option and would read
      time steps as the batch.

    ``implementation`` (1 or 2) is fine: TF.js always computes like implementation 2,
    which gives the same values.

    Args:
        model_config: ``json.loads(model.to_json())``.

    Raises:
        TfjsCompatibilityError: naming each offending layer and what to change.
    """
    if str(model_config.get("keras_version", "2")).split(".")[0] != "2":
        raise TfjsCompatibilityError(
            f"model.json needs a Keras 2 (tf-keras) model; this one is Keras {model_config['keras_version']}. "
            "Build it with tf-keras (import tfos_lib first: it sets TF_USE_LEGACY_KERAS=1)."
        )
    problems = []
    for layer in _layer_configs(model_config):
        cls, cfg = layer.get("class_name"), layer.get("config", {})
        name = cfg.get("name", "?")
        if cls in _RNN_LAYERS and cfg.get("time_major"):
            problems.append(f"layer {name!r} ({cls}) has time_major=True; TF.js only supports time_major=False")
        if cls == "GRU" and cfg.get("reset_after"):
            problems.append(
                f"layer {name!r} (GRU) has reset_after=True (the TF 2 default); TF.js only supports "
                "reset_after=False: build it as GRU(..., reset_after=False)"
            )
    if problems:
        raise TfjsCompatibilityError("cannot export to TensorFlow.js: " + "; ".join(problems) + ".")


def _weight_entries(model) -> list[tuple[str, np.ndarray]]:
    """(name, value) of every weight, named as the official converter names them."""
    entries, seen = [], set()
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.weights:
            raise TfjsCompatibilityError(
                f"layer {layer.name!r} is a nested model; export a flat model (its layers inline) instead."
            )
        for weight in layer.weights:
            name = weight.name[:-2] if weight.name.endswith(":0") else weight.name
            if not name.startswith(layer.name + "/"):
                # TF.js finds a weight by its layer's name; a variable created under some
                # other name scope would load into nothing.
                raise TfjsCompatibilityError(
                    f"weight {weight.name!r} of layer {layer.name!r} does not start with the layer's name; "
                    "build the model outside custom name scopes."
                )
            if name in seen:
                raise TfjsCompatibilityError(f"two weights are both named {name!r}; give the layers unique names.")
            seen.add(name)
            entries.append((name, np.asarray(weight.numpy())))
    return entries


def write_weight_shards(
    weights: Iterable[tuple[str, np.ndarray]], directory: str | os.PathLike, shard_bytes: int = DEFAULT_SHARD_BYTES
) -> list[dict]:
    """Writes weights as one TF.js weight group, split into ``group1-shard<i>of<n>.bin`` files.

    Args:
        weights: ``(name, array)`` pairs, in the order they are stored.
        directory: where the shards go (created if missing).
        shard_bytes: maximum size of one shard file.

    Returns:
        The ``weightsManifest`` list for ``model.json``.

    Raises:
        TfjsCompatibilityError: a weight's dtype is not float32 or int32 (float64
            arrays are refused rather than silently halved in precision).
        ValueError: ``shard_bytes`` is not positive.
    """
    if shard_bytes <= 0:
        raise ValueError(f"shard_bytes must be a positive number of bytes; got {shard_bytes}.")
    specs, chunks = [], []
    for name, value in weights:
        value = np.asarray(value)
        dtype = value.dtype.name
        if dtype not in _DTYPES:
            raise TfjsCompatibilityError(
                f"weight {name!r} has dtype {dtype}; TF.js weights must be one of {sorted(_DTYPES)} (cast it first)."
            )
        specs.append({"name": name, "shape": list(value.shape), "dtype": dtype})
        chunks.append(np.ascontiguousarray(value, dtype=_DTYPES[dtype]).tobytes())
    data = b"".join(chunks)
    count = max(1, math.ceil(len(data) / shard_bytes))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = f"group1-shard{i + 1}of{count}.bin"
        (directory / path).write_bytes(data[i * shard_bytes : (i + 1) * shard_bytes])
        paths.append(path)
    return [{"paths": paths, "weights": specs}]


def save_layers_model(
    model,
    directory: str | os.PathLike,
    *,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Writes ``model`` as a TF.js layers model (``model.json`` + weight shards) into ``directory``.

    Runs where the model is (driver or executor); imports no TensorFlow itself.

    Args:
        model: a built tf-keras model (Sequential or functional, not nested).
        directory: output directory, created if missing. Existing shard files of
            an earlier export are replaced.
        shard_bytes: maximum size of one weight file.
        metadata: optional JSON-ready values stored as ``userDefinedMetadata``
            (TF.js exposes them as ``model.getUserDefinedMetadata()``).

    Returns:
        The path of ``model.json``.

    Raises:
        TfjsCompatibilityError: the model uses something TF.js cannot load (see
            :func:`check_compatible`), or its weights cannot be named or stored.
    """
    keras_json = json.loads(model.to_json())
    check_compatible(keras_json)
    weights = _weight_entries(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("group*-shard*of*.bin"):
        old.unlink()  # a smaller re-export would otherwise leave stale shards behind
    keras_version = keras_json.get("keras_version", "2")
    document = {
        "format": FORMAT,
        "generatedBy": f"keras v{keras_version}",
        "convertedBy": "tfos_lib.export.tfjs",
        "modelTopology": {
            "keras_version": keras_version,
            "backend": keras_json.get("backend", "tensorflow"),
            "model_config": {"class_name": keras_json["class_name"], "config": keras_json["config"]},
        },
        "weightsManifest": write_weight_shards(weights, directory, shard_bytes),
    }
    if metadata:
        document["userDefinedMetadata"] = dict(metadata)
    path = directory / MODEL_JSON
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def read_layers_model(directory: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Reads a TF.js layers model back: its ``model.json`` and every weight as numpy.

    Runs anywhere (numpy only). Used to check an export without a browser.

    Args:
        directory: the folder holding ``model.json`` and its shards.

    Returns:
        ``(model_json, weights)``: the parsed ``model.json`` and ``name -> array``
        in manifest order.

    Raises:
        FileNotFoundError: ``model.json`` or a shard it names is missing.
        ValueError: not a layers model, or a group's shards hold fewer or more
            bytes than its weights need (a truncated or mismatched file).
    """
    directory = Path(directory)
    path = directory / MODEL_JSON
    if not path.is_file():
        raise FileNotFoundError(f"no {MODEL_JSON} in {directory}: expected a TF.js layers model exported there.")
    document = json.loads(path.read_text(encoding="utf-8"))
    if document.get("format", FORMAT) != FORMAT or "modelTopology" not in document:
        raise ValueError(f"{path} is not a TF.js layers model (format {document.get('format')!r}).")
    weights: dict[str, np.ndarray] = {}
    for group in document.get("weightsManifest", []):
        files = [directory / p for p in group["paths"]]
        for file in files:
            if not file.is_file():
                raise FileNotFoundError(f"{path} names weight file {file.name}, which is missing from {directory}.")
        data = b"".join(f.read_bytes() for f in files)
        offset = 0
        for spec in group["weights"]:
            dtype = _DTYPES.get(spec["dtype"])
            if dtype is None:
                raise ValueError(f"{path}: weight {spec['name']!r} has unsupported dtype {spec['dtype']!r}.")
            size = int(np.prod(spec["shape"], dtype=np.int64)) * dtype.itemsize
            if offset + size > len(data):
                raise ValueError(
                    f"{path}: weight files {group['paths']} hold {len(data)} bytes, but the weights need more "
                    f"(ran out at {spec['name']!r}); a shard is truncated or belongs to another export."
                )
            weights[spec["name"]] = np.frombuffer(data, dtype, count=size // dtype.itemsize, offset=offset).reshape(
                spec["shape"]
            ).astype(dtype.newbyteorder("="))
            offset += size
        if offset != len(data):
            raise ValueError(
                f"{path}: weight files {group['paths']} hold {len(data)} bytes but the manifest describes {offset}; "
                "the shards belong to another export."
            )
    return document, weights

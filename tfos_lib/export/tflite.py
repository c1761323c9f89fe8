"""Converts a tf-keras model or SavedModel to LiteRT (TFLite) and runs ``.tflite`` files in batches.

Three variants::

    from tfos_lib.export import tflite

    tflite.convert(model, "out/model_float32.tflite")                               # float32
    tflite.convert(model, "out/model_float16.tflite", quantization="float16")       # weights float16
    calibration = tflite.representative_rows(train_df, "pixels", rows=500)
    tflite.convert("out/serving/mnist", "out/model_int8.tflite", quantization="int8",
                   representative_data=calibration, int8_io=True)                   # full integer

``int8`` is full-integer post-training quantisation: weights and activations are
int8, calibrated on ``representative_data`` (rows of the training DataFrame, in
the model's input format); with ``int8_io`` the file's input and output tensors
are int8 too (:func:`batch_runner` quantises and dequantises around them),
otherwise they stay float32.

Errors are reported before anything is written: an op the LiteRT builtins lack
raises :class:`UnsupportedOpsError` naming the ops and the fix
(``select_tf_ops=True``: those ops run through the TensorFlow Select kernels, which
the interpreter must then link); a calibration set whose rows do not have the
model's input shape is refused.

Running: :func:`interpreter` opens a file with LiteRT (``ai-edge-litert``, the
interpreter that left TensorFlow), and :func:`batch_runner` is what
:mod:`tfos_lib.ml.inference` uses to score DataFrame columns with it, one
interpreter per Spark Python worker. The driver side (:func:`input_details`,
:func:`check_inputs`) and the runners never import TensorFlow.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Sequence

import numpy as np

from tfos_lib import storage

__all__ = [
    "QUANTIZATIONS",
    "UnsupportedOpsError",
    "batch_runner",
    "check_inputs",
    "convert",
    "input_details",
    "interpreter",
    "latency",
    "representative_rows",
]

QUANTIZATIONS = ("float32", "float16", "int8")


class UnsupportedOpsError(ValueError):
    """The model uses TensorFlow ops that LiteRT's builtin kernels do not have."""

    def __init__(self, ops: list[str], detail: str, custom: bool = False):
        self.ops = ops
        if custom:  # not even among the TensorFlow kernels LiteRT can link (Select TF ops)
            fix = ("These ops are not available as Select TF ops either: replace them in the model, or implement "
                   "them as LiteRT custom ops (converter.allow_custom_ops = True plus a kernel in the app).")
        else:
            fix = ("Fix: convert with select_tf_ops=True (converter.target_spec.supported_ops += "
                   "[tf.lite.OpsSet.SELECT_TF_OPS]), which runs them with TensorFlow kernels and needs an "
                   "interpreter built with the Flex delegate; or replace those ops in the model.")
        super().__init__(
            f"LiteRT's builtin ops do not include {', '.join(ops) or 'some ops of this model'}. {fix}"
            + (f" Converter: {detail.strip()[:600]}" if detail.strip() else "")
        )


def interpreter(path: str, num_threads: int | None = 1):
    """A LiteRT interpreter for ``path`` with its tensors allocated (no TensorFlow import)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as error:  # pragma: no cover - the extra is missing
        raise ImportError(
            "running .tflite files needs the LiteRT interpreter: pip install ai-edge-litert "
            "(or pip install tfos_lib[tflite])."
        ) from error
    model = Interpreter(model_path=path, num_threads=num_threads)
    model.allocate_tensors()
    return model


def input_details(path: str) -> list[dict]:
    """The inputs of a ``.tflite`` file, in the order :func:`batch_runner` takes them (by name)."""
    return sorted(interpreter(path).get_input_details(), key=lambda d: d["name"])


def check_inputs(path: str, input_sizes: Sequence[int | None], columns: Sequence[str] | None = None) -> None:
    """Refuses DataFrame columns that do not match the ``.tflite`` inputs (driver side, before any executor work).

    ``input_sizes`` are the flat lengths of the columns' arrays (None: a scalar column).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a different number of inputs, or a flat length that differs.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no .tflite file at {path!r}.")
    details = input_details(path)
    columns = list(columns) if columns else [f"column {i}" for i in range(len(input_sizes))]
    if len(details) != len(input_sizes):
        raise ValueError(
            f"{path} takes {len(details)} input(s) {[d['name'] for d in details]}, but {len(input_sizes)} column(s) "
            f"{columns} were given; pass one column per input."
        )
    for detail, size, column in zip(details, input_sizes, columns):
        shape = [int(d) for d in detail["shape_signature"][1:]]
        expected = int(np.prod(shape)) if shape else None
        if expected is not None and any(d < 0 for d in shape):
            continue  # dynamic per-row shape: checked by the interpreter
        if (expected or 1) != (size or 1):
            found = f"arrays of {size} values" if size is not None else "a scalar column"
            raise ValueError(
                f"{path} input {detail['name']!r} takes rows of shape {shape} ({expected} values), but {column!r} "
                f"holds {found}. Score the column the model was converted for, or convert the model again."
            )


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    scale, zero_point = detail["quantization"]
    if np.issubdtype(dtype, np.integer) and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)


def _dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.issubdtype(q.dtype, np.integer) and scale:
        return (q.astype(np.float32) - zero_point) * scale
    return q.astype(np.float32, copy=False)


def batch_runner(model, num_inputs: int):
    """``(run, shapes)`` for :mod:`tfos_lib.ml.inference`: ``run(arrays) -> {output name: (batch, k) float32}``.

    Inputs are taken in name order; each batch resizes the interpreter's batch
    dimension when it changes (the last, shorter batch), quantising int inputs and
    dequantising int outputs with the file's scales.
    """
    inputs = sorted(model.get_input_details(), key=lambda d: d["name"])
    if len(inputs) != num_inputs:
        raise ValueError(
            f"the .tflite model takes {len(inputs)} inputs {[d['name'] for d in inputs]}, but {num_inputs} "
            "column(s) were given; pass one column per input, in name order."
        )
    shapes = [tuple(int(d) for d in detail["shape_signature"][1:]) for detail in inputs]
    state = {"batch": int(inputs[0]["shape"][0])}

    def run(arrays):
        batch = len(arrays[0])
        if batch != state["batch"]:
            for detail, shape in zip(inputs, shapes):
                model.resize_tensor_input(detail["index"], [batch, *shape])
            model.allocate_tensors()
            state["batch"] = batch
        for detail, x in zip(inputs, arrays):
            model.set_tensor(detail["index"], _quantize(np.asarray(x), detail))
        model.invoke()
        outputs = sorted(model.get_output_details(), key=lambda d: d["name"])
        return {d["name"]: _dequantize(model.get_tensor(d["index"]), d).reshape(batch, -1) for d in outputs}

    return run, shapes


def latency(path: str, images: np.ndarray, num_threads: int = 1) -> dict:
    """Per-image latency of ``path`` on ``num_threads`` threads: median and p95 in milliseconds over ``images``.

    Each image is one ``invoke`` at batch size 1 (a phone's case), after one warm-up call.
    """
    model = interpreter(path, num_threads)
    run, shapes = batch_runner(model, 1)
    rows = np.asarray(images, dtype=np.float32).reshape((len(images),) + shapes[0])
    run([rows[:1]])
    seconds = []
    for row in rows:
        started = time.perf_counter()
        run([row[None]])
        seconds.append(time.perf_counter() - started)
    ms = np.array(seconds) * 1000
    return {"median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)), "images": len(ms)}


def representative_rows(df, column: str, rows: int = 500, seed: int = 0) -> np.ndarray:
    """Up to ``rows`` random rows of an array column as a float32 ``(rows, n)`` array (driver side), for calibration."""
    from pyspark.sql import functions as F

    sample = df.select(column).orderBy(F.rand(seed)).limit(rows).toArrow()
    values = sample.column(0).combine_chunks()
    if len(values) == 0:
        raise ValueError(f"the DataFrame has no rows to calibrate with (column {column!r}).")
    return np.asarray(values.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(values), -1)


def _calibration(data: Any, shape: tuple, dtype) -> np.ndarray:
    """``data`` as rows of the model's input shape, or a clear error."""
    array = np.asarray(data)
    if array.ndim < 1 or len(array) == 0 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(
            f"representative_data must be a non-empty numeric array of rows; got {array.dtype} of shape {array.shape}."
        )
    per_row = int(np.prod(shape))
    if array.shape[1:] != shape and int(np.prod(array.shape[1:])) != per_row:
        raise ValueError(
            f"the int8 calibration set has rows of shape {list(array.shape[1:])}, but the model takes rows of shape "
            f"{list(shape)} ({per_row} values). Draw it from the training DataFrame's input column "
            "(tflite.representative_rows(train_df, column))."
        )
    return array.reshape((len(array),) + shape).astype(dtype)


def _unsupported_ops(message: str) -> tuple[list[str], str, bool]:
    """``(ops, detail lines, custom)`` from a converter error message."""
    listed = re.search(r"(Flex|Custom) ops: ([^\n]+)", message)
    ops = [op.strip().removeprefix("Flex") for op in listed.group(2).split(",")] if listed else []
    ops += re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", message)
    details = [line.strip() for line in message.splitlines() if line.strip().startswith("tf.")]
    custom = bool(listed and listed.group(1) == "Custom")
    return [f"tf.{op}" for op in dict.fromkeys(op for op in ops if op)], "; ".join(details), custom


def convert(
    model,
    output_path: str,
    *,
    quantization: str = "float32",
    representative_data: Any = None,
    int8_io: bool = False,
    select_tf_ops: bool = False,
    signature: str = "serving_default",
) -> dict:
    """Converts ``model`` to a ``.tflite`` file at ``output_path``.

    Args:
        model: a tf-keras model, or a SavedModel path (an export of
            :func:`tfos_lib.export.saved_model.export_saved_model`: its signature and
            in-graph preprocessing come along).
        output_path: the file to write.
        quantization: ``float32``, ``float16`` (weights) or ``int8`` (full integer).
        representative_data: for ``int8``: calibration rows, flat or in the input shape.
        int8_io: for ``int8``: int8 input and output tensors too.
        select_tf_ops: allow TensorFlow ops that have no LiteRT builtin kernel.
        signature: the SavedModel signature to convert.

    Returns:
        ``{"path", "quantization", "size_bytes"}``.

    Raises:
        ValueError: a bad option or calibration set; :class:`UnsupportedOpsError`.
    """
    from tfos_lib.export import saved_model
    from tfos_lib.tfenv import import_tensorflow

    tf = import_tensorflow()
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {list(QUANTIZATIONS)}; got {quantization!r}.")
    if int8_io and quantization != "int8":
        raise ValueError("int8_io needs quantization='int8'.")
    if isinstance(model, (str, os.PathLike)):
        path = saved_model.resolve_saved_model(os.fspath(model))
        loaded = tf.saved_model.load(path)
        if signature not in loaded.signatures:
            raise ValueError(f"the SavedModel at {path} has no signature {signature!r}; it has {list(loaded.signatures)}.")
        specs = sorted(loaded.signatures[signature].structured_input_signature[1].values(), key=lambda s: s.name)
        converter = tf.lite.TFLiteConverter.from_saved_model(path, signature_keys=[signature])
    else:
        specs = [tf.TensorSpec(t.shape, t.dtype) for t in model.inputs]
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        if representative_data is None:
            raise ValueError("int8 quantisation needs representative_data: rows of the training data to calibrate on.")
        if len(specs) != 1:
            raise ValueError(f"int8 calibration supports single-input models; this one has {len(specs)} inputs.")
        rows = _calibration(representative_data, tuple(specs[0].shape[1:]), specs[0].dtype.as_numpy_dtype)

        def calibration():
            for row in rows:
                yield [row[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calibration
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    if select_tf_ops:
        ops = [*ops, tf.lite.OpsSet.SELECT_TF_OPS]
    converter.target_spec.supported_ops = ops
    try:
        flatbuffer = converter.convert()
    except Exception as error:  # ConverterError: its message lists the ops
        message = str(error)
        if "not supported" in message or "flex op" in message or re.search("(Flex|Custom) ops:", message):
            raise UnsupportedOpsError(*_unsupported_ops(message)) from None
        raise
    storage.write_bytes(output_path, flatbuffer)  # a local path or a URI, written whole
    return {"path": output_path, "quantization": quantization, "size_bytes": len(flatbuffer)}

"""Batch inference over Spark DataFrames, in the executors.

A saved model is applied to DataFrame columns: an export in the TF Serving layout
(:mod:`tfos_lib.export.saved_model`, ``<base_dir>/<name>/<version>/``; the model
directory means its latest version), a LiteRT ``.tflite`` file
(:mod:`tfos_lib.export.tflite`; one interpreter per Python worker), a Keras model
saved to a path, or a plain TensorFlow SavedModel with a serving signature::

    from tfos_lib.ml import inference

    scored = inference.predict(test_df, "output/mnist/models/mnist", ["image"], output_col="probabilities")
    accuracy = inference.evaluate_classifier(test_df, "output/mnist/models/mnist", "image", "label")["accuracy"]

How it runs: :func:`predict` is a ``mapInArrow`` over the DataFrame. In each Spark
Python worker the factory from :func:`make_predict_fn` runs once and the model stays
loaded for later tasks; each Arrow batch of rows goes from its buffers to numpy (an
array column becomes one ``(rows, n)`` matrix, with no Python object per row), is cut
into ``batch_size`` model calls, and the outputs go back as Arrow ``list<float>``
columns. :func:`predict_udf` wraps the same factory in Spark's ``predict_batch_udf``
for use inside column expressions (it pays a Python object per array cell).
Nothing is collected to the driver, and the driver never imports TensorFlow.

Executors must be able to read ``model_path`` (a shared or distributed
filesystem on a real cluster, like ``tfos_lib.run``'s ``output_dir``). TensorFlow
in a Python worker uses as many threads as its task has CPUs
(``spark.task.cpus``), so N concurrent tasks on a host do not oversubscribe it;
GPU executors need nothing more (TensorFlow takes the GPUs the process sees).
"""

from __future__ import annotations

import collections
import functools
import inspect
import os
import uuid
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from tfos_lib import storage

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column, DataFrame

__all__ = [
    "argmax",
    "evaluate_classifier",
    "make_predict_fn",
    "predict",
    "predict_udf",
    "worker_tensorflow",
]

#: What :func:`predict` uses when no batch size is given: big enough to amortise
#: the per-call cost of Keras, small enough for image models on a 1 GB executor.
DEFAULT_BATCH_SIZE = 256


def worker_tensorflow():
    """Imports TensorFlow in a Spark Python worker, with legacy Keras and the task's CPU count.

    Runs on executors (inside a UDF or ``make_predict_fn``). ``TF_USE_LEGACY_KERAS``
    is set before the first import by :func:`tfos_lib.tfenv.import_tensorflow`, because
    executors may not have imported ``tfos_lib`` (which sets it) before the UDF runs.
    Thread pools are sized to the task's CPUs once per process (later calls find
    TensorFlow initialised and keep the pools).

    Returns:
        The ``tensorflow`` module.
    """
    from tfos_lib.tfenv import import_tensorflow

    return import_tensorflow(_task_cpus())


def column_type(df: DataFrame, name: str, param: str | None = None):
    """The Spark type of column ``name`` of ``df`` (driver side).

    Raises:
        ValueError: no such column; names the option ``param`` (when given) and the columns there are.
    """
    fields = {f.name: f.dataType for f in df.schema.fields}
    if name not in fields:
        what = f"{param}={name!r} is not a column" if param else f"no column {name!r}"
        raise ValueError(f"{what}; the DataFrame has {sorted(fields)}.")
    return fields[name]


def _task_cpus() -> int | None:
    """CPUs of the running Spark task (``spark.task.cpus``), or None outside a task."""
    try:
        from pyspark import TaskContext

        context = TaskContext.get()
        return context.cpus() if context is not None else None
    except Exception:  # not in a Spark task (e.g. called from a plain script)
        return None


def load_model(model_path: str, signature: str = "serving_default"):
    """Loads a saved model for inference. Runs on executors, once per Python worker.

    Args:
        model_path: an export of :func:`tfos_lib.export.saved_model.export_saved_model`
            (a version directory, or the model directory ``<base_dir>/<name>``: its
            latest version), a LiteRT ``.tflite`` file, a Keras model saved with
            ``model.save`` (a SavedModel directory with ``keras_metadata.pb``, a
            ``.keras`` or ``.h5`` file), or any TensorFlow SavedModel directory
            (then its ``signature`` is used).
        signature: the serving signature of a SavedModel.

    Returns:
        ``(kind, model)``: ``("keras", tf.keras.Model)``, ``("signature", concrete
        function)`` or ``("tflite", LiteRT interpreter)``.

    Raises:
        FileNotFoundError: nothing at ``model_path``.
        ValueError: a SavedModel without the requested signature.
    """
    if storage.is_remote(model_path):
        # TensorFlow 2.21 reads no object store itself: a temporary local copy, loaded into memory.
        if not storage.exists(model_path):
            raise FileNotFoundError(f"no model at {model_path!r}. Save one with model.save(path), or check the URI.")
        from tfos_lib.export import saved_model

        version = saved_model.resolve_saved_model(model_path)  # only the served version is downloaded
        with storage.local_copy(version) as local:
            return _load(local, signature, model_path)
    if not os.path.exists(model_path):
        raise FileNotFoundError(
            f"no model at {model_path!r} on this executor. Save one with model.save(path) and put it where every "
            "executor can read it (a shared or distributed filesystem path, or a URI such as s3a://bucket/model)."
        )
    return _load(model_path, signature, model_path)


def _load(model_path: str, signature: str, shown: str):
    from tfos_lib.export import saved_model

    if shown.endswith(".tflite"):
        from tfos_lib.export import tflite

        return "tflite", tflite.interpreter(model_path, num_threads=_task_cpus() or 1)
    tf = worker_tensorflow()
    model_path = saved_model.resolve_saved_model(model_path)
    exported = os.path.exists(os.path.join(model_path, saved_model.SIGNATURE_FILE))
    is_keras = os.path.isfile(model_path) or os.path.exists(os.path.join(model_path, "keras_metadata.pb"))
    if is_keras and not exported:
        return "keras", tf.keras.models.load_model(model_path, compile=False)
    saved_model.import_required_ops(model_path)  # e.g. a YDF forest's inference op
    loaded = tf.saved_model.load(model_path)
    if signature not in loaded.signatures:
        raise ValueError(
            f"the SavedModel at {shown!r} has no signature {signature!r}; it has {sorted(loaded.signatures)}. "
            "Pass signature=<one of them>."
        )
    function = loaded.signatures[signature]
    function._tfos_owner = loaded  # keeps the loaded object (and its variables) alive
    return "signature", function


def make_predict_fn(
    model_path: str,
    *,
    num_inputs: int = 1,
    output_names: Sequence[str] | None = None,
    input_names: Sequence[str] | None = None,
    signature: str = "serving_default",
    samples: int = 1,
    seed: int | None = None,
    loader: Callable[[str], Any] | None = None,
    summarize: Callable[[np.ndarray], Any] | None = None,
) -> Callable[[], Callable[..., Any]]:
    """The factory ``predict_batch_udf`` calls once per Python worker to load the model.

    Runs on the driver (building the factory) and on executors (calling it). The
    returned ``predict(*inputs)`` takes one numpy array per input column and:

    * reshapes each flat ``(batch, n)`` input to the model's own input shape, so
      DataFrames can hold images and sequences as flat arrays;
    * returns one ``(batch, k)`` float32 array (single output), or a dict of them
      by output name (``output_names``).

    Args:
        model_path: see :func:`load_model`.
        num_inputs: number of DataFrame columns, one per model input, in the
            model's input order (Keras) or ``input_names`` order (signatures).
        output_names: None for a model with one output; else the outputs to return
            (Keras: ``model.output_names``; signatures: the output keys).
        input_names: signature input names in column order (default: sorted).
        signature: the serving signature of a plain SavedModel.
        samples: forward passes per batch, for stochastic models (Monte-Carlo
            dropout, Bayesian layers); the model must have one output. The passes
            ``(samples, batch, k)`` go to ``summarize``; without it the result is
            ``(batch, samples * k)``, pass by pass.
        seed: with ``samples``, reseeds TensorFlow before each batch's passes, so the
            same rows in the same batches get the same draws (a loaded SavedModel's
            revived layers ignore it: give a ``loader`` that rebuilds the layers).
        loader: ``loader(path)`` returns the Keras model to use instead of
            :func:`load_model` (e.g. a model rebuilt from code, then its weights loaded);
            ``path`` is a local directory: the served version of an export (a URI's
            downloaded first).
        summarize: ``summarize(passes)`` returns one array or a dict of arrays by
            output name, each with the batch first.

    Returns:
        A picklable zero-argument factory.
    """
    output_names = list(output_names) if output_names else None
    input_names = list(input_names) if input_names else None

    def factory():
        # Runs once per Python worker: the model stays loaded for all later batches.
        kind, model = ("keras", _call_loader(loader, model_path)) if loader else load_model(model_path, signature)
        if kind == "keras":
            run, shapes = _keras_runner(model, num_inputs)
        elif kind == "tflite":
            from tfos_lib.export import tflite

            run, shapes = tflite.batch_runner(model, num_inputs)
        else:
            run, shapes = _signature_runner(model, num_inputs, input_names)

        def predict_batch(*inputs: np.ndarray):
            # inputs[i].shape = [batch, n_i] (flattened tensor column) or [batch] (scalar column)
            arrays = [_reshape(x, shape) for x, shape in zip(inputs, shapes)]
            outputs = run(arrays) if samples == 1 and summarize is None else _sampled(run, arrays)
            # outputs: name -> [batch, k] float32
            if output_names is None:
                if len(outputs) != 1:
                    raise ValueError(
                        f"the model at {model_path!r} has {len(outputs)} outputs {list(outputs)}; pass "
                        "output_names=[...] to choose them (each becomes a field of the result struct)."
                    )
                return next(iter(outputs.values()))
            missing = [n for n in output_names if n not in outputs]
            if missing:
                raise ValueError(
                    f"the model at {model_path!r} has no output(s) {missing}; its outputs are {list(outputs)}."
                )
            return {n: outputs[n] for n in output_names}

        def _sampled(run, arrays):
            if seed is not None:
                worker_tensorflow().keras.utils.set_random_seed(seed)
            passes = [run(arrays) for _ in range(samples)]
            if len(passes[0]) != 1:
                raise ValueError(f"samples={samples} needs a model with one output; it has {list(passes[0])}.")
            stacked = np.stack([next(iter(p.values())) for p in passes])  # (samples, batch, k)
            if summarize is None:
                return {"samples": stacked.transpose(1, 0, 2).reshape(stacked.shape[1], -1)}
            summary = summarize(stacked)
            return {k: _as_2d(v) for k, v in summary.items()} if isinstance(summary, dict) else {"summary": _as_2d(summary)}

        # predict_batch_udf counts the function's parameters to decide how many
        # columns it takes; *inputs has none, so give it an explicit signature.
        predict_batch.__signature__ = inspect.Signature(
            [inspect.Parameter(f"input_{i}", inspect.Parameter.POSITIONAL_ONLY) for i in range(num_inputs)]
        )
        return predict_batch

    return factory


def _call_loader(loader: Callable[[str], Any], model_path: str):
    """``loader`` on the SavedModel version ``model_path`` means, downloaded first when it is a URI."""
    from tfos_lib.export import saved_model

    path = saved_model.resolve_saved_model(model_path)
    if not storage.is_remote(path):
        return loader(path)
    with storage.local_copy(path) as local:  # the loader reads the files into memory before they go
        return loader(local)


def _keras_runner(model, num_inputs: int):
    if len(model.inputs) != num_inputs:
        raise ValueError(
            f"the Keras model takes {len(model.inputs)} inputs {[t.name for t in model.inputs]}, "
            f"but {num_inputs} column(s) were given; pass one column per input, in order."
        )
    tf = worker_tensorflow()
    shapes = [tuple(t.shape[1:]) for t in model.inputs]
    names = list(model.output_names)
    specs = [tf.TensorSpec([None, *t.shape[1:]], t.dtype) for t in model.inputs]

    # One graph for every batch size. model.predict_on_batch builds a one-batch tf.data
    # iterator on every call (about 15 ms: all of a small model's time per batch).
    @tf.function(input_signature=specs)
    def call(*tensors):
        return model(list(tensors) if len(tensors) > 1 else tensors[0], training=False)

    def run(arrays):
        result = call(*[tf.convert_to_tensor(a, s.dtype) for a, s in zip(arrays, specs)])
        result = result if isinstance(result, (list, tuple)) else [result]
        return {name: _as_2d(value.numpy()) for name, value in zip(names, result)}

    return run, shapes


def _signature_runner(function, num_inputs: int, input_names: list[str] | None):
    _, specs = function.structured_input_signature
    names = input_names or sorted(specs)
    if len(names) != num_inputs or set(names) - set(specs):
        raise ValueError(
            f"the SavedModel signature takes inputs {sorted(specs)}, but {num_inputs} column(s) were given"
            + (f" as {names}" if input_names else "")
            + "; pass one column per input and input_names=[...] in column order."
        )
    shapes = [tuple(specs[n].shape[1:]) for n in names]
    dtypes = [specs[n].dtype for n in names]

    def run(arrays):
        import tensorflow as tf

        feeds = {n: tf.convert_to_tensor(a, dtype=d) for n, a, d in zip(names, arrays, dtypes)}
        return {key: _as_2d(value.numpy()) for key, value in function(**feeds).items()}

    return run, shapes


def _reshape(x: np.ndarray, shape: tuple) -> np.ndarray:
    """Reshapes a flat batch to the model's per-row shape when that shape is fully known."""
    if x.dtype == object:  # strings or bytes: the model takes them as they are
        return x
    if shape and all(d is not None for d in shape) and x.shape[1:] != shape:
        return x.reshape((len(x),) + tuple(shape))
    return x


def _as_2d(value) -> np.ndarray:
    """Model output as a float32 ``(batch, k)`` array: Spark arrays are one row each."""
    array = np.asarray(value)
    if array.dtype != np.float32 and np.issubdtype(array.dtype, np.number):
        array = array.astype(np.float32)
    return array.reshape(len(array), -1)


# ---------------------------------------------------------------------------------------------
# Driver side.


def predict_udf(
    model_path: str,
    *,
    input_sizes: Sequence[int | None] = (None,),
    output_names: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    input_names: Sequence[str] | None = None,
    signature: str = "serving_default",
    columns: Sequence[str] | None = None,
    **sampling,
):
    """A pandas UDF (Spark's ``predict_batch_udf``) applying the model at ``model_path``.

    Runs on the driver. Use it as ``df.withColumn("out", udf("col1", "col2"))``
    with one column per model input.

    Args:
        model_path: see :func:`load_model`; must be readable on every executor.
        input_sizes: per input column, the flat length of its array values, or None
            for a scalar (number, string, binary) column. :func:`predict` finds them.
        output_names: None: one output, returned as ``array<float>``. A list: those
            outputs, returned as ``struct<name: array<float>, ...>``.
        batch_size: rows per model call.
        input_names: for plain SavedModels, the signature inputs in column order.
        signature: for plain SavedModels, the serving signature to call.
        columns: the input column names, for error messages.
        sampling: ``samples``, ``seed``, ``loader``, ``summarize`` of :func:`make_predict_fn`.

    Returns:
        The UDF.

    Raises:
        ValueError: ``batch_size`` < 1, no inputs, or columns a ``.tflite`` model does not take.
    """
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import types as T

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    input_sizes = list(input_sizes)
    if not input_sizes:
        raise ValueError("input_sizes must name at least one input (None for a scalar column).")
    if model_path.endswith(".tflite"):  # refused here, before any executor work
        from tfos_lib.export import tflite

        tflite.check_inputs(model_path, input_sizes, columns)
    vector = T.ArrayType(T.FloatType())
    return_type = vector if not output_names else T.StructType([T.StructField(n, vector) for n in output_names])
    # Spark reshapes array columns with these; all-None (scalar columns only) must be
    # passed as None, or Spark tries to reshape scalars.
    shapes = [[size] if size is not None else None for size in input_sizes]
    return predict_batch_udf(
        make_predict_fn(
            model_path,
            num_inputs=len(input_sizes),
            output_names=output_names,
            input_names=input_names,
            signature=signature,
            **sampling,
        ),
        return_type=return_type,
        batch_size=batch_size,
        input_tensor_shapes=shapes if any(s is not None for s in shapes) else None,
    )


def array_sizes(df: "DataFrame", columns: Sequence[str]) -> list[int | None]:
    """The flat length of each array column (read from the first row), None for scalar columns.

    Runs on the driver; one small Spark job when there are array columns. Vector
    (``VectorUDT``) columns must be converted first with
    ``pyspark.ml.functions.vector_to_array``; nested arrays with ``F.flatten``.

    Raises:
        ValueError: a column is missing, nested, or the DataFrame is empty.
    """
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    arrays = []
    for name in columns:
        kind = column_type(df, name)
        if isinstance(kind, T.ArrayType):
            if isinstance(kind.elementType, T.ArrayType):
                raise ValueError(
                    f"column {name!r} is a nested array ({kind.simpleString()}); flatten it with "
                    f"F.flatten(...) first: the model's input shape restores the dimensions."
                )
            arrays.append(name)
        elif isinstance(kind, VectorUDT):
            raise ValueError(
                f"column {name!r} is an ML vector; convert it with pyspark.ml.functions.vector_to_array first."
            )
    if not arrays:
        return [None] * len(columns)
    first = df.select(*[F.size(F.col(f"`{n}`")).alias(n) for n in arrays]).first()
    if first is None:
        raise ValueError("the DataFrame is empty: there is nothing to score.")
    return [first[n] if n in arrays else None for n in columns]


def predict(
    df: "DataFrame",
    model_path: str,
    input_cols: Sequence[str],
    *,
    output_col: str = "prediction",
    output_names: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    input_names: Sequence[str] | None = None,
    signature: str = "serving_default",
    **sampling,
) -> "DataFrame":
    """``df`` with the model's output for each row in ``output_col``. Runs on the driver, lazily.

    Args:
        df: the rows; one column per model input (numbers, strings, binary, or flat
            arrays of numbers reshaped to the model's input shape).
        model_path: see :func:`load_model`; readable on every executor.
        input_cols: the input columns, in the model's input order.
        output_col: the new column: ``array<float>``, or a struct of them when
            ``output_names`` is given.
        output_names: see :func:`predict_udf`.
        batch_size: rows per model call.
        input_names: for plain SavedModels, the signature inputs in column order.
        signature: for plain SavedModels, the serving signature.
        sampling: ``samples``, ``seed``, ``loader``, ``summarize``: Monte-Carlo passes
            of a stochastic model, see :func:`make_predict_fn`.

    Returns:
        A new DataFrame (nothing runs until an action).
    """
    from pyspark.sql import types as T

    input_cols = [input_cols] if isinstance(input_cols, str) else list(input_cols)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    if output_col in input_cols:
        raise ValueError(f"output_col={output_col!r} is also an input column; choose another name.")
    sizes = array_sizes(df, input_cols)
    if model_path.endswith(".tflite"):  # refused here, before any executor work
        from tfos_lib.export import tflite

        tflite.check_inputs(model_path, sizes, input_cols)
    vector = T.ArrayType(T.FloatType())
    output_type = vector if not output_names else T.StructType([T.StructField(n, vector) for n in output_names])
    rows = df.drop(output_col) if output_col in df.columns else df
    schema = T.StructType(rows.schema.fields + [T.StructField(output_col, output_type)])
    factory = make_predict_fn(model_path, num_inputs=len(input_cols), output_names=output_names,
                              input_names=input_names, signature=signature, **sampling)
    score = functools.partial(_score_arrow_batches, uuid.uuid4().hex, factory, input_cols, sizes,
                              output_col, list(output_names or []), batch_size)
    return rows.mapInArrow(score, schema)


# The loaded model of each predict() call, per Python worker (Spark reuses the worker for later tasks).
_PREDICTORS: "collections.OrderedDict[str, Callable]" = collections.OrderedDict()


def _score_arrow_batches(key, factory, columns, sizes, output_col, output_names, batch_size, batches):
    """mapInArrow's function: each Arrow batch of rows plus the model's output. Runs on executors.

    The inputs go from Arrow buffers to numpy without a Python object per row (Spark's
    pandas UDFs make one per array cell), and the outputs go back the same way.
    """
    import pyarrow as pa

    if key not in _PREDICTORS:
        while len(_PREDICTORS) >= 2:  # a long-lived worker keeps the last two models, not every one it met
            _PREDICTORS.popitem(last=False)
        _PREDICTORS[key] = factory()
    predict_batch = _PREDICTORS[key]
    for batch in batches:
        if not batch.num_rows:
            continue
        inputs = [_column_values(batch.column(batch.schema.get_field_index(c)), size, c)
                  for c, size in zip(columns, sizes)]
        parts = [predict_batch(*[x[start:start + batch_size] for x in inputs])
                 for start in range(0, batch.num_rows, batch_size)]
        if output_names:
            output = pa.StructArray.from_arrays(
                [_list_array(np.concatenate([p[n] for p in parts])) for n in output_names], names=output_names)
        else:
            output = _list_array(np.concatenate(parts))
        yield pa.RecordBatch.from_arrays(batch.columns + [output], names=batch.schema.names + [output_col])


def _column_values(column, size: int | None, name: str) -> np.ndarray:
    """An Arrow column as numpy: ``(rows, size)`` for an array column, ``(rows,)`` for a scalar one."""
    import pyarrow.compute as pc

    if column.null_count:
        raise ValueError(f"column {name!r} has {column.null_count} null row(s) in this batch; the model needs a "
                         "value in every row. Drop them (df.dropna(subset=[...])) or fill them first.")
    if size is None:
        return column.to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(column)
    if pc.min(lengths).as_py() != size or pc.max(lengths).as_py() != size:
        raise ValueError(f"column {name!r} holds arrays of {pc.min(lengths).as_py()} to {pc.max(lengths).as_py()} "
                         f"values; the first row had {size}, and every row must have the same length.")
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), size)


def _list_array(values: np.ndarray):
    """A ``(rows, k)`` float32 array as an Arrow ``list<float>`` column, sharing its buffer."""
    import pyarrow as pa

    values = np.ascontiguousarray(values, dtype=np.float32)
    rows, width = values.shape
    offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)))


def argmax(column: "Column | str") -> "Column":
    """The index of the largest element of an array column, as a double (Spark ML's prediction type).

    Pure Spark SQL, no Python per row. Ties go to the first index.
    """
    from pyspark.sql import functions as F

    column = F.col(column) if isinstance(column, str) else column
    return (F.array_position(column, F.array_max(column)) - 1).cast("double")


def evaluate_classifier(
    df: "DataFrame",
    model_path: str,
    features_col: str,
    label_col: str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict:
    """Scores a classifier over a DataFrame and returns its accuracy. Runs on the driver.

    The model's output is one score per class; the predicted class is its argmax.

    Args:
        df: rows with ``features_col`` (the model input) and ``label_col`` (class index).
        model_path: a saved Keras classifier (or SavedModel), readable on every executor.
        features_col: the model's input column.
        label_col: the true class index.
        batch_size: rows per model call.

    Returns:
        ``{"accuracy": float, "rows": int, "correct": int}``.

    Raises:
        ValueError: the DataFrame is empty.
    """
    from pyspark.sql import functions as F

    scored = predict(
        df.select(features_col, label_col), model_path, [features_col], output_col="_scores", batch_size=batch_size
    )
    row = scored.select(
        F.count(F.lit(1)).alias("rows"),
        F.sum((argmax("_scores") == F.col(label_col).cast("double")).cast("long")).alias("correct"),
    ).first()
    if not row["rows"]:
        raise ValueError("the DataFrame is empty: there is nothing to evaluate.")
    return {"accuracy": row["correct"] / row["rows"], "rows": int(row["rows"]), "correct": int(row["correct"])}

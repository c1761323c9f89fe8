"""Gradient-boosted trees trained by N Spark executors together: YDF's distributed learner on tfos_lib workers.

YDF (Yggdrasil Decision Forests, TF-DF's successor) trains a distributed GBT with
one manager and N workers that talk gRPC; its trees are the ones a single machine
would grow (the workers split the features, not the rows). Here every tfos_lib
worker (one Spark barrier task each) serves a YDF worker on the port the
rendezvous gave it (``ctx.addresses``), and the chief also runs the manager::

    def train_fn(ctx, cfg):
        model = forest.train_gbt(ctx, paths, working_dir, label="label", num_trees=100)
        ...                                     # the chief gets the model, the others None

    tfos_lib.run(train_fn, cfg, num_workers=2)

The dataset is a list of files every worker can read (CSV shards Spark wrote to a
shared path: :func:`write_shards`); ``working_dir`` must be shared too (YDF keeps
its dataset cache and snapshots there). :func:`score` scores a DataFrame in the executors with the
forest's TF Serving export (:func:`tfos_lib.export.saved_model.export_ydf_model`).
"""

from __future__ import annotations

import glob
import os
import time

# The chief writes this (per attempt) when training has ended, so the other workers stop serving.
_DONE = "tfos_lib-done-{attempt}"


def write_shards(df, directory: str, num_shards: int) -> str:
    """Writes ``df`` (scalar columns) as ``num_shards`` CSV files with a header; returns YDF's ``csv:a,b,...`` path."""
    df.repartition(num_shards).write.mode("overwrite").csv(directory, header=True)
    directory = directory.split("file://", 1)[-1]
    files = sorted(glob.glob(os.path.join(directory, "part-*.csv")))
    if not files:
        raise RuntimeError(f"Spark wrote no CSV shard under {directory}; is it on a filesystem this driver can list?")
    return "csv:" + ",".join(files)


def train_gbt(ctx, dataset: str, working_dir: str, *, timeout: float = 3600.0, **learner_args):
    """Trains ``ydf.DistributedGradientBoostedTreesLearner(**learner_args)`` on all of ``ctx``'s workers.

    Runs inside ``train_fn`` on every worker. Each serves a YDF worker; the chief runs
    the manager and returns the trained model, the others return None once the chief
    is done (or raise after ``timeout`` seconds without it).
    """
    import ydf

    from tfos_lib.rendezvous import find_free_port

    port = int(ctx.addresses[ctx.rank].rsplit(":", 1)[1]) if ctx.addresses else find_free_port()
    os.makedirs(working_dir, exist_ok=True)
    done = os.path.join(working_dir, _DONE.format(attempt=ctx.attempt))
    stop = ydf.start_worker(port, blocking=False)
    try:
        if ctx.is_chief:
            workers = list(ctx.addresses) or [f"localhost:{port}"]
            ctx.log(f"YDF manager: distributed GBT on {len(workers)} worker(s) {workers}")
            try:
                learner = ydf.DistributedGradientBoostedTreesLearner(
                    workers=workers, working_dir=working_dir, resume_training=True, worker_logs=False, **learner_args
                )
                return learner.train(dataset)
            finally:
                open(done, "w").close()
        deadline = time.monotonic() + timeout
        while not os.path.exists(done):
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {ctx.rank}: the YDF manager (the chief) did not finish within {timeout:.0f} s.")
            time.sleep(0.5)
        return None
    finally:
        stop()


def score(df, model_path: str, feature_columns: list[str], output: str = "probability"):
    """``df`` plus ``output`` (double): the exported forest's positive-class probability, computed in the executors.

    ``model_path`` is an export of :func:`tfos_lib.export.saved_model.export_ydf_model`
    (a version directory, or the model directory: its latest version), read by
    :mod:`tfos_lib.ml.inference` as any other served model.
    """
    from pyspark.sql import functions as F

    from tfos_lib.ml import inference

    scratch = "_forest_features"
    rows = df.withColumn(scratch, F.array(*[F.col(f"`{c}`").cast("float") for c in feature_columns]))
    scored = inference.predict(rows, model_path, [scratch], output_col=output)
    return scored.withColumn(output, F.col(output)[0].cast("double")).drop(scratch)

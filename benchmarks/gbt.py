"""Gradient-boosted trees at scale: Spark feature extraction, YDF on 1 vs 2 tfos_lib workers, and MLlib, in one run.

Generates ``--stars`` synthetic Kepler light curves (default 50,000, 1% hosts) in
Kaggle's CSV format, reads them with the job's validating reader, computes the
job's features in the executors (stars/s), then trains the same GBT (the job's
defaults) with YDF's distributed learner on 1 and on 2 workers and with MLlib's
GBTClassifier, and prints the times side by side. Measures; asserts nothing.

    python benchmarks/gbt.py                       # 50,000 stars, the transit search: long on 2 cores
    python benchmarks/gbt.py --stars 5000 --features fft
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stars", type=int, default=50_000)
    parser.add_argument("--features", default="transit", choices=("transit", "fft", "raw"))
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()

    import numpy as np
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from jobs import exoplanets
    from tfos_lib.datasets import kepler

    work = args.work_dir or tempfile.mkdtemp(prefix="gbt-bench-")
    hosts = max(2, args.stars // 100)
    started = time.perf_counter()
    path = os.path.join(work, "exoTrain.csv")
    chunk, rng = 5000, np.random.default_rng(0)
    with open(path, "w") as out:  # written in chunks: 50,000 x 3,197 doubles would be 1.3 GB at once
        out.write(",".join(kepler.HEADER) + "\n")
        for first in range(0, args.stars, chunk):
            n = min(chunk, args.stars - first)
            labels, flux, _ = kepler.simulate_stars(rng, n, int(round(hosts * n / args.stars)))
            rows = np.column_stack([np.where(labels == 1, 2, 1), np.round(flux, 2)])
            np.savetxt(out, rows, fmt=["%d"] + ["%.2f"] * kepler.NUM_FLUX, delimiter=",")
    generate_seconds = time.perf_counter() - started

    spark = (SparkSession.builder.master(args.master).appName("gbt-benchmark")
             .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    cfg = exoplanets.Config(output_dir=os.path.join(work, "out"), features=args.features)
    stars = kepler.read_split(spark, path)
    started = time.perf_counter()
    table, names = exoplanets.featurize(spark, stars, cfg)
    num_stars = table.count()
    feature_seconds = time.perf_counter() - started
    counts = dict(table.groupBy("label").count().collect())
    fit = table.withColumn("weight", F.when(F.col("label") == 1, counts[0] / counts[1]).otherwise(1.0)).cache()
    fit.count()

    results = {"stars": num_stars, "hosts": counts.get(1, 0), "features": args.features, "feature_columns": len(names),
               "master": args.master, "generate_seconds": generate_seconds, "feature_seconds": feature_seconds,
               "stars_per_second": num_stars / feature_seconds}
    for workers in (1, 2):
        run_cfg = exoplanets.Config(output_dir=os.path.join(work, f"ydf{workers}"), features=args.features,
                                    num_workers=workers)
        started = time.perf_counter()
        outcome, _ = exoplanets.train_ydf(spark, fit, names, run_cfg)
        results[f"ydf_{workers}_worker_seconds"] = time.perf_counter() - started
        results[f"ydf_{workers}_worker_train_seconds"] = outcome["train_seconds"]
    started = time.perf_counter()
    exoplanets.train_mllib(fit, names, exoplanets.Config(output_dir=os.path.join(work, "mllib"), features=args.features))
    results["mllib_seconds"] = time.perf_counter() - started
    results["ydf_2_vs_1_worker"] = results["ydf_1_worker_seconds"] / results["ydf_2_worker_seconds"]
    print(json.dumps(results, indent=2))
    spark.stop()


if __name__ == "__main__":
    main()

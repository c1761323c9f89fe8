"""Chapter 11 recommendations: the generator, the checked reader, training across workers, the job.

The recsys library (preparation, models, ranking metrics, top-N) has its own tests in tests/recsys/."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jobs import recommend as job
from tfos_lib.datasets import retailrocket

# ---------------------------------------------------------------------------------------------
# Generator.


def test_full_size_generator_has_the_real_counts():
    columns = retailrocket.generate(retailrocket.RetailrocketShape(), seed=0)
    assert len(columns["timestamp"]) == 2_756_101
    assert np.bincount(columns["event"])[1:].tolist() == [2_664_312, 69_332, 22_457]
    assert len(np.unique(columns["visitorid"])) == 1_407_580
    assert columns["visitorid"].max() == 1_407_579  # dense, as in the real file
    items = np.unique(columns["itemid"])
    assert len(items) == 235_061 and items.max() > 235_061  # not dense: the book's embedding bug needs this
    transactions = columns["transactionid"][columns["event"] == 3]
    assert (transactions >= 0).all() and len(np.unique(transactions)) == 17_672
    assert (columns["transactionid"][columns["event"] != 3] == -1).all()
    assert (np.diff(columns["timestamp"]) >= 0).all()
    assert retailrocket.FIRST_TIMESTAMP_MS <= columns["timestamp"].min()
    assert columns["timestamp"].max() <= retailrocket.LAST_TIMESTAMP_MS


def test_generator_skew_and_planted_taste():
    columns = retailrocket.generate(retailrocket.RetailrocketShape.scaled(100_000), seed=3)
    per_visitor = np.bincount(columns["visitorid"])
    assert np.mean(per_visitor == 1) > 0.5 and per_visitor.max() >= 50  # most visit once, a few a lot
    per_item = np.sort(np.bincount(np.unique(columns["itemid"], return_inverse=True)[1]))[::-1]
    assert per_item[: len(per_item) // 100].sum() > 0.1 * per_item.sum()  # the top 1% of items: > 10% of events
    # About 90% of a visitor's events come from its favourite category (vs ~1/20 by chance).
    assert 0.85 < np.mean(columns["category"] == columns["favourite"]) < 0.95
    # Every purchase follows a cart of the same item by the same visitor.
    order = np.lexsort((columns["timestamp"], columns["visitorid"]))
    event, item, visitor = columns["event"][order], columns["itemid"][order], columns["visitorid"][order]
    bought = np.flatnonzero(event == 3)
    assert (event[bought - 1] == 2).all() and (item[bought - 1] == item[bought]).all()
    assert (visitor[bought - 1] == visitor[bought]).all()


def test_generator_is_deterministic_by_seed(tmp_path):
    shape = retailrocket.RetailrocketShape.scaled(3000)
    a = retailrocket.write_events(tmp_path / "a.csv", retailrocket.generate(shape, seed=1))
    b = retailrocket.write_events(tmp_path / "b.csv", retailrocket.generate(shape, seed=1))
    c = retailrocket.write_events(tmp_path / "c.csv", retailrocket.generate(shape, seed=2))
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    lines = a.read_text().splitlines()
    assert lines[0] == "timestamp,visitorid,event,itemid,transactionid" and len(lines) == 3001
    view = next(line for line in lines if ",view," in line)
    assert view.endswith(",") and len(view.split(",")) == 5  # empty transactionid, as in the real file


def test_generator_command_line(tmp_path, capsys):
    assert retailrocket.main(["--out", str(tmp_path / "e.csv"), "--events", "500", "--bad-rows", "1"]) == 0
    assert "500 events" in capsys.readouterr().err
    assert len((tmp_path / "e.csv").read_text().splitlines()) == 1 + 500 + len(retailrocket.BAD_ROW_REASONS)
    with pytest.raises(SystemExit) as caught:
        retailrocket.main(["--out", str(tmp_path / "f.csv"), "--events", "5"])
    assert caught.value.code == 2 and "error:" in capsys.readouterr().err
    assert not (tmp_path / "f.csv").exists()


# ---------------------------------------------------------------------------------------------
# Reading and checking.


def test_reader_counts_and_drops_each_kind_of_bad_row(spark, tmp_path):
    path = retailrocket.write_events(
        tmp_path / "events.csv", retailrocket.generate(retailrocket.RetailrocketShape.scaled(2000), seed=0), bad_rows=2
    )
    validated = retailrocket.read_events(spark, str(path))
    assert validated.total_rows == 2000 + 2 * len(retailrocket.BAD_ROW_REASONS)
    assert validated.bad_rows == {reason: 2 for reason in retailrocket.BAD_ROW_REASONS}
    assert validated.examples["unknown_event"][0] == "1433221332117,1,click,2,"
    events = validated.events
    assert events.count() == 2000
    assert sorted(r.event for r in events.select("event").distinct().collect()) == ["addtocart", "transaction", "view"]
    codes = {r.event: r.event_code for r in events.select("event", "event_code").distinct().collect()}
    assert codes == {"view": 1, "addtocart": 2, "transaction": 3}
    assert events.filter("transactionid IS NOT NULL AND event != 'transaction'").count() == 0


def test_reader_rejects_a_wrong_header_and_too_many_bad_rows(spark, tmp_path):
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("time,visitor,event,item\n1,2,view,3\n")
    with pytest.raises(ValueError, match=r"first line is 'time,visitor,event,item'.*timestamp,visitorid,event,itemid"):
        retailrocket.read_events(spark, str(wrong))
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,visitorid,event,itemid,transactionid\n1,2,view,3,\nyesterday,2,view,3,\n")
    with pytest.raises(ValueError, match=r"1 of 2 rows \(50.0%\).*malformed|--max-bad-fraction"):
        retailrocket.read_events(spark, str(bad))
    assert retailrocket.read_events(spark, str(bad), max_bad_fraction=0.5).bad_rows["malformed_timestamp"] == 1


def test_missing_events_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"events\.csv.*--data-dir"):
        retailrocket.find_events_file(tmp_path)


# ---------------------------------------------------------------------------------------------
# Training: sparse embedding gradients across workers.


def test_two_workers_end_with_the_same_embeddings_as_one(spark, tmp_path):
    """Two barrier workers (local[2]) vs one worker on the same global batches: same MF weights.

    The global batch is the whole training set, so both runs see identical batches every
    step whatever order the shards arrive in. Visitors and items repeat within the batch
    and across the two workers' halves: the all-gathered IndexedSlices must sum them.
    """
    import tfos_lib

    rng = np.random.default_rng(0)
    rows = [(int(v), int(i), float(c)) for v, i, c in zip(rng.integers(0, 12, 64), rng.integers(0, 9, 64),
                                                       rng.choice([1, 2, 3], 64))]
    train = spark.createDataFrame(rows, "visitor int, item int, label float")
    inputs = {"book_train": train, "book_test": tfos_lib.Input(train.limit(8), shard=False)}
    plan = job.TrainPlan(12, 9, ("mf",), book_setup=True, ranking=False, save_book_weights=True)
    weights = {}
    for workers, backend in ((1, "local"), (2, "barrier")):
        out = tmp_path / f"{workers}-workers"
        cfg = job.Config(batch_size=64, book_epochs=4, learning_rate=0.05, output_dir=str(out), num_workers=workers, backend=backend)
        result = tfos_lib.run(job.train_fn, cfg, plan, num_workers=workers, backend=backend, inputs=inputs,
                              output_dir=str(out), spark=spark)
        assert result["history"]["book_mf"][-1] < result["history"]["book_mf"][0]
        with np.load(out / "factors" / "book_mf.npz") as saved:
            weights[workers] = [saved[k] for k in sorted(saved.files)]
    for one, two in zip(weights[1], weights[2]):
        assert one.shape == two.shape
        np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)
    # Training moved the embeddings well beyond the tolerance (the check is not vacuous).
    assert max(np.abs(w).max() for w in weights[1]) > 0.1


def test_ranking_alone_trains_in_a_barrier_worker(spark, tmp_path):
    """Without the book setup the first TensorFlow op is the ranking's; the strategy must exist before it."""
    import tfos_lib

    rows = [(v, i) for v in range(12) for i in range(9) if (v + i) % 3 == 0]
    inputs = {"rank_train": spark.createDataFrame(rows, "visitor int, item int")}
    plan = job.TrainPlan(12, 9, ("mf",), book_setup=False)
    cfg = job.Config(batch_size=12, epochs=2, negatives=2, output_dir=str(tmp_path), book_setup=False)
    result = tfos_lib.run(job.train_fn, cfg, plan, num_workers=1, inputs=inputs, output_dir=str(tmp_path), spark=spark)
    assert set(result["ranking"]) == {"mf"} and len(result["history"]["ranking_mf"]) == 2
    with np.load(tmp_path / "factors" / "mf.npz") as saved:
        assert saved["visitor_vectors"].shape == (12, 5) and saved["item_vectors"].shape == (9, 5)


def planted_retrieval_inputs(spark, visitors=240, items=48, groups=4, per_visitor=6, seed=0):
    """The retrieval model's inputs for a catalogue of ``groups`` taste groups: every visitor picks its items
    in one group. Each visitor's last item is the validation item; the others are training examples."""
    import pandas as pd

    import tfos_lib

    rng = np.random.default_rng(seed)
    rows = []
    for v in range(visitors):
        group = v % groups
        chosen = rng.choice(np.arange(group, items, groups), per_visitor, replace=False)
        rows += [(v, int(i), t) for t, i in enumerate(chosen)]
    pairs = pd.DataFrame(rows, columns=["visitor", "item", "first_ts"])
    last = pairs.groupby("visitor")["first_ts"].transform("max") == pairs["first_ts"]
    inner, held = pairs[~last], pairs[last]
    pad, length = items, 5

    def padded(values):
        values = list(values)[-length:]
        return values + [pad] * (length - len(values))

    examples = [(padded(g.item.drop(index)), int(g.item[index]), 1.0)
                for _, g in inner.groupby("visitor") for index in g.index]
    train = spark.createDataFrame(examples, "history array<int>, item int, weight float")
    histories = [(int(v), padded(g.item)) for v, g in inner.groupby("visitor")]
    counts = np.bincount(inner.item, minlength=items)
    inputs = {
        "retrieval_inner": train, "retrieval_train": train,
        "validation_seen": tfos_lib.Input(spark.createDataFrame(inner[["visitor", "item"]]), shard=False),
        "validation_held": tfos_lib.Input(spark.createDataFrame(held[["visitor", "item"]]), shard=False),
        "validation_history": tfos_lib.Input(spark.createDataFrame(histories, "visitor int, history array<int>"),
                                             shard=False),
    }
    plan = job.TrainPlan(visitors, items, ("retrieval",), book_setup=False, inner_counts=counts, train_counts=counts)
    return inputs, plan, length


def test_two_workers_train_the_retrieval_model_to_the_same_quality_as_one(spark, tmp_path):
    """The taste groups are found by 1 and by 2 barrier workers alike (validation NDCG@10 far above chance)."""
    import tfos_lib

    inputs, plan, length = planted_retrieval_inputs(spark)
    best = {}
    for workers, backend in ((1, "local"), (2, "barrier")):
        out = tmp_path / f"{workers}-workers"
        cfg = job.Config(batch_size=64, retrieval_epochs=12, patience=3, retrieval_factors=8, history_length=length,
                         retrieval_learning_rate=0.05, output_dir=str(out), num_workers=workers, backend=backend,
                         book_setup=False, models="retrieval")
        result = tfos_lib.run(job.train_fn, cfg, plan, num_workers=workers, backend=backend, inputs=inputs,
                              output_dir=str(out), spark=spark)
        info = result["ranking"]["retrieval"]
        best[workers] = max(info["validation_ndcg_per_epoch"])
        assert (out / "models" / "retrieval" / "1" / "saved_model.pb").exists()
    # Chance: 1 relevant item among the 42 unseen ones, NDCG@10 about 0.1; the group alone gives about 0.4.
    assert best[1] > 0.3 and best[2] > 0.3, best
    assert abs(best[1] - best[2]) < 0.1, best


# ---------------------------------------------------------------------------------------------
# The job.


def test_job_end_to_end_on_small_generated_data_with_bad_rows(spark, tmp_path, check_metrics_envelope, saved_figures):
    data = retailrocket.write_events(
        tmp_path / "events.csv", retailrocket.generate(retailrocket.RetailrocketShape.scaled(4000), seed=0), bad_rows=1
    )
    out = tmp_path / "out"
    metrics = job.main(["--backend", "local", "--events-csv", str(data), "--output-dir", str(out), "--epochs", "1",
                        "--batch-size", "256", "--eval-visitors", "0", "--als-iterations", "3", "--retrieval-epochs", "2",
                        "--als-ranks", "8,16", "--als-regularizations", "0.1", "--als-alphas", "10",
                        "--top-k-index", "faiss-ivf", "--ivf-nprobe", "2"])
    saved = json.loads((out / "metrics.json").read_text())
    check_metrics_envelope(saved, "recommend", training=True)
    results = saved["results"]
    assert saved["data"]["bad_rows"] == {reason: 1 for reason in retailrocket.BAD_ROW_REASONS}
    assert saved["data"]["events"] == 4000 and saved["data"]["dropped_rows"] == len(retailrocket.BAD_ROW_REASONS)
    assert set(results["ranking"]) == {"mf", "nn", "retrieval", "als", "popularity"}
    assert 0 < results["ranking"]["retrieval"]["coverage"] <= 1
    assert results["als"]["tuned"] and len(results["als"]["trials"]) == 2  # rank 8 then 16; one reg, one alpha
    assert set(results["seconds_per_model"]) == {"mf", "nn", "retrieval", "als", "popularity"}
    evaluated = saved["data"]["evaluated_visitors"]
    for name, values in results["ranking"].items():
        # The figures are over the Parquet written for the model: every evaluated visitor, k distinct items.
        recs = spark.read.parquet(str(out / "recommendations" / "evaluated" / name)).toPandas()
        assert values["visitors"] == evaluated == recs["visitor"].nunique() > 0, name
        per_visitor = recs.groupby("visitor")
        assert (per_visitor["rank"].apply(sorted).map(tuple) == tuple(range(1, 11))).all(), name
        assert (per_visitor["item"].nunique() == 10).all(), name
    assert results["ranking"]["popularity"]["hit_rate"] > 0  # popular items do come back on this data
    book = results["book_mse"]
    assert set(book["models"]) == {"mf", "nn"} and book["constant_mean_mse"] <= book["constant_one_mse"]
    assert book["models"]["mf"]["parameters"] == 5 * (saved["data"]["visitors"] + saved["data"]["items"])
    assert results["embedding_gradient_type"] == "IndexedSlices"
    assert set(results["timings"]["phases"]) >= {"read", "preprocess", "train", "train_als", "evaluate", "recommend_all"}
    assert results["timings"]["driver_peak_memory"]["python_peak_mb"] > 0
    ranked, book_panel = saved_figures["comparison.png"]  # bars: each model's four metrics, then the book's MSEs
    drawn = {results["ranking"][name]["hit_rate"] for name in results["ranking"]}
    assert len(ranked["bars"]) == 4 * len(results["ranking"]) and drawn <= set(ranked["bars"])
    assert len(ranked["legend"]) == len(results["ranking"])
    assert sorted(book_panel["bars"]) == pytest.approx(sorted(
        [book["models"][m]["test_mse"] for m in ("mf", "nn")] + [book["constant_mean_mse"], book["constant_one_mse"]]))
    curves = {k: v for ax in saved_figures["training_curves.png"] for k, v in ax["lines"].items()}
    assert set(curves) == {f"{objective} {kind} loss" for objective in ("book", "ranking") for kind in ("mf", "nn")} | {
        "ranking retrieval loss", "retrieval validation loss"}
    assert len(curves["ranking mf loss"]) == len(curves["ranking nn loss"]) == 1  # --epochs 1
    every = spark.read.parquet(str(out / "recommendations" / "all_visitors"))
    assert every.columns == ["visitor", "rank", "item", "score"]
    assert every.select("visitor").distinct().count() == saved["data"]["visitors"] == metrics["data"]["visitors"]
    assert every.groupBy("visitor").count().agg({"count": "max"}).first()[0] == 10
    everyone = results["recommendations_all_visitors"]  # FAISS IVF lists, checked against the exact evaluated ones
    assert everyone["index"] == "faiss-ivf" and everyone["ivf_nprobe"] == 2 and everyone["ivf_lists"] > 2
    assert everyone["recall_of_exact_top_k"]["visitors"] == evaluated
    assert 0.2 < everyone["recall_of_exact_top_k"]["recall"] <= 1
    assert (out / "models" / "mf" / "1" / "saved_model.pb").exists()
    assert (out / "models" / "retrieval" / "1" / "saved_model.pb").exists()


def test_bad_options_are_refused(capsys):
    for argv in (["--models", "svd"], ["--holdout-fraction", "1.5"], ["--recommend-all", "nn", "--models", "mf"],
                 ["--recommend-all", "popularity", "--top-k-index", "faiss"]):
        with pytest.raises(SystemExit) as caught:
            job.main(argv)
        assert caught.value.code == 2
    assert "--models" in capsys.readouterr().err


def test_an_s3a_output_is_refused_at_start_without_the_hadoop_aws_jar(s3, spark):
    """The recommendations are Parquet written by Spark, whose Hadoop has no s3a filesystem without hadoop-aws:
    refused before any data is generated or read, naming the jar (pyarrow's S3 client would have worked)."""
    from tfos_lib import storage

    out = "s3a://runs/recommend-refused"
    with pytest.raises(ValueError, match=r"Spark cannot write to 's3a://runs/recommend-refused'.*hadoop-aws"):
        job.main(["--backend", "local", "--output-dir", out])
    assert storage.list_files(out) == []  # refused before the run lock: nothing written

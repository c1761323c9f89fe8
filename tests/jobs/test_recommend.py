"""Chapter 11 recommendations: the generator, the checked reader, ranking metrics, top-N, the job."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from jobs import recommend as job
from tfos_lib.datasets import retailrocket
from tfos_lib.recsys import ranking

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
    with pytest.raises(SystemExit):
        retailrocket.main(["--out", str(tmp_path / "f.csv"), "--events", "5"])


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
# Preprocessing, metrics, top-N.


def test_dense_index_is_contiguous_and_ordered(spark):
    df = spark.createDataFrame([(v,) for v in [466_000, 5, 10, 5, 99, 7, 123_456] * 3], "itemid long").repartition(5)
    mapping = {r.itemid: r.item for r in ranking.dense_index(df, "itemid", "item").collect()}
    assert mapping == {5: 0, 7: 1, 10: 2, 99: 3, 123_456: 4, 466_000: 5}


def test_leave_last_out_holds_out_each_visitors_latest_items(spark):
    rows = [(1, i, 100 + i) for i in range(10)] + [(2, i, 50 - i) for i in range(4)] + [(3, 0, 7)]
    pairs = spark.createDataFrame(rows, "visitor int, item int, first_ts long")
    held = {(r.visitor, r.item) for r in ranking.leave_last_out(pairs, 0.2).filter("held_out").collect()}
    # 10 items -> the 2 latest; 4 items -> max(1, floor(0.8)) = 1, the latest (item 0 at ts 50); 1 item -> none.
    assert held == {(1, 8), (1, 9), (2, 0)}


def test_ranking_metrics_match_hand_computed_values(spark):
    recs = spark.createDataFrame(
        [(1, 1, 10), (1, 2, 11), (1, 3, 12), (1, 4, 13), (2, 1, 20), (2, 2, 21), (2, 3, 22)],
        "visitor int, rank int, item int",
    )
    held = spark.createDataFrame([(1, 11), (1, 13), (2, 22), (3, 30)], "visitor int, item int")
    m = ranking.ranking_metrics(recs, held, k=3)
    # Visitor 1: one hit at rank 2 of 2 relevant (item 13 is at rank 4, beyond k). Visitor 2: a hit at
    # rank 3 of 1 relevant. Visitor 3: no recommendations at all.
    ndcg1 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    ndcg2 = (1 / math.log2(4)) / 1.0
    assert m["visitors"] == 3
    assert m["precision"] == pytest.approx((1 / 3 + 1 / 3 + 0) / 3)
    assert m["recall"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["ndcg"] == pytest.approx((ndcg1 + ndcg2 + 0) / 3)
    assert m["hit_rate"] == pytest.approx(2 / 3)
    assert m["hit_rate_stderr"] == pytest.approx(np.std([1, 1, 0], ddof=1) / math.sqrt(3))


def test_top_k_rows_orders_and_skips_removed_items():
    scores = np.array([[0.1, 0.9, -np.inf, 0.5], [-np.inf, -np.inf, 2.0, -np.inf]], np.float32)
    columns, values = ranking.top_k_rows(scores, 3)
    assert columns.tolist() == [[1, 3, 0], [2, -1, -1]]
    assert values[0].tolist() == pytest.approx([0.9, 0.5, 0.1])


def test_top_n_in_spark_matches_brute_force_and_excludes_seen_items(spark):
    rng = np.random.default_rng(0)
    visitors, items = rng.normal(size=(30, 4)).astype(np.float32), rng.normal(size=(50, 4)).astype(np.float32)
    offset = np.zeros(50, np.float32)
    offset[[3, 7]] = -np.inf  # no training interaction: never a candidate
    seen = {v: rng.choice(50, 5, replace=False).tolist() for v in range(30)}
    frame = ranking.vectors_frame(spark, np.arange(30), visitors).join(
        spark.createDataFrame(list(seen.items()), "visitor int, seen array<int>"), "visitor")
    recs = ranking.top_n(frame.repartition(3), ranking.Scorer("dot", items, offset), k=5).toPandas()
    assert len(recs) == 30 * 5
    for v, group in recs.groupby("visitor"):
        scores = visitors[v] @ items.T + offset
        scores[seen[v]] = -np.inf
        expected = np.argsort(-scores, kind="stable")[:5]
        assert group.sort_values("rank")["item"].tolist() == expected.tolist()


def test_the_networks_folded_scorer_equals_the_keras_model():
    import tfos_lib

    tf = tfos_lib.import_tensorflow()
    tf.keras.utils.set_random_seed(1)
    model = job.build_model("nn", 40, 30, 5, "ranking", 0.001)
    for layer in model.layers:  # non-zero biases, so the folding of biases is tested too
        if layer.weights and layer.name.startswith(("FC", "Output")):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, np.random.default_rng(2).normal(size=bias.shape).astype(np.float32)])
    arrays = job.scorer_arrays("nn", model, 5)
    scorer = ranking.Scorer("relu_mlp", arrays["item_vectors"], np.zeros(30, np.float32), arrays["output_weights"],
                              float(arrays["output_bias"]))
    visitors = np.array([0, 7, 39])
    folded = scorer.scores(arrays["visitor_vectors"][visitors])
    grid_v, grid_i = np.meshgrid(visitors, np.arange(30), indexing="ij")
    keras = model.predict({"visitor": grid_v.reshape(-1, 1), "item": grid_i.reshape(-1, 1)}, verbose=0)
    np.testing.assert_allclose(folded, keras.reshape(3, 30), rtol=1e-4, atol=1e-5)


def test_lazy_adam_updates_only_the_rows_in_the_batch_exactly_as_adam():
    import tfos_lib

    tf = tfos_lib.import_tensorflow()
    start = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    lazy, dense = tf.Variable(start), tf.Variable(start)
    lazy_opt, dense_opt = ranking.make_lazy_adam(tf, 0.1), tf.keras.optimizers.Adam(0.1)
    rows = tf.constant([1, 4])
    values = tf.constant([[0.5, -1.0, 2.0], [0.1, 0.2, -0.3]])
    lazy_opt.apply_gradients([(tf.IndexedSlices(values, rows, tf.constant([6, 3])), lazy)])
    dense_opt.apply_gradients([(tf.scatter_nd(rows[:, None], values, [6, 3]), dense)])
    # First step: Adam moves only rows with a gradient, so both agree everywhere.
    np.testing.assert_allclose(lazy.numpy(), dense.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(lazy.numpy()[[1, 4]], start[[1, 4]])
    # Second step on other rows: Keras' Adam keeps moving rows 1 and 4 (momentum); lazy Adam does not.
    after_first = lazy.numpy().copy()
    other = tf.IndexedSlices(tf.ones([1, 3]), tf.constant([2]), tf.constant([6, 3]))
    lazy_opt.apply_gradients([(other, lazy)])
    dense_opt.apply_gradients([(tf.convert_to_tensor(other), dense)])
    np.testing.assert_array_equal(lazy.numpy()[[0, 1, 3, 4, 5]], after_first[[0, 1, 3, 4, 5]])
    assert not np.allclose(dense.numpy()[[1, 4]], after_first[[1, 4]])
    np.testing.assert_allclose(lazy.numpy()[2], dense.numpy()[2], rtol=1e-5, atol=1e-6)


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


# ---------------------------------------------------------------------------------------------
# The job.


def test_job_end_to_end_on_small_generated_data_with_bad_rows(spark, tmp_path):
    data = retailrocket.write_events(
        tmp_path / "events.csv", retailrocket.generate(retailrocket.RetailrocketShape.scaled(4000), seed=0), bad_rows=1
    )
    out = tmp_path / "out"
    metrics = job.main(["--backend", "local", "--events-csv", str(data), "--output-dir", str(out), "--epochs", "1",
                        "--batch-size", "256", "--eval-visitors", "0", "--als-iterations", "3"])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["data"]["bad_rows"] == {reason: 1 for reason in retailrocket.BAD_ROW_REASONS}
    assert saved["data"]["events"] == 4000 and saved["data"]["dropped_rows"] == len(retailrocket.BAD_ROW_REASONS)
    assert set(saved["ranking"]) == {"mf", "nn", "als", "popularity"}
    for name, values in saved["ranking"].items():
        assert values["visitors"] == saved["data"]["evaluated_visitors"] > 0
        for key in ("precision", "recall", "ndcg", "hit_rate"):
            assert 0.0 <= values[key] <= 1.0, (name, key)
    assert saved["ranking"]["popularity"]["hit_rate"] > 0  # popular items do come back on this data
    book = saved["book_mse"]
    assert set(book["models"]) == {"mf", "nn"} and book["constant_mean_mse"] <= book["constant_one_mse"]
    assert book["models"]["mf"]["parameters"] == 5 * (saved["data"]["visitors"] + saved["data"]["items"])
    assert saved["embedding_gradient_type"] == "IndexedSlices"
    assert set(saved["timings"]["phases"]) >= {"read", "preprocess", "train", "train_als", "evaluate", "recommend_all"}
    assert saved["timings"]["driver_peak_memory"]["python_peak_mb"] > 0
    for png in ("comparison.png", "training_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    every = spark.read.parquet(str(out / "recommendations" / "all_visitors"))
    assert every.columns == ["visitor", "rank", "item", "score"]
    assert every.select("visitor").distinct().count() == saved["data"]["visitors"] == metrics["data"]["visitors"]
    assert every.groupBy("visitor").count().agg({"count": "max"}).first()[0] == 10
    assert (out / "models" / "mf" / "saved_model.pb").exists()


def test_bad_options_are_refused(capsys):
    for argv in (["--models", "svd"], ["--holdout-fraction", "1.5"], ["--recommend-all", "nn", "--models", "mf"]):
        with pytest.raises(SystemExit) as caught:
            job.main(argv)
        assert caught.value.code == 2
    assert "--models" in capsys.readouterr().err

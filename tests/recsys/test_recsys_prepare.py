"""Preparing events for recommenders: dense ids and the leave-last-out split."""

from __future__ import annotations

from tfos_lib.recsys import prepare


def test_dense_index_is_contiguous_and_ordered(spark):
    df = spark.createDataFrame([(v,) for v in [466_000, 5, 10, 5, 99, 7, 123_456] * 3], "itemid long").repartition(5)
    mapping = {r.itemid: r.item for r in prepare.dense_index(df, "itemid", "item").collect()}
    assert mapping == {5: 0, 7: 1, 10: 2, 99: 3, 123_456: 4, 466_000: 5}


def test_leave_last_out_holds_out_each_visitors_latest_items(spark):
    rows = [(1, i, 100 + i) for i in range(10)] + [(2, i, 50 - i) for i in range(4)] + [(3, 0, 7)]
    pairs = spark.createDataFrame(rows, "visitor int, item int, first_ts long")
    held = {(r.visitor, r.item) for r in prepare.leave_last_out(pairs, 0.2).filter("held_out").collect()}
    # 10 items -> the 2 latest; 4 items -> max(1, floor(0.8)) = 1, the latest (item 0 at ts 50); 1 item -> none.
    assert held == {(1, 8), (1, 9), (2, 0)}


def test_events_get_dense_ids_and_a_seeded_leave_last_out_split(spark):
    # Visitor v has v + 1 items (21 events); raw ids are not contiguous.
    rows = [(1000 + 7 * v, 50 + 3 * i, 1 + i % 3, 10 * v + i) for v in range(6) for i in range(v + 1)]
    events = spark.createDataFrame(rows, "visitorid long, itemid long, event_code int, timestamp long")
    indexed, num_visitors, num_items = prepare.index_events(events)
    assert (num_visitors, num_items) == (6, 6)
    assert indexed.columns == ["visitor", "item", "event_code", "timestamp"] and indexed.count() == 21
    split = prepare.ranking_split(indexed, 0.2, eval_visitors=3, seed=0)
    # The 5 visitors with 2+ items hold out max(1, floor(n * 0.2)) = 1 item each; the one with 1 item, none.
    assert split["rank_train"].count() == 21 - 5 and split["rank_train"].columns == ["visitor", "item", "strength"]
    evaluated = {r.visitor for r in split["eval_visitors"].collect()}
    assert len(evaluated) == 3 and evaluated <= {r.visitor for r in split["pairs"].filter("held_out").collect()}
    assert sorted(r.visitor for r in split["held_out"].collect()) == sorted(evaluated)
    again = prepare.ranking_split(indexed, 0.2, eval_visitors=3, seed=0)
    assert {r.visitor for r in again["eval_visitors"].collect()} == evaluated  # the sample is seeded

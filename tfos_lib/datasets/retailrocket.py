"""Retailrocket ``events.csv``: a generator at the real scale, and the Spark reader that checks every row.

The real file (Kaggle ``retailrocket/ecommerce-dataset``, book chapter 11) has the
header ``timestamp,visitorid,event,itemid,transactionid`` and 2,756,101 rows such as
``1433221332117,257597,view,355908,`` (ms since the epoch, 4.5 months of 2015):
2,664,312 ``view``, 69,332 ``addtocart`` and 22,457 ``transaction`` events by
1,407,580 visitors (ids dense from 0) on 235,061 items (ids *not* dense, up to about
467k); ``transactionid`` is empty except on transactions (17,672 distinct ids: one
purchase can hold several items).

It cannot be downloaded here, so :func:`generate` writes a file in exactly that
format with those counts by default (``--events N`` scales every count), with the
skew of real click logs and a preference structure a recommender can find:

* visitors: every one has at least one event; the rest follow a log-normal
  activity, so most visitors have one event and a few have thousands;
* items: Zipf popularity, spread over ``categories`` taste groups whose sizes are
  Zipf too; every visitor has a favourite group and draws ``preference`` of its
  events from it (by popularity within the group), the rest from the whole
  catalogue; ``repeat`` of a visitor's events revisit the item it just viewed;
* the funnel: a transaction buys the item the visitor put in the cart just
  before; other carts land on revisited items; the purchases of one visitor are
  grouped into transaction ids (several items per basket);
* time: each visitor starts at a uniform time in the 4.5 months and continues
  with exponential gaps (minutes to days).

Everything is vectorised numpy and deterministic by ``seed``. The full-size file
(about 100 MB) takes a few seconds to generate::

    python3 -m tfos_lib.datasets.retailrocket --out events.csv                # the real counts
    python3 -m tfos_lib.datasets.retailrocket --out small.csv --events 20000  # every count scaled

:func:`read_events` reads such a file (or the real one) into Spark, counts rows that
cannot be used by reason and drops them; see :data:`BAD_ROW_REASONS`.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "BAD_ROW_REASONS",
    "EVENTS_HEADER",
    "EVENT_CODES",
    "RetailrocketShape",
    "Taste",
    "ValidatedEvents",
    "find_events_file",
    "generate",
    "read_events",
    "write_events",
]

EVENTS_HEADER = ("timestamp", "visitorid", "event", "itemid", "transactionid")
#: The book's event weighting: the code is also the book's regression target.
EVENT_CODES = {"view": 1, "addtocart": 2, "transaction": 3}
# 2015-05-03 03:00:04 UTC to 2015-09-18 02:59:47 UTC: the real file's first and last events.
FIRST_TIMESTAMP_MS = 1430622004384
LAST_TIMESTAMP_MS = 1442545187788
#: Why a row is dropped, checked in this order (a row counts under its first reason).
BAD_ROW_REASONS = {
    "wrong_field_count": "not 5 comma-separated fields",
    "malformed_timestamp": "timestamp is not a whole number of milliseconds",
    "missing_visitorid": "visitorid is empty or not a non-negative integer",
    "missing_itemid": "itemid is empty or not a non-negative integer",
    "unknown_event": f"event is not one of {sorted(EVENT_CODES)}",
    "transaction_without_id": "a transaction row has no transactionid",
}


@dataclass(frozen=True)
class RetailrocketShape:
    """The counts a generated file has exactly. Defaults: the real file's."""

    events: int = 2_756_101
    visitors: int = 1_407_580
    items: int = 235_061
    addtocart: int = 69_332
    transactions: int = 22_457
    transaction_ids: int = 17_672
    max_item_id: int = 466_867

    @classmethod
    def scaled(cls, events: int) -> RetailrocketShape:
        """Every count scaled by ``events / 2,756,101`` (at least 1 of each, at most what fits)."""
        full = cls()
        if events == full.events:
            return full
        if events < 20:
            raise ValueError(f"--events must be >= 20 to hold every event kind; got {events}.")
        f = events / full.events

        def scale(n: int, low: int = 1) -> int:
            return max(low, round(n * f))

        transactions = scale(full.transactions)
        return cls(
            events=events,
            visitors=min(scale(full.visitors), events // 2),
            items=min(scale(full.items, 2), events // 2),
            addtocart=max(scale(full.addtocart), transactions),
            transactions=transactions,
            transaction_ids=min(scale(full.transaction_ids), transactions),
            max_item_id=max(scale(full.max_item_id), min(scale(full.items, 2), events // 2) + 1),
        )

    def __post_init__(self):
        problems = []
        if self.visitors < 1 or self.visitors > self.events:
            problems.append(f"visitors={self.visitors} must be between 1 and events={self.events}")
        if self.items < 1 or self.items > self.events or self.max_item_id < self.items - 1:
            problems.append(f"items={self.items} must be between 1 and events, and max_item_id >= items - 1")
        if self.transactions > self.addtocart or self.addtocart + self.transactions > self.events - self.visitors:
            problems.append("need transactions <= addtocart and addtocart + transactions <= events - visitors")
        if not 1 <= self.transaction_ids <= max(1, self.transactions):
            problems.append(f"transaction_ids={self.transaction_ids} must be between 1 and transactions")
        if problems:
            raise ValueError("impossible events.csv shape: " + "; ".join(problems) + ".")

    @property
    def views(self) -> int:
        return self.events - self.addtocart - self.transactions


@dataclass(frozen=True)
class Taste:
    """The planted structure (also what tests check the models against)."""

    categories: int = 20
    category_size_exponent: float = 0.5  # Zipf exponent of category sizes
    preference: float = 0.9  # share of events from the visitor's favourite category
    repeat: float = 0.3  # share of non-first events that revisit the previous item
    activity_sigma: float = 1.6  # log-normal spread of visitor activity
    popularity_exponent: float = 0.7  # Zipf exponent of item popularity
    mean_gap_minutes: float = 600.0


def generate(shape: RetailrocketShape = RetailrocketShape(), seed: int = 0, taste: Taste = Taste()) -> dict[str, np.ndarray]:
    """The columns of a generated ``events.csv``, sorted by timestamp.

    Returns:
        ``timestamp`` (int64 ms), ``visitorid`` (int64), ``event`` (int8 code 1-3),
        ``itemid`` (int64), ``transactionid`` (int64, -1 where empty), and
        ``category`` / ``favourite`` (the planted item group and the visitor's
        favourite group, per row; not written to the file).
    """
    rng = np.random.default_rng(seed)
    n, n_visitors, n_items = shape.events, shape.visitors, shape.items

    # Events per visitor: one each, the rest by log-normal activity (a few heavy visitors).
    activity = rng.lognormal(0.0, taste.activity_sigma, n_visitors)
    counts = 1 + rng.multinomial(n - n_visitors, activity / activity.sum())
    visitor = np.repeat(np.arange(n_visitors, dtype=np.int64), counts)
    first_of_visitor = np.zeros(n, bool)
    first_of_visitor[np.cumsum(counts) - counts] = True
    offset = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)  # position within the visitor

    # Items: Zipf popularity, grouped into categories of Zipf sizes.
    popularity = 1.0 / np.arange(1, n_items + 1) ** taste.popularity_exponent
    popularity = popularity[rng.permutation(n_items)]
    n_categories = max(1, min(taste.categories, n_items))
    category_size = 1.0 / np.arange(1, n_categories + 1) ** taste.category_size_exponent
    item_category = rng.choice(n_categories, n_items, p=category_size / category_size.sum())
    order = np.argsort(item_category, kind="stable")
    starts = np.searchsorted(item_category[order], np.arange(n_categories + 1))
    category_popularity = np.bincount(item_category, weights=popularity, minlength=n_categories)
    favourite_of_visitor = rng.choice(n_categories, n_visitors, p=category_popularity / category_popularity.sum())
    favourite = favourite_of_visitor[visitor]

    # Each event: an item from the favourite category (by popularity within it) or from anywhere.
    item = _sample_by_weight(rng, popularity, n)
    from_favourite = rng.random(n) < taste.preference
    cumulative = np.cumsum(popularity[order])
    low = np.where(starts[favourite] > 0, cumulative[np.maximum(starts[favourite] - 1, 0)], 0.0)
    high = cumulative[starts[favourite + 1] - 1]
    has_items = starts[favourite + 1] > starts[favourite]
    draw = from_favourite & has_items
    u = low[draw] + rng.random(draw.sum()) * (high[draw] - low[draw])
    item[draw] = order[np.minimum(np.searchsorted(cumulative, u, side="right"), n_items - 1)]
    # Revisits copy the previous item (forward fill over runs of repeats).
    repeat = (~first_of_visitor) & (rng.random(n) < taste.repeat)
    source = np.where(repeat, 0, np.arange(n))
    item = item[np.maximum.accumulate(source)]

    event = np.full(n, EVENT_CODES["view"], np.int8)
    transaction_visitor_mask = _plant_funnel(rng, shape, visitor, counts, offset, first_of_visitor, item, event)
    _cover_every_item(rng, n_items, item, counts[visitor] == 1, event)

    # Time: a uniform start per visitor, then exponential gaps in event order.
    span = LAST_TIMESTAMP_MS - FIRST_TIMESTAMP_MS
    start = rng.integers(FIRST_TIMESTAMP_MS, LAST_TIMESTAMP_MS - span // 20, n_visitors)
    gaps = rng.exponential(taste.mean_gap_minutes * 60_000, n).astype(np.int64) + 1
    gaps[first_of_visitor] = 0
    run = np.cumsum(gaps)
    timestamp = start[visitor] + run - np.repeat(run[np.cumsum(counts) - counts], counts)
    timestamp = np.minimum(timestamp, LAST_TIMESTAMP_MS)

    transaction_id = _transaction_ids(rng, shape, visitor, event, transaction_visitor_mask)
    item_ids = np.sort(rng.choice(shape.max_item_id + 1, n_items, replace=False))[rng.permutation(n_items)]
    by_time = np.argsort(timestamp, kind="stable")
    return {
        "timestamp": timestamp[by_time],
        "visitorid": visitor[by_time],
        "event": event[by_time],
        "itemid": item_ids[item][by_time],
        "transactionid": transaction_id[by_time],
        "category": item_category[item][by_time],
        "favourite": favourite[by_time],
    }


def _sample_by_weight(rng, weights: np.ndarray, size: int) -> np.ndarray:
    cumulative = np.cumsum(weights)
    return np.minimum(np.searchsorted(cumulative, rng.random(size) * cumulative[-1], side="right"), len(weights) - 1)


def _plant_funnel(rng, shape, visitor, counts, offset, first_of_visitor, item, event) -> np.ndarray:
    """Marks ``shape.transactions`` buys (each right after a cart of the same item) and the other carts.

    Purchases happen at odd positions within a visitor's events, so two never
    touch and the even position before each becomes its cart. Returns the mask
    of rows that are transactions.
    """
    n = len(item)
    # Buyers are active visitors (drawn by activity), about two-thirds as many as baskets
    # as on the real site; then each buyer's purchases sit at odd positions of its events.
    slots = counts // 2
    eligible = np.flatnonzero(slots > 0)
    wanted = max(1, min(len(eligible), round(0.66 * shape.transaction_ids)))
    weight = counts[eligible].astype(float)
    buyers = rng.choice(eligible, wanted, replace=False, p=weight / weight.sum())
    if slots[buyers].sum() < shape.transactions:  # small files: take the busiest visitors instead
        buyers = eligible[np.argsort(-slots[eligible], kind="stable")]
        buyers = buyers[: np.searchsorted(np.cumsum(slots[buyers]), shape.transactions) + 1]
    is_buyer = np.zeros(len(counts), bool)
    is_buyer[buyers] = True
    positions = np.flatnonzero((offset % 2 == 1) & is_buyer[visitor])
    if len(positions) < shape.transactions:
        raise ValueError(
            f"cannot place {shape.transactions} transactions in {len(item)} events; use more --events."
        )
    chosen = np.sort(rng.choice(positions, shape.transactions, replace=False))
    item[chosen] = item[chosen - 1]
    event[chosen] = EVENT_CODES["transaction"]
    event[chosen - 1] = EVENT_CODES["addtocart"]
    # The remaining carts: revisits first (carts follow views), then any non-first event.
    remaining = shape.addtocart - shape.transactions
    free = (event == EVENT_CODES["view"]) & ~first_of_visitor
    revisit = free.copy()
    revisit[1:] &= item[1:] == item[:-1]
    revisit[0] = False
    pool = np.flatnonzero(revisit)
    if len(pool) < remaining:
        pool = np.concatenate([pool, rng.permutation(np.flatnonzero(free & ~revisit))[: remaining - len(pool)]])
    event[rng.choice(pool, remaining, replace=False)] = EVENT_CODES["addtocart"]
    mask = np.zeros(n, bool)
    mask[chosen] = True
    return mask


def _cover_every_item(rng, n_items: int, item: np.ndarray, single_event_visitor: np.ndarray, event: np.ndarray) -> None:
    """Gives every catalogue item at least one event (the real file's item count is of items seen).

    Items the draws missed replace the item of one-event visitors' views (they carry
    no taste signal), or of random views when there are not enough of those.
    """
    missing = np.setdiff1d(np.arange(n_items), item)
    if len(missing) == 0:
        return
    views = event == EVENT_CODES["view"]
    hosts = np.flatnonzero(single_event_visitor & views)
    if len(hosts) < len(missing):
        others = np.flatnonzero(views & ~single_event_visitor)
        hosts = np.concatenate([hosts, rng.choice(others, len(missing) - len(hosts), replace=False)])
    # Replacing an item can strand another one that had a single event; repeat until covered.
    while len(missing):
        targets = rng.choice(hosts, len(missing), replace=False)
        item[targets] = missing
        hosts = np.setdiff1d(hosts, targets)
        missing = np.setdiff1d(np.arange(n_items), item)


def _transaction_ids(rng, shape, visitor, event, is_transaction) -> np.ndarray:
    """Groups each visitor's purchases into baskets so there are exactly ``transaction_ids`` ids."""
    ids = np.full(len(visitor), -1, np.int64)
    rows = np.flatnonzero(is_transaction)  # already in each visitor's event order
    new_visitor = np.ones(len(rows), bool)
    new_visitor[1:] = visitor[rows[1:]] != visitor[rows[:-1]]
    # _plant_funnel keeps buyers at most as many as ids, so only splits are ever needed.
    needed = max(0, shape.transaction_ids - int(new_visitor.sum()))
    splits = np.flatnonzero(~new_visitor)
    new_visitor[rng.choice(splits, min(needed, len(splits)), replace=False)] = True
    basket = np.cumsum(new_visitor) - 1
    ids[rows] = rng.permutation(int(basket.max()) + 1)[basket]
    return ids


def write_events(path: str | os.PathLike, columns: dict[str, np.ndarray], bad_rows: int = 0, seed: int = 0) -> Path:
    """Writes the columns as ``events.csv`` (the real header; empty ``transactionid`` where -1).

    Args:
        path: the file to write (its directory is created).
        columns: from :func:`generate`.
        bad_rows: also append this many rows of each kind in :data:`BAD_ROW_REASONS`
            at random places, to exercise the reader's checks.
        seed: where the bad rows go.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    event_names = np.array([""] + list(EVENT_CODES), dtype=object)
    transaction = pa.array(columns["transactionid"], mask=columns["transactionid"] < 0)
    table = pa.table(
        {
            "timestamp": columns["timestamp"],
            "visitorid": columns["visitorid"],
            "event": pa.array(event_names[columns["event"]], pa.string()),
            "itemid": columns["itemid"],
            "transactionid": transaction,
        }
    )
    # pyarrow quotes header names whatever the quoting style; the real file does not.
    with open(path, "wb") as out:
        out.write((",".join(EVENTS_HEADER) + "\n").encode("ascii"))
        pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    if bad_rows:
        _insert_bad_rows(path, bad_rows, seed)
    return path


# Rows that break each rule once (the first field group is a good row's shape).
_BAD_ROW_TEMPLATES = {
    "wrong_field_count": "1433221332117,1,view,2",
    "malformed_timestamp": "2015-06-02 05:02:12,1,view,2,",
    "missing_visitorid": "1433221332117,,view,2,",
    "missing_itemid": "1433221332117,1,view,,",
    "unknown_event": "1433221332117,1,click,2,",
    "transaction_without_id": "1433221332117,1,transaction,2,",
}


def _insert_bad_rows(path: Path, per_reason: int, seed: int) -> None:
    lines = path.read_text(encoding="ascii").splitlines()
    header, body = lines[0], lines[1:]
    rng = np.random.default_rng(seed + 1)
    bad = [t for t in _BAD_ROW_TEMPLATES.values() for _ in range(per_reason)]
    places = np.sort(rng.integers(0, len(body) + 1, len(bad)))
    out, last = [header], 0
    for place, row in zip(places, bad):
        out.extend(body[last:place])
        out.append(row)
        last = place
    out.extend(body[last:])
    path.write_text("\n".join(out) + "\n", encoding="ascii")


# ---------------------------------------------------------------------------------------------
# Reading into Spark.


@dataclass
class ValidatedEvents:
    """What :func:`read_events` returns.

    Attributes:
        events: the usable rows: ``timestamp`` (long ms), ``visitorid`` (long),
            ``event`` (string), ``event_code`` (int 1-3, the book's weighting),
            ``itemid`` (long), ``transactionid`` (long or null).
        total_rows: data rows in the file (header excluded).
        bad_rows: rows dropped, by reason (every reason listed, zeros included).
        examples: up to three dropped rows per reason, as they appear in the file.
    """

    events: object
    total_rows: int
    bad_rows: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def dropped_rows(self) -> int:
        return sum(self.bad_rows.values())


def find_events_file(data_dir: str | os.PathLike) -> str:
    """``data_dir/events.csv`` (or ``data_dir`` itself if it is a file); see :func:`tfos_lib.datasets.files.find_data_file`."""
    from tfos_lib.datasets.files import find_data_file

    return find_data_file(
        data_dir, "events.csv", f"Retailrocket's events.csv: {','.join(EVENTS_HEADER)}",
        "Pass --data-dir with the folder of events.csv (or --events-csv FILE), or omit both to use generated data.",
    )


def read_events(spark, path: str, max_bad_fraction: float = 0.01) -> ValidatedEvents:
    """Reads ``events.csv`` into Spark, drops unusable rows and counts them by reason.

    Runs on the driver; Spark parses the file. Every field is read as text and
    checked in :data:`BAD_ROW_REASONS` order; a row failing any check is dropped and
    counted once, under its first reason. Nothing unusable is mixed in.

    Raises:
        ValueError: the header is not the real one, or more than
            ``max_bad_fraction`` of the rows are bad (the file is probably not
            Retailrocket's events.csv).
    """
    from pyspark.sql import functions as F

    lines = spark.read.text(path)
    header = lines.first()
    if header is None:
        raise ValueError(f"{path} is empty; expected the header {','.join(EVENTS_HEADER)} and one event per line.")
    found = header.value.strip().lstrip("\ufeff")
    if found.split(",") != list(EVENTS_HEADER):
        raise ValueError(
            f"{path}: the first line is {found[:100]!r}; expected the header {','.join(EVENTS_HEADER)!r} "
            "(Retailrocket's events.csv). Check the file, or add that header."
        )
    body = lines.filter(F.col("value") != header.value).filter(F.trim("value") != "")
    fields = F.split(F.regexp_replace("value", r"\r$", ""), ",", -1)
    number = r"^[0-9]+$"
    parsed = body.select(
        "value",
        F.size(fields).alias("n_fields"),
        # get() gives null past the end (getItem raises under ANSI mode): short rows are counted, not fatal.
        *[F.trim(F.get(fields, i)).alias(name) for i, name in enumerate(EVENTS_HEADER)],
    )
    is_code = F.create_map(*[x for name, code in EVENT_CODES.items() for x in (F.lit(name), F.lit(code))])
    checks = {
        "wrong_field_count": F.col("n_fields") != len(EVENTS_HEADER),
        "malformed_timestamp": ~F.coalesce(F.col("timestamp").rlike(number), F.lit(False)),
        "missing_visitorid": ~F.coalesce(F.col("visitorid").rlike(number), F.lit(False)),
        "missing_itemid": ~F.coalesce(F.col("itemid").rlike(number), F.lit(False)),
        "unknown_event": is_code[F.col("event")].isNull(),
        "transaction_without_id": (F.col("event") == "transaction")
        & ~F.coalesce(F.col("transactionid").rlike(number), F.lit(False)),
    }
    reason = F.lit(None).cast("string")
    for name in reversed(list(checks)):
        reason = F.when(checks[name], F.lit(name)).otherwise(reason)
    tagged = parsed.withColumn("bad_reason", reason).cache()
    counts = dict(tagged.groupBy("bad_reason").count().collect())
    total = sum(counts.values())
    bad = {name: int(counts.get(name, 0)) for name in BAD_ROW_REASONS}
    examples = {}
    for name, count in bad.items():
        if count:
            examples[name] = [r.value[:120] for r in tagged.filter(F.col("bad_reason") == name).select("value").take(3)]
    dropped = sum(bad.values())
    if total == 0:
        raise ValueError(f"{path} has a header but no events.")
    if dropped > max_bad_fraction * total:
        detail = "; ".join(f"{n} {BAD_ROW_REASONS[k]} (e.g. {examples[k][0]!r})" for k, n in bad.items() if n)
        raise ValueError(
            f"{path}: {dropped} of {total} rows ({dropped / total:.1%}) cannot be used, more than the allowed "
            f"{max_bad_fraction:.1%}: {detail}. Fix the file, or raise --max-bad-fraction to drop them."
        )
    events = tagged.filter(F.col("bad_reason").isNull()).select(
        F.col("timestamp").cast("long").alias("timestamp"),
        F.col("visitorid").cast("long").alias("visitorid"),
        "event",
        is_code[F.col("event")].cast("int").alias("event_code"),
        F.col("itemid").cast("long").alias("itemid"),
        F.when(F.col("transactionid").rlike(number), F.col("transactionid").cast("long")).alias("transactionid"),
    )
    return ValidatedEvents(events, total, bad, examples)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m tfos_lib.datasets.retailrocket",
        description="Write a generated Retailrocket events.csv (the real counts by default).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="the file to write, e.g. events.csv")
    parser.add_argument("--events", type=int, default=RetailrocketShape().events, help="rows; every other count scales with it")
    parser.add_argument("--seed", type=int, default=0, help="random seed (the same seed writes the same file)")
    parser.add_argument("--categories", type=int, default=Taste().categories, help="planted taste groups of items")
    parser.add_argument("--bad-rows", type=int, default=0, help="also insert this many bad rows of each kind")
    args = parser.parse_args(argv)
    try:
        shape = RetailrocketShape.scaled(args.events)
    except ValueError as error:
        parser.error(str(error))
    columns = generate(shape, args.seed, Taste(categories=args.categories))
    path = write_events(args.out, columns, args.bad_rows, args.seed)
    print(
        f"wrote {path}: {shape.events:,} events ({shape.views:,} view, {shape.addtocart:,} addtocart, "
        f"{shape.transactions:,} transaction), {shape.visitors:,} visitors, {shape.items:,} items"
        + (f", plus {args.bad_rows * len(_BAD_ROW_TEMPLATES)} bad rows" if args.bad_rows else ""),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

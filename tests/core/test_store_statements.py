"""The multi-row statements of batch writes on SQLite come in a few texts, whatever the
batch sizes.

SQLite's connection keeps each distinct statement text it ran compiled (Python's
``sqlite3`` caches 128), at about 80 bytes per bound value. A batch cut into full
slices and one remainder of whatever size was left made a new text at almost every
commit, and the cache grew by up to 160 KiB a statement for as long as the daemon
ran. The remainder is now cut into power-of-two slices.
"""

from __future__ import annotations

import re
from pathlib import Path

from exporter.core.store import Store, _chunks

ITEMS = ("CREATE TABLE items (id TEXT PRIMARY KEY, state TEXT NOT NULL, n INTEGER);",)
# Each VALUES row of a traced (expanded) INSERT INTO items: ('i12', 'open', 12).
VALUES_ROW = re.compile(r"\('i\d+', 'open', \d+\)")
POWERS_OF_TWO = {1, 2, 4, 8, 16, 32, 64, 128}


def test_a_remainder_is_cut_into_power_of_two_slices_largest_first() -> None:
    sizes = [len(c) for c in _chunks(list(range(300)), 133, ladder=True)]
    assert sizes == [133, 133, 32, 2]
    assert [len(c) for c in _chunks(list(range(1013)), 133, ladder=True)] == [133] * 7 + [64, 16, 2]
    assert [len(c) for c in _chunks(list(range(133)), 133, ladder=True)] == [133]
    assert list(_chunks([], 133, ladder=True)) == []


def test_without_the_ladder_the_remainder_is_one_slice() -> None:
    assert [len(c) for c in _chunks(list(range(300)), 133)] == [133, 133, 34]


def test_batches_of_200_sizes_use_at_most_9_insert_texts(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.migrate("items", ITEMS)
    sent: list[str] = []
    store._conn.set_trace_callback(sent.append)  # the writer connection, expanded SQL
    written = 0
    for size in range(1, 201):
        rows = [{"id": f"i{written + i}", "state": "open", "n": written + i} for i in range(size)]
        with store.transaction() as tx:
            assert tx.insert_new_many("items", rows, ("id",)) == [True] * size
        written += size
    store._conn.set_trace_callback(None)
    per_statement = {len(VALUES_ROW.findall(s)) for s in sent if s.startswith("INSERT INTO items")}
    # 500 values a statement on SQLite: 166 rows of 3 columns, then powers of two.
    assert per_statement == {166} | POWERS_OF_TWO
    row = store.query_one("SELECT COUNT(*), SUM(n) FROM items")
    assert row is not None and tuple(row) == (20100, 20100 * 20099 // 2)


def test_stored_rows_of_any_count_are_read_with_the_same_few_texts(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.migrate("items", ITEMS)
    with store.transaction() as tx:
        rows = [{"id": f"i{i}", "state": "open", "n": i} for i in range(600)]
        tx.insert_new_many("items", rows, ("id",))
    sent: list[str] = []
    store._conn.set_trace_callback(sent.append)
    with store.transaction() as tx:
        for count in range(1, 601, 7):
            found = tx.stored_rows("items", ("n",), ("id",), [[f"i{i}"] for i in range(count)])
            assert found == {(f"i{i}",): (i,) for i in range(count)}
    store._conn.set_trace_callback(None)
    shapes = {s.count("'i") for s in sent if s.startswith("SELECT id, n FROM items")}
    # One key column: 500 keys a statement, then powers of two (86 counts, 10 texts).
    assert shapes == {500, 256} | POWERS_OF_TWO

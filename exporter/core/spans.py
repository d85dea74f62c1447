"""Sums over a span of time from daily totals and raw rows: how calendar windows are read.

A domain keeps raw rows (probe checks, gateway minutes) for the retention and a row per
service and UTC day that is kept. A span is cut into whole days, read from the daily
rows, and the partial days around them, read from the raw rows
(:func:`exporter.core.periods.split_days`).
"""

from __future__ import annotations

from exporter.core.periods import Span, split_days
from exporter.core.store import Store


def span_sums(store: Store, span: Span, daily_sql: str, raw_sql: str) -> dict[str, list[int]]:
    """Per service, the column sums of ``daily_sql`` over the span's whole UTC days plus
    those of ``raw_sql`` over its partial pieces.

    ``daily_sql`` takes the first and last day (ISO, inclusive), ``raw_sql`` the start
    and end of a piece (epoch seconds, end excluded); both select the service, then the
    same sums, grouped by service.
    """
    split = split_days(span)
    parts = []
    if split.first_day is not None and split.last_day is not None:
        parts.append(
            store.query(daily_sql, (split.first_day.isoformat(), split.last_day.isoformat()))
        )
    parts.extend(store.query(raw_sql, (piece.start, piece.end)) for piece in split.pieces)
    totals: dict[str, list[int]] = {}
    for rows in parts:
        for row in rows:
            acc = totals.setdefault(str(row[0]), [0] * (len(row) - 1))
            for i, value in enumerate(row[1:]):
                acc[i] += int(value or 0)
    return totals

"""The sample helpers providers build large families with: the same samples, and the
same exposition bytes, as prometheus_client's ``add_metric``."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.samples import Sample

from exporter.core import exposition
from exporter.core.provider import (
    label_order,
    sample,
    stored_histogram_samples,
    streamed,
    tabular,
)


class _One:
    def __init__(self, family: object) -> None:
        self.family = family

    def collect(self) -> list[object]:
        return [self.family]


def test_a_sample_is_the_one_add_metric_appends() -> None:
    family = GaugeMetricFamily("g", "A gauge.", labels=["service", "window"])
    family.add_metric(["checkout", "1h"], 0.25)
    assert sample("g", {"service": "checkout", "window": "1h"}, 0.25) == family.samples[0]
    assert type(sample("g", {}, 1.0)) is Sample


def test_stored_histograms_give_add_metrics_samples_and_skip_what_series_leaves_out() -> None:
    # Two stored series: bounds 0.1 and 1; the first has 2 at or below 0.1, 5 at or
    # below 1 and 6 in all (sum 3.5); the second is left out by ``series``.
    rows = [
        ({"service": "a"}, [0.1, 1.0], [2, 5], 3.5, 6),
        ({"service": "gone"}, [0.1, 1.0], [1, 1], 0.05, 1),
    ]
    want = HistogramMetricFamily("h", "A histogram.", labels=["service", "team"])
    want.add_metric(["a", "payments"], [("0.1", 2.0), ("1", 5.0), ("+Inf", 6.0)], 3.5)

    def series(labels: dict[str, str]) -> dict[str, str] | None:
        return None if labels["service"] == "gone" else {**labels, "team": "payments"}

    got = list(stored_histogram_samples("h", rows, series))
    assert got == want.samples
    assert [s.value for s in got] == [2.0, 5.0, 6.0, 6.0, 3.5]


def _latencies() -> Iterator[Sample]:
    for service, seconds in (("b", 0.5), ("a", 1.5e-7)):
        yield sample("lat", {"service": service, "quantile": "0.95"}, seconds)


def test_a_streamed_family_writes_the_bytes_of_the_kept_one_each_time() -> None:
    kept = GaugeMetricFamily("lat", "Latency.", labels=["service", "quantile"])
    kept.add_metric(["b", "0.95"], 0.5)
    kept.add_metric(["a", "0.95"], 1.5e-7)
    lazy = streamed(GaugeMetricFamily("lat", "Latency.", labels=["service"]), _latencies)
    want = exposition.write([kept])
    assert exposition.write([lazy]) == want
    assert exposition.write([lazy]) == want  # made again, not used up
    # prometheus_client's own writer (the fallback for families the fast one does not
    # handle) reads it the same way.
    assert generate_latest(_One(lazy)) == generate_latest(_One(kept))  # type: ignore[arg-type]
    assert list(lazy.samples) == kept.samples


def test_label_order_sorts_as_sorted_label_items() -> None:
    label_sets = [
        {"service": "a!", "team": "x"},
        {"service": "a", "team": "x"},
        {"service": "a"},
        {"service": "a", "source": "nginx"},
        {"probe": "health", "service": "b"},
        {"team": "x", "service": "a"},
        {},
    ]
    want = sorted(label_sets, key=lambda labels: sorted(labels.items()))
    assert sorted(label_sets, key=label_order) == want
    assert want[:3] == [{}, {"probe": "health", "service": "b"}, {"service": "a"}]


def _latency_rows() -> Iterator[tuple[tuple[str, ...], float]]:
    # In the family's label order (service, then quantile), not the sorted one.
    yield ("b", "0.95"), 0.5
    yield ("a", "0.95"), 1.5e-7


def test_a_family_of_rows_writes_and_iterates_as_the_family_add_metric_builds() -> None:
    """Rows are label values in the family's label order, written with the names sorted
    as prometheus_client writes them; iterated, they are the samples ``add_metric``
    makes."""
    kept = GaugeMetricFamily("lat", "Latency.", labels=["service", "quantile"])
    kept.add_metric(["b", "0.95"], 0.5)
    kept.add_metric(["a", "0.95"], 1.5e-7)
    rows = GaugeMetricFamily("lat", "Latency.", labels=["service", "quantile"])
    tabular(rows, ["service", "quantile"], _latency_rows)
    want = exposition.write([kept])
    assert exposition.write([rows]) == want
    assert exposition.write([rows]) == want  # made again, not used up
    assert want[0].splitlines()[2] == b'lat{quantile="0.95",service="b"} 0.5'
    assert generate_latest(_One(rows)) == generate_latest(_One(kept))  # type: ignore[arg-type]
    assert list(rows.samples) == kept.samples


def test_counter_rows_are_named_with_their_suffix() -> None:
    kept = CounterMetricFamily("requests", "Requests.", labels=["service"])
    kept.add_metric(["a"], 3)
    rows = CounterMetricFamily("requests", "Requests.", labels=["service"])
    tabular(rows, ["service"], lambda: iter([(("a",), 3.0)]), "_total")
    assert exposition.write([rows]) == exposition.write([kept])


def test_a_row_whose_value_needs_escaping_is_written_escaped() -> None:
    """A value with a quote, a backslash or a line end among rows is escaped as
    prometheus_client escapes it."""
    values = [("a", "x"), ('b "quoted"', "y"), ("c\\d", "z"), ("two\nlines", "w")]
    kept = GaugeMetricFamily("g", "Odd values.", labels=["service", "window"])
    for v in values:
        kept.add_metric(list(v), 1.0)
    rows = GaugeMetricFamily("g", "Odd values.", labels=["service", "window"])
    tabular(rows, ["service", "window"], lambda: ((v, 1.0) for v in values))
    assert exposition.write([rows]) == exposition.write([kept])
    text, _ = exposition.write([rows])
    assert text == generate_latest(_One(kept))  # type: ignore[arg-type]

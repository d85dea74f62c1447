"""The one-pass writer gives exactly what prometheus_client gives, in both formats, and the
snapshot's gzip copies (pieces deflated apart, one member) decode to the exposition."""

from __future__ import annotations

import dataclasses
import gzip
import math
import struct
import zlib
from collections.abc import Iterator

import pytest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    StateSetMetricFamily,
    SummaryMetricFamily,
    UnknownMetricFamily,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from exporter.core import exposition
from exporter.core.provider import streamed
from exporter.core.snapshot import Snapshot, crc32_combine, deflate, gzip_pieces, render_part
from tests.support.prometheus import promtool_check_metrics

VALUES = [0, 1, -1, 0.5, 1e-9, 123456.0, 1234567.0, 1e16, 2**53, -0.0, math.inf, -math.inf, 7.25e21]


class _Reg:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def families() -> Iterator[Metric]:
    g = GaugeMetricFamily(
        "platform_a_ratio", 'Help with "quotes", a \\ and\na newline.', labels=["s", "k"]
    )
    for i, v in enumerate(VALUES):
        g.add_metric([f"svc-{i}", 'odd "q" \\ \n é %s %%'], v)
    yield g
    yield GaugeMetricFamily("platform_empty", "No samples.", labels=["s"])
    yield GaugeMetricFamily("platform_plain_seconds", "No labels.", value=3.5, unit="seconds")
    c = CounterMetricFamily("platform_events", "Events.", labels=["z", "a"], created=None)
    c.add_metric(["1", "2"], 5)
    c.add_metric(["3", "4"], 6, created=1700000000.5)
    yield c
    h = HistogramMetricFamily("platform_latency_seconds", "Latency.", labels=["s"])
    h.add_metric(["x"], [("0.1", 1), ("1", 3), ("+Inf", 4)], sum_value=2.5)
    yield h
    gh = GaugeHistogramMetricFamily("platform_age_seconds", "Ages.", labels=["s"])
    gh.add_metric(["x"], [("1", 2), ("+Inf", 5)], gsum_value=11)
    gh.add_metric(["y"], [("1", 0), ("+Inf", 1)], gsum_value=3)
    yield gh
    s = SummaryMetricFamily("platform_size_bytes", "Sizes.", labels=["s"])
    s.add_metric(["x"], count_value=3, sum_value=12)
    yield s
    info = InfoMetricFamily("platform_build", "Build.")
    info.add_metric([], {"version": "1.2"})
    yield info
    ss = StateSetMetricFamily("platform_mode", "Mode.", labels=["s"])
    ss.add_metric(["x"], {"on": True, "off": False})
    yield ss
    u = UnknownMetricFamily("platform_other", "Other.", labels=["s"])
    u.add_metric(["x"], 2)
    yield u


def timestamped() -> Metric:
    g = GaugeMetricFamily("platform_stamped", "Has a timestamp.", labels=["s"])
    g.add_metric(["x"], 1, timestamp=1700000000.25)
    return g


class TestOnePassWriter:
    @pytest.mark.parametrize("family", [*families(), timestamped()], ids=lambda m: m.name)
    def test_each_family_is_written_as_prometheus_client_writes_it(self, family: Metric) -> None:
        text, om = exposition.write([family])
        assert text == generate_latest(_Reg([family]))  # type: ignore[arg-type]
        assert om + b"# EOF\n" == generate_openmetrics(_Reg([family]))  # type: ignore[arg-type]

    def test_a_sequence_of_families_is_their_renderings_joined(self) -> None:
        all_families = list(families())
        text, om = exposition.write(iter(all_families))
        assert text == generate_latest(_Reg(all_families))  # type: ignore[arg-type]
        assert om + b"# EOF\n" == generate_openmetrics(_Reg(all_families))  # type: ignore[arg-type]

    def test_values_are_written_as_go_writes_floats(self) -> None:
        from prometheus_client.utils import floatToGoString

        for v in [*VALUES, math.nan, 1e6, 9999999.0, 0.1 + 0.2, 5e-324, 1.7976931348623157e308]:
            assert exposition.go_float(v) == floatToGoString(v)

    @pytest.mark.parametrize("odd", ['a "quoted" name', "back\\slash", "two\nlines"])
    @pytest.mark.parametrize("at", [0, 2, 4])
    def test_one_value_that_needs_escaping_among_plain_ones_is_escaped(
        self, odd: str, at: int
    ) -> None:
        """Label values are checked for escaping a family at a time: one odd value among
        plain ones, wherever it is, is written as prometheus_client writes it."""
        g = GaugeMetricFamily("platform_b_ratio", "Plain values but one.", labels=["s", "w"])
        for i in range(5):
            g.add_metric([odd if i == at else f"svc-{i}", "1h"], i / 4)
        text, om = exposition.write([g])
        assert text == generate_latest(_Reg([g]))  # type: ignore[arg-type]
        assert om + b"# EOF\n" == generate_openmetrics(_Reg([g]))  # type: ignore[arg-type]

    def test_a_streamed_family_with_an_odd_value_is_escaped(self) -> None:
        """A family whose samples are made as they are written (streamed) is made again
        when one of its values needs escaping."""
        g = GaugeMetricFamily("platform_c_ratio", "Streamed.", labels=["s"])
        for name in ("a", 'b"', "c"):
            g.add_metric([name], 1.0)
        made = list(g.samples)
        streamed(g, lambda: iter(made))
        text, _ = exposition.write([g])
        assert text.splitlines()[2:] == [
            b'platform_c_ratio{s="a"} 1.0',
            b'platform_c_ratio{s="b\\""} 1.0',
            b'platform_c_ratio{s="c"} 1.0',
        ]

    def test_a_help_suffix_is_added_to_every_family_in_both_formats(self) -> None:
        text, om = exposition.write([timestamped(), *families()], help_suffix=" Every 15s.")
        assert text.count(b" Every 15s.\n") == text.count(b"# HELP ")
        assert om.count(b" Every 15s.\n") == om.count(b"# HELP ")

    def test_the_openmetrics_parser_reads_back_every_sample(self) -> None:
        all_families = list(families())
        _, om = exposition.write(all_families)
        parsed = {f.name: f for f in text_string_to_metric_families((om + b"# EOF\n").decode())}
        for family in all_families:
            assert parsed[family.name].samples == family.samples

    def test_promtool_finds_nothing_to_report(self) -> None:
        families_ok = [f for f in families() if f.type not in ("unknown", "stateset", "info")]
        snapshot = Snapshot.render(families_ok)
        assert promtool_check_metrics(snapshot.text) == ""


class TestFamiliesInChunks:
    """A provider may build a large family a chunk at a time: consecutive families of one
    name, type, HELP and unit are written as one family."""

    @staticmethod
    def durations(services: list[str], doc: str = "Durations.") -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            "platform_request_duration_seconds", doc, labels=["service"], unit="seconds"
        )
        for service in services:
            n = float(ord(service) - ord("a") + 1)  # a: 1, b: 2, c: 3
            family.add_metric([service], [("0.1", n - 1), ("+Inf", n)], 0.5 * n)
        return family

    def test_chunks_are_written_as_the_whole_family(self) -> None:
        whole = exposition.write([self.durations(["a", "b", "c"])])
        chunked = exposition.write([self.durations(["a", "b"]), self.durations(["c"])])
        assert chunked == whole
        text, om = chunked
        assert text.count(b"# HELP platform_request_duration_seconds ") == 1
        assert om.count(b"# TYPE platform_request_duration_seconds histogram") == 1
        assert promtool_check_metrics(text) == ""

    def test_in_chunks_builds_a_family_per_hundred_rows_and_one_when_there_are_none(
        self,
    ) -> None:
        def make() -> GaugeMetricFamily:
            return GaugeMetricFamily("platform_rows", "Rows.", labels=["row"])

        def add(family: GaugeMetricFamily, row: int) -> None:
            family.add_metric([str(row)], row)

        chunks = list(exposition.in_chunks(list(range(250)), make, add))
        assert [len(c.samples) for c in chunks] == [100, 100, 50]
        assert [s.value for c in chunks for s in c.samples] == list(range(250))
        (empty,) = exposition.in_chunks([], make, add)
        assert empty.samples == []

    def test_a_family_of_the_same_name_with_other_help_keeps_its_headers(self) -> None:
        text, _ = exposition.write([self.durations(["a"]), self.durations(["b"], "Other.")])
        assert text.count(b"# HELP platform_request_duration_seconds ") == 2


class TestGzipFromPieces:
    def test_pieces_deflated_apart_decode_as_one_member_to_their_concatenation(self) -> None:
        pieces = [b"# HELP a A.\n" * 300, b"", "é\n".encode() * 1000, bytes(range(256)) * 50]
        body = gzip_pieces([(p, deflate(p)) for p in pieces])
        assert gzip.decompress(body) == b"".join(pieces)
        one = zlib.decompressobj(16 + zlib.MAX_WBITS)
        assert one.decompress(body) == b"".join(pieces)
        assert one.eof and one.unused_data == b""  # a single member: every client reads it all

    def test_a_snapshot_of_parts_decompresses_to_its_text_and_openmetrics(self) -> None:
        parts = [render_part([f]) for f in families()]
        snap = Snapshot.assemble(parts)
        assert gzip.decompress(snap.text_gzip) == snap.text
        assert gzip.decompress(snap.openmetrics_gzip) == snap.openmetrics_text
        assert snap.openmetrics_text.endswith(b"# EOF\n")

    @pytest.mark.parametrize(
        ("first", "second"),
        [(b"", b""), (b"abc", b""), (b"", b"xyz"), (b"\x00" * 7, b"\xff" * 70000),
         (bytes(range(256)) * 3, b"# HELP a A.\n" * 999)],
    )  # fmt: skip
    def test_crc32_combine_gives_the_checksum_of_the_concatenation(
        self, first: bytes, second: bytes
    ) -> None:
        combined = crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second))
        assert combined == zlib.crc32(first + second)

    def test_a_part_keeps_only_its_deflated_copies(self) -> None:
        part = render_part(families())
        text, om = exposition.write(families())
        assert (part.text, part.openmetrics) == (text, om)
        assert part.text_deflated.size == len(text)
        assert part.text_deflated.crc == zlib.crc32(text)
        kept = {f.name for f in dataclasses.fields(part)}
        assert kept == {"text_deflated", "openmetrics_deflated"}  # no uncompressed copy

    def test_the_gzip_of_parts_equals_the_gzip_of_their_joined_text(self) -> None:
        groups = [[f] for f in families()]
        snap = Snapshot.assemble([render_part(g) for g in groups])
        joined = b"".join(exposition.write(g)[0] for g in groups)
        one = zlib.decompressobj(16 + zlib.MAX_WBITS)
        assert one.decompress(snap.text_gzip) == joined
        assert one.eof and one.unused_data == b""
        assert snap.text_gzip[-8:] == struct.pack("<II", zlib.crc32(joined), len(joined))

    def test_an_empty_snapshot_is_valid_gzip(self) -> None:
        snap = Snapshot.assemble([])
        assert gzip.decompress(snap.text_gzip) == b""
        assert gzip.decompress(snap.openmetrics_gzip) == b"# EOF\n"

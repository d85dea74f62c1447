"""Streaming reader of FOCUS billing exports: CSV, gzip CSV and Parquet.

Reads FOCUS 1.0, 1.1 and 1.2 (the columns it reads are in all three; see
:mod:`exporter.domains.cost.focus_versions` for how a file's version is told and
which columns it must have; ``ServiceProviderName`` is read where
``ProviderName`` is absent). Rows are read
one at a time (CSV) or one record batch at a time (Parquet, through pyarrow,
imported lazily), keyed by what they are attributed by (see
:meth:`~exporter.domains.cost.allocation.Allocator.key_of`), and summed per (UTC day,
attribution key, provider, ServiceCategory, BillingCurrency): memory holds those sums and
a few bounded memo tables, never the file. A row whose charge period spans
several days is spread over them in proportion to time (a monthly fee from the
1st to the next 1st gives each day of the month an equal share). Only one-day
usage lines prove that their day has arrived (see
:mod:`exporter.domains.cost.freshness`); the file's result lists those days.

A malformed row (unparseable cost or date, no currency, invalid ``Tags``) is
rejected and reported with the file and line (CSV) or row number (Parquet);
the rest of the file still counts.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exporter.domains.cost.allocation import Allocator, CostKey
from exporter.domains.cost.focus_schema import COLUMNS
from exporter.domains.cost.focus_versions import VersionError, check
from exporter.domains.cost.freshness import proves_arrival
from exporter.domains.cost.records import CostDay

log = logging.getLogger("exporter.sources.focus")

DAY = 86400
# A row spread over more days than this is a mistake in the data, not a charge period.
MAX_SPREAD_DAYS = 400
MEMO_LIMIT = 200_000
MAX_REPORTED = 5
# Rows per Parquet batch: each becomes Python objects, so this bounds memory (~100 MB).
PARQUET_BATCH_ROWS = 16384

_PROVIDERS = {
    "aws": "aws",
    "amazon web services": "aws",
    "microsoft": "azure",
    "microsoft azure": "azure",
    "azure": "azure",
    "google cloud": "gcp",
    "google": "gcp",
    "gcp": "gcp",
}


class FocusFormatError(ValueError):
    """The file cannot be read as FOCUS at all (unknown format, missing columns)."""


def provider_label(name: str | None) -> str:
    if not name:
        return "unknown"
    key = name.strip().lower()
    if key in _PROVIDERS:
        return _PROVIDERS[key]
    slug = "".join(c if c.isalnum() else "-" for c in key).strip("-")
    return slug[:40] or "unknown"


@dataclass
class FileResult:
    """What one file contributed."""

    days: list[CostDay]
    # The file's FOCUS version (see exporter.domains.cost.focus_versions).
    version: str = ""
    # Days a one-day usage line proves arrived (YYYY-MM-DD), oldest first.
    arrived: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_rejected: int = 0
    problems: list[str] = field(default_factory=list)


class _Aggregator:
    def __init__(
        self, allocator: Allocator, provider: str | None, label: str, focus_version: str = "auto"
    ) -> None:
        # How a position is reported: a CSV line number, or a Parquet row number.
        self.where = "{}"
        self.allocator = allocator
        self.provider = provider
        self.label = label
        self.focus_version = focus_version
        self.version = ""
        # (UTC day number, key id, provider, category, currency) -> billed, effective, lines
        self.sums: dict[tuple[int, int, str, str, str], list[float]] = {}
        # UTC day numbers a usage line proves arrived.
        self.arrived: set[int] = set()
        self.rows = 0
        self.rejected = 0
        self.problems: list[str] = []
        self._times: dict[Any, int] = {}
        self._tags: dict[str, dict[str, str]] = {"": {}}
        # (Tags text, account, resource patterns) -> key id.
        self._key_ids: dict[Any, int] = {}
        # Attribution keys by id: (stored text, service, team it resolves to now).
        self._keys: list[tuple[str, str, str]] = []
        self._key_of_text: dict[str, int] = {}
        self._providers: dict[str | None, str] = {}
        self._currencies: dict[Any, str] = {}
        self._by_resource = allocator.uses_resources
        # Resource patterns matched, by resource id; and the distinct sets by small id
        # (for the pyarrow path: one column of ids).
        self._patterns: dict[str, int] = {}
        self._pattern_sets: list[tuple[str, ...]] = [()]
        self._pattern_set_ids: dict[tuple[str, ...], int] = {(): 0}

    def reject(self, pos: int, reason: str) -> None:
        self.rejected += 1
        if len(self.problems) < MAX_REPORTED:
            message = f"{self.label}:{self.where.format(pos)}: {reason}; row skipped"
            self.problems.append(message)
            log.warning("%s", message)

    def seconds(self, value: Any) -> int:
        cached = self._times.get(value)
        if cached is not None:
            return cached
        if isinstance(value, datetime):
            ts = value if value.tzinfo else value.replace(tzinfo=UTC)
            out = int(ts.timestamp())
        elif isinstance(value, int | float):
            out = int(value)
        else:
            text = str(value).strip()
            if not text:
                raise ValueError("empty time")
            parsed = datetime.fromisoformat(text.replace(" ", "T", 1))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            out = int(parsed.timestamp())
        if len(self._times) > MEMO_LIMIT:
            self._times.clear()
        self._times[value] = out
        return out

    def tags(self, raw: Any) -> tuple[str, dict[str, str]]:
        if raw is None:
            return "", {}
        if isinstance(raw, str):
            cached = self._tags.get(raw)
            if cached is not None:
                return raw, cached
            data = json.loads(raw)
            if data is None:
                data = {}
            if not isinstance(data, dict):
                raise ValueError("Tags is not a JSON object")
            parsed = {str(k): "" if v is None else str(v) for k, v in data.items()}
            if len(self._tags) > MEMO_LIMIT:
                self._tags = {"": {}}
            self._tags[raw] = parsed
            return raw, parsed
        # Parquet map<string,string> arrives as a list of (key, value) pairs.
        items = raw.items() if isinstance(raw, dict) else raw
        parsed = {str(k): "" if v is None else str(v) for k, v in items}
        return json.dumps(parsed, sort_keys=True), parsed

    def currency(self, value: Any) -> str:
        cur = value.strip().upper() if isinstance(value, str) else ""
        if len(cur) != 3 or not cur.isalpha():
            raise ValueError(f"BillingCurrency {value!r} is not an ISO 4217 code")
        self._currencies[value] = cur
        return cur

    def prepare(
        self,
        currency: Any,
        start: Any,
        end: Any,
        category: Any,
        provider: Any,
        account: Any,
        patterns: int,
        tags: Any,
    ) -> tuple[int, int, int, str, str, str]:
        """Validate a line's non-cost fields; (t0, t1, key id, provider, category,
        currency). ``patterns`` is the id of the resource patterns the line's resource
        matched (:meth:`patterns_of`). Raises ValueError or TypeError for a malformed line."""
        # The hot path of every ingest: memo lookups first, the general code on a miss.
        cur = self._currencies.get(currency) or self.currency(currency)
        times = self._times
        t0 = times.get(start)
        if t0 is None:
            t0 = self.seconds(start)
        t1: int | None = t0
        if end is not None and end != "":
            t1 = times.get(end)
            if t1 is None:
                t1 = self.seconds(end)
        assert t1 is not None
        if tags.__class__ is str:
            tag_key = tags
            tag_map = self._tags.get(tags)
            if tag_map is None:
                tag_key, tag_map = self.tags(tags)
        else:
            tag_key, tag_map = self.tags(tags)
        akey = (tag_key, account or "", patterns)
        kid = self._key_ids.get(akey)
        if kid is None:
            kid = self._key_id(akey, tag_map)
        prov = self.provider
        if prov is None:
            prov = self._providers.get(provider)
            if prov is None:
                prov = self._providers[provider] = provider_label(provider)
        return t0, t1, kid, prov, category or "Other", cur

    def patterns_of(self, resource: Any) -> int:
        """Id of the resource patterns ``resource`` matches (0: none, or no rule has any)."""
        if not self._by_resource or not resource:
            return 0
        found = self._patterns.get(resource)
        if found is not None:
            return found
        matched = self.allocator.patterns_of(str(resource))
        pid = self._pattern_set_ids.get(matched)
        if pid is None:
            pid = self._pattern_set_ids[matched] = len(self._pattern_sets)
            self._pattern_sets.append(matched)
        if len(self._patterns) > MEMO_LIMIT:
            self._patterns.clear()
        self._patterns[resource] = pid
        return pid

    def accumulate(
        self,
        p: tuple[int, int, int, str, str, str],
        b: float,
        e: float,
        n: float,
        proves: bool = True,
    ) -> None:
        """Add ``n`` lines summing to (b, e) to their UTC day(s); a one-day line that
        ``proves`` its day (see :func:`proves_arrival`) marks it arrived."""
        t0, t1 = p[0], p[1]
        first = t0 // DAY
        if t1 <= (first + 1) * DAY:
            self._sum((first, p[2], p[3], p[4], p[5]), b, e, n)
            if proves:
                self.arrived.add(first)
            return
        span = t1 - t0
        last = min((t1 - 1) // DAY, first + MAX_SPREAD_DAYS)
        for d in range(first, last + 1):
            share = (min(t1, (d + 1) * DAY) - max(t0, d * DAY)) / span
            self._sum((d, p[2], p[3], p[4], p[5]), b * share, e * share, n * share)

    def add(
        self,
        pos: int,
        billed: Any,
        effective: Any,
        currency: Any,
        start: Any,
        end: Any,
        category: Any,
        provider: Any,
        account: Any,
        resource: Any,
        tags: Any,
        charge_category: Any = None,
        charge_class: Any = None,
    ) -> None:
        """One line, read row by row (the stdlib CSV path, and batches that need it)."""
        self.rows += 1
        try:
            b = float(billed)
            e = float(effective)
            if b != b or e != e:
                raise ValueError("cost is NaN")
            pid = self.patterns_of(resource)
            p = self.prepare(currency, start, end, category, provider, account, pid, tags)
        except (ValueError, TypeError) as exc:
            self.reject(pos, str(exc) or type(exc).__name__)
            return
        self.accumulate(p, b, e, 1.0, proves_arrival(charge_category, charge_class))

    def _key_id(self, akey: tuple[str, str, int], tags: dict[str, str]) -> int:
        """The id of a line's attribution key (its tags, account, resource patterns)."""
        key = CostKey(self.allocator.tags_of(tags), akey[1], self._pattern_sets[akey[2]])
        text = key.text()
        kid = self._key_of_text.get(text)
        if kid is None:
            kid = self._key_of_text[text] = len(self._keys)
            self._keys.append((text, *self.allocator.resolve(key)))
        if len(self._key_ids) > MEMO_LIMIT:
            self._key_ids.clear()
        self._key_ids[akey] = kid
        return kid

    def _sum(self, key: tuple[int, int, str, str, str], b: float, e: float, n: float) -> None:
        acc = self.sums.get(key)
        if acc is None:
            self.sums[key] = [b, e, n]
        else:
            acc[0] += b
            acc[1] += e
            acc[2] += n

    def result(self) -> FileResult:
        arrived = [_iso_day(d) for d in sorted(self.arrived)]
        days = [
            CostDay(
                day=_iso_day(k[0]),
                service=self._keys[k[1]][1],
                team=self._keys[k[1]][2],
                provider=k[2],
                category=k[3],
                currency=k[4],
                billed=v[0],
                effective=v[1],
                lines=round(v[2]),
                ident=self._keys[k[1]][0],
            )
            for k, v in self.sums.items()
        ]
        return FileResult(days, self.version, arrived, self.rows, self.rejected, self.problems)


def _iso_day(number: int) -> str:
    return datetime.fromtimestamp(number * DAY, UTC).date().isoformat()


def file_format(path: Path) -> str:
    """``parquet``, ``csv.gz`` or ``csv``, by magic bytes (names lie)."""
    with path.open("rb") as f:
        head = f.read(4)
    if head == b"PAR1":
        return "parquet"
    if head[:2] == b"\x1f\x8b":
        return "csv.gz"
    return "csv"


def read_file(
    path: Path,
    allocator: Allocator,
    provider: str | None = None,
    label: str | None = None,
    focus_version: str = "auto",
) -> FileResult:
    """Read one FOCUS export file; raise FocusFormatError if it is not one (of a
    supported version: ``focus_version``, or told from its columns with ``auto``)."""
    fmt = file_format(path)
    agg = _Aggregator(allocator, provider, label or str(path), focus_version)
    if fmt == "parquet":
        _read_parquet(path, agg)
    else:
        _read_csv(path, fmt == "csv.gz", agg)
    return agg.result()


def _index(header: list[str], agg: _Aggregator) -> dict[str, int]:
    names = {name.strip().lstrip("\ufeff"): i for i, name in enumerate(header)}
    try:
        agg.version = check(agg.label, names, agg.focus_version)
    except VersionError as exc:
        raise FocusFormatError(str(exc)) from None
    return {c: names[c] for c in COLUMNS if c in names}


def _read_csv(path: Path, gzipped: bool, agg: _Aggregator) -> None:
    """With pyarrow installed, its streaming CSV reader (about twice as fast as the
    stdlib's on wide export rows); otherwise the stdlib ``csv`` module."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the install
        _read_csv_stdlib(path, gzipped, agg)
    else:
        _read_csv_arrow(path, gzipped, agg)


def _csv_header(path: Path, gzipped: bool, label: str) -> list[str]:
    opener: Any = gzip.open if gzipped else open
    try:
        with opener(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
            return next(csv.reader(text))
    except StopIteration:
        raise FocusFormatError(f"{label}: empty file") from None
    except (csv.Error, UnicodeDecodeError, OSError, EOFError) as exc:
        raise FocusFormatError(f"{label}: unreadable: {exc}") from None


def _read_csv_arrow(path: Path, gzipped: bool, agg: _Aggregator) -> None:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    header = _csv_header(path, gzipped, agg.label)
    idx = _index(header, agg)
    wanted = [header[idx[c]] for c in COLUMNS if c in idx]
    by_name = {c: header[idx[c]] for c in COLUMNS if c in idx}

    def invalid(row: Any) -> str:
        agg.rows += 1
        line = row.number + 1 if row.number is not None else "?"
        agg.reject(
            line,  # type: ignore[arg-type]
            f"{row.actual_columns} fields where the header has {row.expected_columns}",
        )
        return "skip"

    stream = pa.input_stream(str(path), compression="gzip" if gzipped else None)
    reader = pcsv.open_csv(
        stream,
        read_options=pcsv.ReadOptions(block_size=1 << 20, use_threads=False),
        parse_options=pcsv.ParseOptions(invalid_row_handler=invalid),
        convert_options=pcsv.ConvertOptions(
            # Strings only: a bad value must cost one row, not the whole block.
            column_types={name: pa.string() for name in header},
            include_columns=wanted,
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    # Line numbers assume no line breaks inside quoted fields (exports have none).
    line = 2
    try:
        for batch in reader:
            add_batch(agg, batch, by_name, line)
            line += batch.num_rows
    except (pa.ArrowException, OSError, EOFError) as exc:
        # A corrupt tail: what was read still counts.
        agg.rows += 1
        agg.reject(line, f"file unreadable from here: {exc}")


def _read_csv_stdlib(path: Path, gzipped: bool, agg: _Aggregator) -> None:
    opener: Any = gzip.open if gzipped else open
    with opener(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
        reader = csv.reader(text)
        try:
            header = next(reader)
        except StopIteration:
            raise FocusFormatError(f"{agg.label}: empty file") from None
        except (csv.Error, UnicodeDecodeError, OSError) as exc:
            raise FocusFormatError(f"{agg.label}: unreadable: {exc}") from None
        idx = _index(header, agg)
        width = len(header)

        def col(name: str) -> int:
            # A missing optional column reads the empty cell appended to each row.
            return idx.get(name, width)

        ib, ie, ic = col("BilledCost"), col("EffectiveCost"), col("BillingCurrency")
        i0, i1 = col("ChargePeriodStart"), col("ChargePeriodEnd")
        icat, iacc, ires, itag = (
            col("ServiceCategory"),
            col("SubAccountId"),
            col("ResourceId"),
            col("Tags"),
        )
        iprov = idx.get("ProviderName", idx.get("ServiceProviderName", width))
        ichg, icls = col("ChargeCategory"), col("ChargeClass")
        add = agg.add
        try:
            for row in reader:
                if len(row) != width:
                    if not row:
                        continue
                    agg.rows += 1
                    agg.reject(reader.line_num, f"{len(row)} fields where the header has {width}")
                    continue
                row.append("")
                add(
                    reader.line_num,
                    row[ib],
                    row[ie],
                    row[ic],
                    row[i0],
                    row[i1],
                    row[icat],
                    row[iprov],
                    row[iacc],
                    row[ires],
                    row[itag] or None,
                    row[ichg],
                    row[icls],
                )
        except (csv.Error, UnicodeDecodeError, EOFError, OSError) as exc:
            # A truncated or corrupt tail: what was read still counts.
            agg.rows += 1
            agg.reject(reader.line_num, f"file unreadable from here: {exc}")


def _read_parquet(path: Path, agg: _Aggregator) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise FocusFormatError(
            f"{agg.label}: Parquet needs pyarrow: pip install 'platform-kpi-exporter[parquet]'"
        ) from exc
    try:
        # Unbuffered column reads keep only one batch of pages in memory at a time.
        pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    except (pa.ArrowException, OSError) as exc:
        raise FocusFormatError(f"{agg.label}: unreadable Parquet: {exc}") from None
    names = pf.schema_arrow.names
    idx = _index(names, agg)
    wanted = [c for c in COLUMNS if c in idx]
    agg.where = "row {}"
    row_no = 1
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=wanted):
        add_batch(agg, batch, {c: c for c in wanted}, row_no)
        row_no += batch.num_rows


def add_batch(agg: _Aggregator, batch: Any, by_name: dict[str, str], first_pos: int) -> None:
    """A record batch: summed by pyarrow per distinct line key when it can, else row by row."""
    if not _group_batch(agg, batch, by_name):
        _row_batch(agg, batch, by_name, first_pos)


def _seconds_array(arr: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.cast(arr, pa.timestamp("s", arr.type.tz), safe=False).cast(pa.int64())


def _group_batch(agg: _Aggregator, batch: Any, by_name: dict[str, str]) -> bool:
    """Sum the batch's costs per distinct (charge period, currency, category, provider,
    tags, account[, resource patterns]) in pyarrow, then key each group once. False (and
    nothing added) when a row needs a row-by-row look: a bad or missing value."""
    import pyarrow as pa

    costs = _cost_arrays(batch, by_name)
    if costs is None:
        return False
    provider_col = "ProviderName" if "ProviderName" in by_name else "ServiceProviderName"
    keyed = _group_keys(agg, batch, by_name, provider_col)
    if keyed is None:
        return False
    names, arrays = keyed
    table = pa.Table.from_arrays([*arrays, *costs], names=[*names, "__b", "__e"])
    grouped = table.group_by(names, use_threads=False).aggregate(
        [("__b", "sum"), ("__e", "sum"), ("__b", "count")]
    )
    cols = {name: grouped.column(name).to_pylist() for name in grouped.column_names}
    prepared = _prepare_groups(agg, cols, grouped.num_rows, provider_col)
    if prepared is None:
        return False
    none: list[Any] = [None] * grouped.num_rows
    proves = [
        proves_arrival(c, k)
        for c, k in zip(
            cols.get("ChargeCategory", none), cols.get("ChargeClass", none), strict=True
        )
    ]
    for p, b, e, n, ok in zip(
        prepared, cols["__b_sum"], cols["__e_sum"], cols["__b_count"], proves, strict=True
    ):
        agg.accumulate(p, b, e, float(n), ok)
    agg.rows += batch.num_rows
    return True


def _cost_arrays(batch: Any, by_name: dict[str, str]) -> tuple[Any, Any] | None:
    """BilledCost and EffectiveCost as float64 arrays; None if any value is missing or
    not a number (the row-by-row path reports it)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        billed = batch.column(by_name["BilledCost"]).cast(pa.float64())
        effective = batch.column(by_name["EffectiveCost"]).cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    if billed.null_count or effective.null_count:
        return None
    if pc.any(pc.is_nan(billed)).as_py() or pc.any(pc.is_nan(effective)).as_py():
        return None
    return billed, effective


def _group_keys(
    agg: _Aggregator, batch: Any, by_name: dict[str, str], provider_col: str
) -> tuple[list[str], list[Any]] | None:
    """The columns a batch is grouped by (names, arrays): the line key, its tags and
    account and (when resources decide) the id of the resource patterns each row's
    resource matches; None if a column cannot be."""
    import pyarrow as pa

    keys = ["ChargePeriodStart", "ChargePeriodEnd", "BillingCurrency", "ServiceCategory"]
    keys += [provider_col, "ChargeCategory", "ChargeClass", "Tags", "SubAccountId"]
    names: list[str] = []
    arrays: list[Any] = []
    if agg._by_resource:
        # Not the resource itself: one group per resource would be one per line.
        patterns = _pattern_array(agg, batch, by_name)
        if patterns is None:
            return None
        names.append("__patterns")
        arrays.append(patterns)
    for key in keys:
        if key not in by_name:
            continue
        arr = batch.column(by_name[key])
        if pa.types.is_timestamp(arr.type):
            arr = _seconds_array(arr)
        elif not (
            pa.types.is_string(arr.type)
            or pa.types.is_large_string(arr.type)
            or pa.types.is_integer(arr.type)
            or pa.types.is_null(arr.type)
        ):
            return None  # e.g. Tags as a map: read row by row
        if key == "ChargePeriodStart" and arr.null_count:
            return None
        names.append(key)
        arrays.append(arr)
    return names, arrays


def _prepare_groups(
    agg: _Aggregator, cols: dict[str, list[Any]], rows: int, provider_col: str
) -> list[tuple[int, int, int, str, str, str]] | None:
    """Each group's validated line key (see :meth:`_Aggregator.prepare`); None if one is
    malformed (the row-by-row path reports it)."""
    none: list[Any] = [None] * rows
    prepared = []
    try:
        for values in zip(
            cols.get("BillingCurrency", none),
            cols["ChargePeriodStart"],
            cols.get("ChargePeriodEnd", none),
            cols.get("ServiceCategory", none),
            cols.get(provider_col, none),
            cols.get("SubAccountId", none),
            cols.get("__patterns", [0] * rows),
            cols.get("Tags", none),
            strict=True,
        ):
            c, t0, t1, cat, prov, acc, pid, tags = values
            prepared.append(agg.prepare(c, t0, t1, cat, prov, acc, pid, tags or None))
    except (ValueError, TypeError):
        return None
    return prepared


def _pattern_array(agg: _Aggregator, batch: Any, by_name: dict[str, str]) -> Any:
    """Per row, the id of the resource patterns its ``ResourceId`` matches (each distinct
    resource matched once); None if the column cannot be read this way."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if "ResourceId" not in by_name:
        return pa.array([0] * batch.num_rows, pa.int32())
    arr = batch.column(by_name["ResourceId"])
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return None  # a typed column: the row-by-row path reads it
    encoded = pc.dictionary_encode(pc.fill_null(arr, ""))
    ids = [agg.patterns_of(v) for v in encoded.dictionary.to_pylist()]
    return pc.take(pa.array(ids, pa.int32()), encoded.indices)


def _row_batch(agg: _Aggregator, batch: Any, by_name: dict[str, str], first_pos: int) -> None:
    import pyarrow as pa

    cols: dict[str, list[Any]] = {}
    for column, name in by_name.items():
        arr = batch.column(name)
        if pa.types.is_timestamp(arr.type):
            cols[column] = _seconds_array(arr).to_pylist()
        elif pa.types.is_decimal(arr.type):
            cols[column] = arr.cast(pa.float64()).to_pylist()
        else:
            cols[column] = arr.to_pylist()
    none: list[Any] = [None] * batch.num_rows
    prov = cols.get("ProviderName", cols.get("ServiceProviderName", none))
    add = agg.add
    for pos, (b, e, c, t0, t1, cat, p, a, r, t, chg, cls) in enumerate(
        zip(
            cols["BilledCost"],
            cols["EffectiveCost"],
            cols["BillingCurrency"],
            cols["ChargePeriodStart"],
            cols.get("ChargePeriodEnd", none),
            cols.get("ServiceCategory", none),
            prov,
            cols.get("SubAccountId", none),
            cols.get("ResourceId", none),
            cols.get("Tags", none),
            cols.get("ChargeCategory", none),
            cols.get("ChargeClass", none),
            strict=True,
        ),
        start=first_pos,
    ):
        if b is None or e is None or t0 is None:
            agg.rows += 1
            agg.reject(pos, "null BilledCost, EffectiveCost or ChargePeriodStart")
            continue
        add(pos, b, e, c, t0, t1, cat, p, a, r, t or None, chg, cls)


def iter_export_files(root: Path) -> Iterator[Path]:
    """Export files under a directory, in name order."""
    for path in sorted(root.rglob("*")):
        name = path.name.lower()
        if path.is_file() and name.endswith((".csv", ".csv.gz", ".parquet", ".gz")):
            yield path

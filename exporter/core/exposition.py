"""One pass over metric families writes both exposition formats.

:func:`write` renders families as the Prometheus text format (0.0.4) and the
OpenMetrics text format (1.0, without its ``# EOF``), byte for byte what
``prometheus_client``'s ``generate_latest`` and OpenMetrics ``generate_latest``
give for the same families. It is faster because a sample line is the same in
both formats for the samples the exporter makes (no timestamp, no exemplar):
each line is built once, with its label names checked once per name instead of
escaped character by character per sample. A family it does not handle that
way (a timestamp, an exemplar, a native histogram, a name that needs escaping)
is handed to ``prometheus_client`` whole, so the output never differs.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import TypeVar

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.core.provider import Rows

_OM_EOF = "# EOF\n"
# Names the formats print as they are (prometheus_client's legacy character set).
# (Without colons: OpenMetrics sample names are escaped with the label-name set.)
_METRIC_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# The text format renames some types (and counters' HELP/TYPE name gets _total).
_TEXT_TYPE = {
    "info": "gauge",
    "stateset": "gauge",
    "gaugehistogram": "histogram",
    "unknown": "untyped",
}
_TEXT_SUFFIX = {"counter": "_total", "info": "_info"}
# Samples the text format moves into a gauge family of their own, after the family.
_OM_ONLY = ("_created", "_gsum", "_gcount")
_SPECIAL = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}


class _Generic(Exception):
    """This family needs prometheus_client's general writer."""


class _Registry:
    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Sequence[Metric]:
        return self._families


def go_float(value: float) -> str:
    """A sample value as prometheus_client's ``floatToGoString`` writes it."""
    d = float(value)
    s = repr(d)
    if s[-1] in "fn":
        return _SPECIAL[s]
    if d > 0:
        dot = s.find(".")
        if dot > 6:  # Go switches to exponents sooner than Python
            mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
            return f"{mantissa}e+{dot - 1:02d}"
    return s


def _escape_value(v: str) -> str:
    if "\\" in v or "\n" in v or '"' in v:
        return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return v


def _values(order: tuple[str, ...]) -> Callable[[Mapping[str, str]], tuple[str, ...]]:
    """What reads a sample's label values in ``order``, as a tuple."""
    if len(order) == 1:
        (key,) = order
        return lambda labels: (labels[key],)
    return itemgetter(*order)  # type: ignore[return-value]  # a tuple of two or more


# (the line's %-template, a reader of its label values, whether it moves in the text
# format, how many quotes its labels write): one per sample name and label names.
_Shape = tuple[str, Callable[[Mapping[str, str]], tuple[str, ...]], bool, int]


def _shape(name: str, keys: tuple[str, ...], special: tuple[str, ...]) -> _Shape:
    template, order = _template(name, keys) if keys else (f"{name} %s\n", ())
    values = _values(order) if order else (lambda labels: ())
    return template, values, name in special, 2 * len(order)


def _template(name: str, keys: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The line of a sample named ``name`` with label names ``keys`` (in the sample's
    order) as a %-template of its sorted label values and its value, and that order."""
    for k in keys:
        if not _LABEL_NAME.match(k):
            raise _Generic
    order = tuple(sorted(keys))
    labels = ",".join(f'{k}="%s"' for k in order)
    return f"{name}{{{labels}}} %s\n", order


def _samples(metric: Metric, lines: list[str], moved: dict[str, list[str]]) -> None:
    """Append the family's sample lines; the OpenMetrics-only ones also go to ``moved``.

    Label values are written as they are, and the family's lines checked once for
    what escaping would have changed: a backslash, or more quotes or line ends than
    its labels and lines write. Only a family that has one is written again with its
    values escaped, its samples iterated again (such a value is rare, and escaping
    each value as it is written took a third of the writer's time).
    """
    start = len(lines)
    quotes = _plain_samples(metric, lines, moved)
    written = lines[start:]
    block = "".join(written)
    if "\\" in block or block.count('"') != quotes or block.count("\n") != len(written):
        del lines[start:]
        moved.clear()
        _escaped_samples(metric, lines, moved)


def _plain_samples(metric: Metric, lines: list[str], moved: dict[str, list[str]]) -> int:
    """The family's lines with label values unescaped; how many quotes they should hold."""
    if isinstance(metric.samples, Rows):
        return _row_lines(metric.samples, metric.name, lines)
    # Samples of one family mostly share their name and label names: one shape each.
    shapes: dict[tuple[str, tuple[str, ...]], _Shape] = {}
    special = tuple(metric.name + s for s in _OM_ONLY)
    quotes = 0
    append = lines.append
    for name, labels, value, timestamp, exemplar, native in metric.samples:
        if timestamp is not None or exemplar is not None or native is not None:
            raise _Generic
        key = (name, tuple(labels))
        found = shapes.get(key)
        if found is None:
            found = shapes[key] = _shape(name, key[1], special)
        template, values, moves, n = found
        s = repr(float(value))
        if s[-1] in "fn" or s.find(".") > 6:
            s = go_float(value)
        line = template % (*values(labels), s)
        quotes += n
        if moves:
            moved.setdefault(name[len(metric.name) :], []).append(line)
        append(line)
    return quotes


def _row_lines(rows: Rows, family: str, lines: list[str]) -> int:
    """The lines of a family given as rows of label values (see :class:`Rows`);
    how many quotes they should hold."""
    if any(rows.name == family + s for s in _OM_ONLY) or not _METRIC_NAME.match(rows.name):
        raise _Generic
    template, order = (
        _template(rows.name, rows.labels) if rows.labels else (rows.name + " %s\n", ())
    )
    # The values come in the family's label order; the line has them sorted by name.
    index = tuple(sorted(range(len(order)), key=rows.labels.__getitem__))
    reorder = None if index == tuple(range(len(order))) else itemgetter(*index)
    append = lines.append
    n = 0
    for values, value in rows.rows():
        s = repr(float(value))
        if s[-1] in "fn" or s.find(".") > 6:
            s = go_float(value)
        append(template % (*(values if reorder is None else reorder(values)), s))
        n += 1
    return 2 * len(order) * n


def _escaped_samples(metric: Metric, lines: list[str], moved: dict[str, list[str]]) -> None:
    """The family's lines, each label value escaped as the formats require."""
    templates: dict[tuple[str, tuple[str, ...]], tuple[str, tuple[str, ...]]] = {}
    special = tuple(metric.name + s for s in _OM_ONLY)
    for name, labels, value, timestamp, exemplar, native in metric.samples:
        if timestamp is not None or exemplar is not None or native is not None:
            raise _Generic
        if labels:
            shape = (name, tuple(labels))
            found = templates.get(shape)
            if found is None:
                found = templates[shape] = _template(name, shape[1])
            template, order = found
            line = template % (*[_escape_value(labels[k]) for k in order], go_float(value))
        else:
            line = f"{name} {go_float(value)}\n"
        if name in special:
            moved.setdefault(name[len(metric.name) :], []).append(line)
        lines.append(line)


def _family(
    metric: Metric, text: list[str], om: list[str], help_suffix: str, continued: bool = False
) -> None:
    name, mtype = metric.name, metric.type
    if not _METRIC_NAME.match(name):
        raise _Generic
    doc = metric.documentation + help_suffix
    text_doc = doc.replace("\\", r"\\").replace("\n", r"\n")
    om_doc = text_doc.replace('"', r"\"")
    lines: list[str] = []
    moved: dict[str, list[str]] = {}
    _samples(metric, lines, moved)
    text_name = name + _TEXT_SUFFIX.get(mtype, "")
    if not continued or moved:
        text.append(
            f"# HELP {text_name} {text_doc}\n# TYPE {text_name} {_TEXT_TYPE.get(mtype, mtype)}\n"
        )
        om.append(f"# HELP {name} {om_doc}\n# TYPE {name} {mtype}\n")
        if metric.unit:
            om.append(f"# UNIT {name} {metric.unit}\n")
    om.extend(lines)
    if not moved:
        text.extend(lines)
        return
    skip = {id(line) for group in moved.values() for line in group}
    text.extend(line for line in lines if id(line) not in skip)
    for suffix, group in sorted(moved.items()):
        text.append(f"# HELP {name}{suffix} {text_doc}\n# TYPE {name}{suffix} gauge\n")
        text.extend(group)


def _generic(metric: Metric, text: list[str], om: list[str], help_suffix: str) -> None:
    if help_suffix:
        metric = copy.copy(metric)
        metric.documentation += help_suffix
    registry = _Registry([metric])
    text.append(generate_latest(registry).decode())  # type: ignore[arg-type,no-untyped-call]
    om.append(generate_openmetrics(registry).decode().removesuffix(_OM_EOF))  # type: ignore[arg-type,no-untyped-call]


def write(families: Iterable[Metric], help_suffix: str = "") -> tuple[bytes, bytes]:
    """(text format, OpenMetrics without ``# EOF``) of ``families``, taken one at a time
    as they come (a provider that yields lazily never has them all alive at once).
    ``help_suffix`` is appended to every family's HELP text."""
    text: list[bytes] = []
    om: list[bytes] = []
    for t, o in each_family(families, help_suffix):
        text.append(t)
        om.append(o)
    return b"".join(text), b"".join(om)


def each_family(families: Iterable[Metric], help_suffix: str = "") -> Iterator[tuple[bytes, bytes]]:
    """Each family's (text format, OpenMetrics) bytes, in turn: a caller that consumes
    them as they come has one family's lines alive at a time, never a whole render's.

    A family may come in chunks: consecutive families of the same name, type, HELP and
    unit are one family, its HELP and TYPE written once, so a provider of a large
    family can build it a chunk at a time. (A chunk with OpenMetrics-only samples,
    ``_created`` and the like, is written whole, headers included.)
    """
    previous: tuple[str, str, str, str] | None = None
    for metric in families:
        text: list[str] = []
        om: list[str] = []
        shape = (metric.name, metric.type, metric.documentation, metric.unit)
        continued, previous = shape == previous, shape
        try:
            _family(metric, text, om, help_suffix, continued)
        except _Generic:
            text.clear()
            om.clear()
            _generic(metric, text, om, help_suffix)
        yield "".join(text).encode(), "".join(om).encode()


T = TypeVar("T")
M = TypeVar("M", bound=Metric)
# Rows per chunk of a large family (a row per check, per service...): such a family is
# built and rendered a chunk at a time, one family in the exposition (see
# each_family), so a render holds one chunk's samples, not every row's
# (14,000 samples for the durations of 1,000 probe checks).
CHUNK = 100


def in_chunks(rows: Sequence[T], make: Callable[[], M], add: Callable[[M, T], None]) -> Iterator[M]:
    """The family ``make`` gives, over ``rows``, built and yielded ``CHUNK`` rows at a
    time (one empty family when there are none): ``add`` puts a row's samples in it."""
    for start in range(0, max(len(rows), 1), CHUNK):
        family = make()
        for row in rows[start : start + CHUNK]:
            add(family, row)
        yield family

"""What a metrics provider is and may read, and the helpers every provider shapes families with.

A *provider* is ``collect(ctx)``, yielding prometheus_client metric families.
Providers read committed state only (the store, health copies, the config); they
never call an upstream. A :class:`ProviderSpec` says what a provider reads and
whether its values move with the clock, so that a refresh recomputes only the
providers whose inputs changed, and the time-driven ones at most once per
``metrics.min_refresh`` (see :mod:`exporter.core.snapshot`). If one raises, its
previous rendering is kept, so one bug cannot empty ``/metrics``.

Domain providers may read the static facts of ``ctx.health`` (source names, kinds,
intervals) but not what changes with each poll: only the exporter's own health
provider reads that (it declares the input :data:`HEALTH`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain
from typing import TYPE_CHECKING, TypeVar

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from exporter.core.health import SourceHealth
from exporter.core.settings import ConfigBase
from exporter.core.store import Store

if TYPE_CHECKING:
    from exporter.core.catalog import Catalog


@dataclass(frozen=True)
class SourceInfo:
    """What a provider may know about one source kind, instead of naming kinds."""

    kind: str
    produces: frozenset[type]  # the record types it commits
    tags: frozenset[str]  # other facts about it: "paid_api", "template:<kind of definition>"
    enabled: bool  # the config has its block and the block is enabled: its data is collected


@dataclass(frozen=True)
class RenderContext:
    """What a provider may read."""

    config: ConfigBase
    store: Store
    health: Sequence[SourceHealth]
    now: float
    sources: Sequence[SourceInfo]  # every source kind, in the config's order
    catalog_loader: Callable[[], Catalog]  # reads the merged catalog from the store
    # Seconds between recomputations of a time-driven provider without new data.
    min_refresh: float = 15.0

    def kinds(
        self, *, producing: type | None = None, tag: str | None = None, enabled_only: bool = True
    ) -> tuple[str, ...]:
        """The source kinds that commit records of type ``producing`` and carry ``tag``
        (either filter left out: any), in the config's order; only the enabled ones
        unless ``enabled_only`` is false."""
        return tuple(
            s.kind
            for s in self.sources
            if (producing is None or producing in s.produces)
            and (tag is None or tag in s.tags)
            and (s.enabled or not enabled_only)
        )

    @cached_property
    def catalog(self) -> Catalog:
        """The merged service catalog (config first, then external catalogs), read once, when
        first asked for: a catalog that fails to load fails only the providers that read it."""
        return self.catalog_loader()

    @cached_property
    def _config_teams(self) -> dict[str, str]:
        # Once per render: looking each service up in the config is linear in its services.
        return {s.name: s.team for s in reversed(self.config.services)}

    def team_of(self, service: str) -> str:
        """The owning team from the merged catalog (the config wins); "unknown" if none."""
        team = self._config_teams.get(service)
        return team if team is not None else self.catalog.team_of(service)

    def known_services(self) -> frozenset[str]:
        """Every service of the merged catalog."""
        return frozenset(self.catalog.services)

    def interval_of(self, kind: str) -> float | None:
        for h in self.health:
            if h.kind == kind:
                return h.interval
        return None


Provider = Callable[[RenderContext], Iterable[Metric]]
M = TypeVar("M", bound=Metric)

#: The input of the sources' health as each poll changes it (not a domain's data).
HEALTH = "health"


@dataclass(frozen=True)
class ProviderSpec:
    """A provider and what decides when it is recomputed."""

    name: str  # its ``provider`` label in the render self-metrics
    collect: Provider
    # The inputs it reads: domains' stored data by domain name, or HEALTH. None: not
    # declared, so it is recomputed at every refresh.
    reads: frozenset[str] | None = None
    # Its values move with the clock (rolling windows, "now - x"): without new data it
    # is still recomputed, once per ``min_refresh``.
    time_driven: bool = True

    @classmethod
    def of(cls, name: str, provider: Provider | ProviderSpec) -> ProviderSpec:
        """A spec for ``provider``; a bare function declares nothing (every refresh)."""
        return provider if isinstance(provider, ProviderSpec) else cls(name, provider)


def cached_help(text: str, ctx: RenderContext, kind: str) -> str:
    """HELP text that says the value is cached and how often it is refreshed."""
    interval = ctx.interval_of(kind)
    every = f"every {interval:g}s" if interval else "on every poll"
    return f"{text} Cached by the exporter; refreshed after each poll of source {kind} ({every})."


def le_label(bound: float) -> str:
    """A histogram bucket bound as its ``le`` label: ``%g``, and ``+Inf`` for infinity."""
    return f"{bound:g}" if bound != float("inf") else "+Inf"


def label_order(labels: Mapping[str, str]) -> tuple[str, ...]:
    """A sort key that orders label sets as ``sorted(labels.items())`` does: their
    sorted names and values, flattened (name, value, name, value...). The same order,
    since each pair is two places of the tuple, and about half the sort's time, since
    equal names compare as strings, not as pairs."""
    return tuple(chain.from_iterable(sorted(labels.items())))


_new_tuple = tuple.__new__


def sample(name: str, labels: dict[str, str], value: float) -> Sample:
    """The sample a family's ``add_metric`` would append, built without copying
    ``labels``: the samples of one series may share one dict (nothing changes a
    sample's labels once made). A provider of a hundred thousand samples spends a
    good part of its render in ``add_metric``'s copies and calls."""
    sample_: Sample = _new_tuple(Sample, (name, labels, value, None, None, None))
    return sample_


def histogram_samples(
    name: str, labels: dict[str, str], buckets: Sequence[tuple[str, float]], sum_value: float
) -> Iterator[Sample]:
    """A histogram series' samples as ``HistogramMetricFamily.add_metric`` makes them
    (each ``le`` bucket, then ``_count`` and ``_sum`` when no bound is negative), its
    ``_count`` and ``_sum`` sharing ``labels``. ``buckets``: (``le`` label, cumulative
    count), sorted, ``+Inf`` last."""
    bucket = name + "_bucket"
    for le, value in buckets:
        yield sample(bucket, {**labels, "le": le}, value)
    if float(buckets[0][0]) >= 0:
        yield sample(name + "_count", labels, buckets[-1][1])
        yield sample(name + "_sum", labels, sum_value)


#: A persisted histogram as :meth:`Store.histograms` reads it: labels, bounds,
#: cumulative counts per bound, sum, count.
StoredHistogram = tuple[dict[str, str], list[float], list[int], float, int]


def stored_histogram_samples(
    name: str,
    rows: Iterable[StoredHistogram],
    series: Callable[[dict[str, str]], dict[str, str] | None],
    les: dict[tuple[float, ...], list[str]] | None = None,
) -> Iterator[Sample]:
    """The samples of the histogram family ``name`` from persisted histograms, each under
    the labels ``series`` makes of its stored ones (None: left out), with a ``+Inf``
    bucket of its count. ``les``: the ``le`` labels of each set of bounds, kept across
    calls when given (a family built a chunk at a time)."""
    les = {} if les is None else les
    for labels, bounds, cumulative, total, n in rows:
        out = series(labels)
        if out is None:
            continue
        key = tuple(bounds)
        names = les.get(key)
        if names is None:
            names = les[key] = [le_label(b) for b in bounds]
        buckets = [(le, float(c)) for le, c in zip(names, cumulative, strict=True)]
        buckets.append(("+Inf", float(n)))
        yield from histogram_samples(name, out, buckets, total)


class SampleStream(Iterable[Sample]):
    """A family's samples made anew each time they are iterated, instead of kept.

    The exposition writer turns each sample into its line as it comes, so a streamed
    sample lives only until its line is written. Kept, the hundred thousand samples of
    a large organisation's family survive long enough for the garbage collector to
    walk them several times per render, and hold their memory until the render ends.
    Iterating is all a writer does with a family's samples.
    """

    __slots__ = ("_make",)

    def __init__(self, make: Callable[[], Iterator[Sample]]) -> None:
        self._make = make

    def __iter__(self) -> Iterator[Sample]:
        return self._make()


def streamed(family: M, make: Callable[[], Iterator[Sample]]) -> M:
    """``family`` with its samples from ``make`` (a generator function), made when the
    family is written (see :class:`SampleStream`); what ``make`` reads must not change
    until then."""
    family.samples = SampleStream(make)  # type: ignore[assignment]  # only iterated
    return family


#: A series of a :class:`Rows` family: its label values (in the family's label
#: order) and its value.
Row = tuple[tuple[str, ...], float]


class Rows(Iterable[Sample]):
    """A family's samples of one name as rows of label values, made anew each time
    they are iterated (as :class:`SampleStream`).

    The exposition writer formats the rows as they are: no sample and no label dict
    is made per series, which is most of what a render of a hundred thousand such
    series costs beyond the lines themselves. Anything else that iterates the family
    gets its samples, as ``add_metric`` would have made them.
    """

    __slots__ = ("_make", "labels", "name")

    def __init__(self, name: str, labels: Sequence[str], make: Callable[[], Iterator[Row]]) -> None:
        self.name = name
        self.labels = tuple(labels)
        self._make = make

    def rows(self) -> Iterator[Row]:
        return self._make()

    def __iter__(self) -> Iterator[Sample]:
        keys, name = self.labels, self.name
        for values, value in self._make():
            yield sample(name, dict(zip(keys, values, strict=True)), value)


def tabular(
    family: M, labels: Sequence[str], make: Callable[[], Iterator[Row]], suffix: str = ""
) -> M:
    """``family`` with its samples as :class:`Rows` of ``labels``, named for the family
    (plus ``suffix``, e.g. ``_total``), from ``make`` (a generator function), made when
    the family is written; what ``make`` reads must not change until then."""
    family.samples = Rows(f"{family.name}{suffix}", labels, make)  # type: ignore[assignment]
    return family

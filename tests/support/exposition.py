"""Reading an exposition back with prometheus_client's own parser, for value assertions."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Exposition:
    """The families of one /metrics body, with lookups by sample name and labels."""

    families: dict[str, Metric]

    @classmethod
    def parse(cls, body: bytes | str) -> Exposition:
        text = body.decode() if isinstance(body, bytes) else body
        return cls({f.name: f for f in text_string_to_metric_families(text)})

    def samples(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        """Every sample called ``name`` whose labels include ``labels``."""
        out = []
        for family in self.families.values():
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    out.append((dict(s.labels), float(s.value)))
        return out

    def value(self, name: str, **labels: str) -> float | None:
        """The one sample matching; None if absent; an error if ambiguous."""
        found = self.samples(name, **labels)
        if len(found) > 1:
            raise AssertionError(f"{len(found)} samples of {name} match {labels}: {found}")
        return found[0][1] if found else None

    def buckets(self, name: str, **labels: str) -> dict[str, float]:
        """A histogram's cumulative bucket counts by ``le``."""
        return {s["le"]: v for s, v in self.samples(f"{name}_bucket", **labels)}

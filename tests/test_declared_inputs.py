"""What the providers and writers declare is what they do, checked against their SQL.

A refresh recomputes a provider only when one of the inputs it declares (``reads``, by
domain) changed, and a poll changes the domains whose writers store the records its
source produces (``produces``). So a provider reading a domain it does not declare
would serve stale values, and one declaring a domain it never reads is recomputed for
nothing. Every statement is captured with ``set_trace_callback`` from a state seeded
with every record type; each table belongs to the domain whose migrations create it.
Tables of the core (counters, histograms, cursors) belong to no domain. A provider may
declare a domain's *view* (``Domain.views``) instead of the domain: then it may read only
the tables of that view among the domain's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exporter.config import Config
from exporter.core.provider import HEALTH
from exporter.core.store import Store, write_records
from exporter.domains import domains, open_store, providers, render_context
from tests.test_query_plans import NOW, aliases, config, records, seeded

_CREATE = re.compile(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", re.IGNORECASE)
_WRITE = re.compile(
    r"^\s*(?:INSERT(?: OR \w+)? INTO|REPLACE INTO|UPDATE|DELETE FROM)\s+(\w+)", re.IGNORECASE
)


def owners() -> dict[str, str]:
    """Table -> the domain whose migrations create it."""
    out: dict[str, str] = {}
    for d in domains():
        for migrations in d.migrations.values():
            for sql in migrations:
                out.update((table, d.name) for table in _CREATE.findall(sql))
    return out


def traced(store: Store, run: Callable[[], Any]) -> list[str]:
    statements: list[str] = []
    connections = list({id(c): c for c in (store._reader, store._conn)}.values())
    for conn in connections:
        conn.set_trace_callback(statements.append)
    try:
        run()
    finally:
        for conn in connections:
            conn.set_trace_callback(None)
    return statements


def full_config(tmp_path: Path) -> Config:
    """The query-plan test's config, with a capability of every kind of evidence (and a
    cost), so that every provider reads all it may read."""
    data = config(tmp_path).model_dump(exclude_unset=True)
    data["capabilities"] = [
        {"name": "gateway", "detect": {"rule": "gateway_traffic"}, "cost_services": ["search"]},
        {"name": "ci", "detect": {"rule": "pipeline_template", "pipeline_names": ["ci"]}},
    ]
    return Config(**data)


def tables_read(tmp_path: Path) -> dict[str, set[str]]:
    """Provider -> the tables its SQL reads in one render of the seeded state."""
    cfg = full_config(tmp_path)
    store = seeded(tmp_path, cfg)
    out: dict[str, set[str]] = {}
    for name, spec in providers().items():
        # A context of its own: the merged catalog is read by whoever asks for it first.
        ctx = render_context(cfg, store, NOW)
        statements = traced(store, lambda: [f.samples for f in spec.collect(ctx)])  # noqa: B023
        out[name] = {
            t
            for sql in statements
            if sql.lstrip().upper().startswith(("SELECT", "WITH"))
            for t in aliases(sql).values()
        }
    store.close()
    return out


def tables_written(tmp_path: Path) -> dict[type, set[str]]:
    """Record type -> the tables its writer writes."""
    store = open_store(str(tmp_path / "writes.db"))
    out: dict[type, set[str]] = {}
    for record in records():
        statements = traced(store, lambda: _write(store, record))  # noqa: B023
        out.setdefault(type(record), set()).update(
            m.group(1) for sql in statements if (m := _WRITE.match(sql))
        )
    store.close()
    return out


def test_each_provider_reads_exactly_the_domains_it_declares(tmp_path: Path) -> None:
    tables = owners()
    writers = {t: d.name for d in domains() for t in d.writers}
    # Domain -> the tables its writers write (another domain's among them, maybe).
    writes: dict[str, set[str]] = {}
    for record_type, written in tables_written(tmp_path).items():
        writes.setdefault(writers[record_type], set()).update(written)
    views = {v: covered for d in domains() for v, covered in d.views.items()}
    for name, read_tables in tables_read(tmp_path).items():
        spec = providers()[name]
        if spec.reads is None:
            continue
        declared_views = {v for v in spec.reads if v in views}
        through_views = {t for v in declared_views for t in views[v]}
        read = {tables[t] for t in read_tables - through_views if t in tables}
        read |= {v for v in declared_views if read_tables & views[v]}
        # A domain whose writers store into another domain's tables this provider reads.
        read |= {
            d for d, written in writes.items()
            if any(tables.get(t, d) != d for t in written & read_tables)
        }  # fmt: skip
        assert read <= spec.reads, f"{name} reads {sorted(read - spec.reads)} undeclared"
        # The owning team of a service only the catalog lists comes from the catalog: every
        # provider may read it, but these seeded services are all in the config.
        needless = spec.reads - read - {name, HEALTH, "catalog"}
        assert needless == set(), f"{name} declares {sorted(needless)} and never reads it"


def test_a_writer_writing_another_domains_tables_is_declared_by_their_readers(
    tmp_path: Path,
) -> None:
    """A poll's commits change the domains whose writers store its records (what
    ``written_by`` attributes them to). A writer may store into another domain's
    tables (on-call incidents among delivery's) only if every provider reading those
    tables declares the writer's domain, so that such a poll recomputes them."""
    tables = owners()
    read = tables_read(tmp_path)
    writers = {t: d.name for d in domains() for t in d.writers}
    written = tables_written(tmp_path)
    assert set(written) == set(writers)
    for record_type, domain_tables in written.items():
        domain = writers[record_type]
        for table in domain_tables:
            if tables.get(table, domain) == domain:
                continue
            for name, spec in providers().items():
                if table in read[name] and spec.reads is not None:
                    assert domain in spec.reads, f"{name} reads {table}, written by {domain}"


def _write(store: Store, record: Any) -> None:
    with store.transaction() as tx:
        write_records(tx, [record])

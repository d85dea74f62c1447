"""Backstage catalog benchmark: a full catalog listing, its store swap, and the adoption render.

Builds a fake Backstage catalog of ``--components`` components owned by
``--teams`` groups, then through the sandbox's Backstage app (in process, over
``httpx.MockTransport``, so the numbers are the exporter's own cost):

* polls it once (cursor pages of ``--page-size``): wall time and requests;
* polls it again after removing 1% of the components (the replace-and-delete path);
* renders the catalog and adoption families (four capabilities) and the exposition.

Peak RSS is the whole process's ``ru_maxrss``.

    python benchmarks/catalog_sync.py --components 10000
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.config import Config
from exporter.core.catalog import merge
from exporter.core.snapshot import Snapshot
from exporter.daemon import Daemon
from exporter.domains import render_context
from exporter.domains.adoption.metrics import collect
from exporter.domains.catalog import store as catalog_store
from exporter.domains.catalog.sandbox import TOKEN, FakeCatalog, _component, _group, backstage_app
from exporter.domains.catalog.store import record_services


def build(components: int, teams: int) -> FakeCatalog:
    entities: list[dict[str, Any]] = [_group(f"team-{t:03d}") for t in range(teams)]
    for i in range(components):
        tags = ("golden-path",) if i % 3 == 0 else ()
        entities.append(_component(f"svc-{i:05d}", f"team-{i % teams:03d}", "", tags, None))
    return FakeCatalog(entities)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--components", type=int, default=10000)
    parser.add_argument("--teams", type=int, default=200)
    parser.add_argument("--page-size", type=int, default=500)
    args = parser.parse_args()

    fake = build(args.components, args.teams)
    state = Path(tempfile.mkdtemp(prefix="catalog-bench-"))
    config = Config(
        state={"path": str(state / "s.db")},
        services=[{"name": "svc-00000", "team": "team-000"}],
        sources={
            "backstage": {
                "base_url": "http://backstage.bench/api/catalog",
                "token": TOKEN,
                "page_size": args.page_size,
            }
        },
        capabilities=[
            {"name": "golden-path", "detect": {"rule": "catalog", "tag": "golden-path"}},
            {"name": "observability", "detect": {"rule": "probe"}},
            {
                "name": "tier",
                "detect": {"rule": "catalog", "annotation": "github.com/project-slug"},
            },
            {"name": "none", "detect": {"rule": "catalog", "tag": "nobody"}},
        ],
    )
    daemon = Daemon(config, transport=backstage_app(fake).transport())
    src = daemon.sources[0]
    rows: list[tuple[str, str]] = []

    async def run() -> None:
        before = fake.requests
        t0 = time.perf_counter()
        assert await daemon.poll(src)
        rows.append(("first poll (incl. one render)", f"{time.perf_counter() - t0:.2f} s"))
        rows.append(("requests", str(fake.requests - before)))
        for i in range(0, args.components, 100):
            fake.remove(f"svc-{i:05d}")
        t0 = time.perf_counter()
        assert await daemon.poll(src)
        rows.append(("poll after removing 1% (incl. render)", f"{time.perf_counter() - t0:.2f} s"))
        await daemon.shutdown()

    asyncio.run(run())
    from exporter.domains import open_store

    store = open_store(str(state / "s.db"))
    ctx = render_context(config, store, time.time())
    t0 = time.perf_counter()
    families = list(collect(ctx))
    render = time.perf_counter() - t0
    t0 = time.perf_counter()
    text = Snapshot.render(families).text
    expo = time.perf_counter() - t0
    rows.append(("catalog + adoption families", f"{render:.2f} s"))
    rows.append(("exposition of those families", f"{expo:.2f} s, {len(text) / 1e6:.1f} MB"))
    rows.append(("services in catalog", str(len(ctx.catalog.services))))
    # Counting registrations after a catalog poll: every service new, then none.
    with store.transaction() as tx:
        tx.execute("DELETE FROM catalog_registrations")
    # The merge with a config that claims repos (500 services, an exact ref and a pattern
    # each): every annotated repo is checked against the config's claims.
    claiming = Config(
        services=[
            {
                "name": f"cfg-{i}",
                "team": "t",
                "ci": [{"github": f"x/c{i}"}, {"github": f"x/c{i}-*"}],
            }
            for i in range(500)
        ]
    )
    stored = catalog_store.entities(store)
    t0 = time.perf_counter()
    merge(claiming.services, stored)
    rows.append(("merge, 500 config services with ci refs", f"{time.perf_counter() - t0:.2f} s"))
    for label in ("record services (all new)", "record services (none new)"):
        t0 = time.perf_counter()
        record_services(config, store, time.time())
        rows.append((label, f"{time.perf_counter() - t0:.2f} s"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(("peak RSS", f"{peak:.0f} MB"))
    store.close()

    width = max(len(k) for k, _ in rows)
    print(f"{'measure'.ljust(width)}  value")
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")


if __name__ == "__main__":
    main()

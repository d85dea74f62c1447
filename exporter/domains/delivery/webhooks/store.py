"""Writing a webhook's deployments without undoing what the store already knows.

A deployment reported by a webhook travels as a :class:`PushedDeployment`, whose
writer decides inside the intake's transaction (so two deliveries of one deployment
at once cannot both pass the check):

* a deployment the store holds finished is left as it is: the first finish counts, as
  in the poll, which never reads a finished deployment's statuses again; so a
  ``pending`` status delivered after the ``success`` changes nothing, and a finish
  delivered twice (or delivered and polled) is counted once;
* a deployment the store holds keeps its ``created_at`` (a GitLab hook carries only the
  time of its status change);
* the rest goes through the delivery store's own writer, which counts a deployment when
  it is first seen finished.

Pipeline runs need no such care: the run writer inserts a finished run once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from exporter.core.store import Store, Tx, Writer
from exporter.domains.delivery.records import Deployment
from exporter.domains.delivery.store import FINISHED, write_deployments


@dataclass(frozen=True, slots=True)
class PushedDeployment:
    """A deployment as a webhook reports it (see the module doc)."""

    deployment: Deployment


def write_pushed_deployments(tx: Tx, pushed: Sequence[PushedDeployment]) -> None:
    for item in pushed:
        dep = item.deployment
        row = tx.execute(
            "SELECT status, created_at FROM deployments WHERE key = ?", (dep.key,)
        ).fetchone()
        if row is not None and row[0] in FINISHED:
            continue
        if row is not None:
            dep = dataclasses.replace(dep, created_at=float(row[1]))
        write_deployments(tx, [dep])  # one at a time: the next one sees it


WRITERS: dict[type, Writer] = {PushedDeployment: write_pushed_deployments}


def stored_deployments(store: Store, keys: Sequence[str]) -> list[Deployment]:
    """The stored deployments of ``keys`` (those stored), as records: for a poll that
    meets deployments a webhook finished before it, and still has their commits to read."""
    out: list[Deployment] = []
    for start in range(0, len(keys), 500):  # SQLite's bound on parameters, with room
        chunk = keys[start : start + 500]
        rows = store.query(
            "SELECT key, source, service, environment, production, sha, status, created_at, "
            f"finished_at FROM deployments WHERE key IN ({','.join('?' * len(chunk))})",
            chunk,
        )
        for r in rows:
            out.append(
                Deployment(
                    source=str(r[1]),
                    service=str(r[2]),
                    environment=str(r[3]),
                    production=bool(r[4]),
                    deploy_id=str(r[0])[len(str(r[1])) + 1 :],
                    sha=str(r[5]),
                    status=str(r[6]),
                    created_at=float(r[7]),
                    finished_at=None if r[8] is None else float(r[8]),
                )
            )
    return out

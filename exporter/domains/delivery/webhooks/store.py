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

from exporter.core.store import Tx, Writer
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

"""Leases: which replica polls which source, when several share one PostgreSQL state.

A lease is a row of ``leases`` (source, holder, token, expires_at): its holder alone polls
the source until ``expires_at``, two thirds of ``lease_ttl`` after its last renewal, and
renews it every third of ``lease_ttl``. A replica that dies (``kill -9``, a lost node, a
network cut from the database) stops renewing; its leases expire within two thirds of the
TTL and the others, looking every third, take them over within the TTL. A holder that
renews late, when no one took its expired lease, keeps it with the same token. Times are the database server's clock (``clock_timestamp()``), the one
clock every replica shares, so a replica's skewed clock cannot extend its leases.

Every poll's commit is fenced (:func:`fenced`): the transaction ends by reading its lease
row ``FOR SHARE``, under the token it was started with; if the lease expired or moved
(another replica took it, or this one lost it and took it again) the transaction rolls
back with :class:`LeaseLost`, so a poll that lost its lease mid-way commits nothing more.
The share lock holds a takeover back until that commit is done.

Handover: the holder records in its lease row, at each renewal round, when it last started
a poll of the source and that poll's verdict (``polled_at``, ``up``). A replica taking the
lease over learns both (:meth:`Leases.taken`): it reports the verdict as its own until its
first poll (a down source stays down through the move), and polls when the previous
holder's next poll was due (at once if that has passed), not at its own next run.

Spread: each replica records itself in ``replicas`` (with the same expiry) and holds at
most ``ceil(sources / live replicas)`` leases, taking free ones in an order of its own
(rendezvous hashing, so replicas starting together reach for different sources) and
handing back extras when more replicas join. With 3 replicas and 9 sources, each ends
with 3.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from exporter.core.backend import PostgresTarget
from exporter.core.errors import StateError

MIGRATIONS = (
    """
    CREATE TABLE leases (
        source TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        token INTEGER NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE TABLE replicas (
        replica TEXT PRIMARY KEY,
        seen_until REAL NOT NULL
    );
    """,
    """
    ALTER TABLE leases ADD COLUMN polled_at REAL;
    ALTER TABLE leases ADD COLUMN up INTEGER;
    """,
)

_NOW = "SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8"
_log = logging.getLogger("exporter.lease")


class LeaseLost(StateError):
    """The poll's lease expired or moved to another replica before its commit (reason
    ``state``, as any write the state refused)."""


@dataclass(frozen=True)
class Fence:
    """What a poll's commits must still hold: ``source``'s lease, by ``holder``, at ``token``."""

    source: str
    holder: str
    token: int


@dataclass(frozen=True)
class Polled:
    """A source's last poll as its holder knows it: when it started (the daemon's clock)
    and its verdict (None while the first poll runs)."""

    at: float
    up: bool | None


# The last poll of each source this replica polled (see :class:`Polled`).
PolledFn = Callable[[], Mapping[str, Polled]]

_FENCE: ContextVar[Fence | None] = ContextVar("lease_fence", default=None)


def current_fence() -> Fence | None:
    """The fence of the poll this code runs in (follows it into worker threads)."""
    return _FENCE.get()


def fence_check(fence: Fence) -> tuple[str, tuple[Any, ...]]:
    """The read that checks ``fence`` (a row while the lease is still its and unexpired),
    share-locking the lease's row until the commit: from then on no replica can take the
    lease (its takeover waits for the lock), so the check may come before the
    transaction's last writes."""
    return (
        "SELECT 1 FROM leases WHERE source = ? AND holder = ? AND token = ? "
        "AND expires_at > EXTRACT(EPOCH FROM clock_timestamp()) FOR SHARE",
        (fence.source, fence.holder, fence.token),
    )


def fence_held(rows: Sequence[Any], fence: Fence) -> None:
    """Raise :class:`LeaseLost` unless :func:`fence_check` found ``rows``."""
    if not rows:
        raise LeaseLost(
            f"lease of {fence.source} lost before the commit (expired or taken over): "
            "nothing of this transaction is kept"
        )


def check_fence(tx: Any, fence: Fence) -> None:
    """At the end of a write transaction: raise :class:`LeaseLost` unless the lease is still
    ``fence``'s and unexpired; the row stays share-locked until the commit."""
    fence_held(tx.execute(*fence_check(fence)).fetchall(), fence)


def _rank(replica: str, source: str) -> str:
    return hashlib.sha256(f"{replica}\0{source}".encode()).hexdigest()


class Leases:
    """This replica's leases: renewed in rounds (:meth:`renew`), asked with :meth:`held`.

    It has a connection of its own, so a renewal never waits behind a poll's commit.
    """

    def __init__(
        self,
        target: PostgresTarget,
        replica: str,
        sources: Sequence[str],
        ttl: float,
        *,
        monotonic: Any = time.monotonic,
    ) -> None:
        from exporter.core import backend_postgres as pg

        if ttl <= 0:
            raise ValueError("lease_ttl must be positive")
        self.replica = replica
        self.sources = tuple(sources)
        self.ttl = ttl
        # A lease lasts two thirds of the TTL past each renewal (one missed renewal is
        # survived), and every replica looks for expired ones every third: so a dead
        # holder's lease is taken within the TTL.
        self.hold = ttl * 2 / 3
        self._monotonic = monotonic
        self._conn = pg.PgConnection(target, lock_timeout=max(1.0, ttl / 6))
        self._lock = threading.Lock()  # the connection: one round at a time
        self._view = threading.Lock()  # what is held, as polls ask it (never waits on I/O)
        # source -> (token, local monotonic time until which it is surely still ours)
        self._held: dict[str, tuple[int, float]] = {}
        # Held leases over the fair share that a running poll keeps: no new poll starts.
        self._draining: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Whether the last round reached the database (so what it says of peers is known).
        self.reached = False
        # What this replica last wrote of each held source's poll, and the leases taken
        # over since :meth:`taken` was last asked (the previous holder's last poll, if any).
        self._written: dict[str, Polled] = {}
        self._taken: dict[str, Polled | None] = {}

    def _begin(self) -> None:
        self._conn.execute("BEGIN")

    def renew(
        self, busy: Callable[[], Iterable[str]] = tuple, polled: PolledFn = dict
    ) -> frozenset[str]:
        """One round: renew what is held (recording ``polled()`` of it), hand back extras
        (not ``busy()`` ones: a poll is running), take free or expired leases up to the
        fair share. Returns what is held.

        A failure (the database unreachable) leaves the local view to run out on its own:
        a lease is believed held only until its last renewal plus the TTL."""
        started = self._monotonic()
        try:
            with self._lock:
                self._begin()
                try:
                    held, written, taken = self._round(busy, polled())
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
        except Exception as exc:
            from exporter.core.errors import state_failure

            if not state_failure(exc):
                raise
            self.reached = False
            _log.warning("leases not renewed (%s); held ones run out on their own", exc)
            return self.held_now()
        # Our expiry is the server's now (at or after ``started``) plus the hold.
        until = started + self.hold
        with self._view:
            self._held = {s: (token, until) for s, token in held.items()}
            # What a taken lease's row holds is the previous holder's, inherited as is.
            handed = {s: p for s, p in taken.items() if p is not None}
            self._written = {
                s: p for s, p in {**self._written, **written, **handed}.items() if s in held
            }
            self._taken.update(taken)
            self.reached = True
        return frozenset(held)

    def taken(self) -> dict[str, Polled | None]:
        """The leases taken over since last asked, each with its previous holder's last
        poll (None: no replica has polled the source)."""
        with self._view:
            taken, self._taken = self._taken, {}
        return taken

    def _round(
        self, busy: Callable[[], Iterable[str]], polled: Mapping[str, Polled]
    ) -> tuple[dict[str, int], dict[str, Polled], dict[str, Polled | None]]:
        now = float(self._conn.execute(_NOW).fetchone()[0])
        until = now + self.hold
        self._conn.execute(
            "INSERT INTO replicas (replica, seen_until) VALUES (?, ?) ON CONFLICT (replica) "
            "DO UPDATE SET seen_until = excluded.seen_until",
            (self.replica, until),
        )
        live = int(
            self._conn.execute(
                "SELECT COUNT(*) FROM replicas WHERE seen_until > ?", (now,)
            ).fetchone()[0]
        )
        share = math.ceil(len(self.sources) / max(1, live))
        # Ours still, expired or not: a renewal that came late (this process starved of
        # CPU past the expiry) keeps the lease and its token while no one took it, so a
        # poll running under it still commits; a lease another replica took is not ours.
        held = {
            str(r[0]): int(r[1])
            for r in self._conn.execute(
                "UPDATE leases SET expires_at = ? WHERE holder = ? RETURNING source, token",
                (until, self.replica),
            ).fetchall()
            if str(r[0]) in self.sources
        }
        self._hand_back(held, share, live, busy)
        written = self._record(held, polled)
        taken: dict[str, Polled | None] = {}
        for source in sorted(self.sources, key=lambda s: _rank(self.replica, s)):
            if len(held) >= share:
                break
            if source not in held:
                took = self._take(source, now, until)
                if took is not None:
                    held[source], taken[source] = took
        return held, written, taken

    def _record(self, held: Mapping[str, int], polled: Mapping[str, Polled]) -> dict[str, Polled]:
        """Write the last poll of each held source, where it changed since last written."""
        written: dict[str, Polled] = {}
        for source in held:
            last = polled.get(source)
            if last is None or self._written.get(source) == last:
                continue
            self._conn.execute(
                "UPDATE leases SET polled_at = ?, up = ? WHERE source = ? AND holder = ?",
                (last.at, None if last.up is None else int(last.up), source, self.replica),
            )
            written[source] = last
        return written

    def _hand_back(
        self, held: dict[str, int], share: int, live: int, busy: Callable[[], Iterable[str]]
    ) -> None:
        """Hand back the leases over the fair share (removed from ``held``). One a poll is
        running under drains instead: no new poll starts under it, and a later round hands
        it back once that poll is done. (Skipping busy ones outright kept every lease on a
        replica whose polls were always running.)"""
        excess = len(held) - share
        draining: set[str] = set()
        for source in sorted(held, key=lambda s: _rank(self.replica, s), reverse=True):
            if excess <= 0:
                break
            excess -= 1
            with self._view:
                # Asked now, and no longer ours from now on, before the row goes: a poll
                # about to start either shows as busy here or finds the lease gone.
                if source in set(busy()):
                    draining.add(source)
                    self._draining.add(source)
                    continue
                self._held.pop(source, None)
            self._conn.execute(
                "DELETE FROM leases WHERE source = ? AND holder = ?", (source, self.replica)
            )
            del held[source]
            _log.info("lease of %s handed back (%d replicas share the sources)", source, live)
        with self._view:
            self._draining = draining

    def _take(self, source: str, now: float, until: float) -> tuple[int, Polled | None] | None:
        """Take ``source``'s lease if it is free or expired: its token, and the previous
        holder's last poll (the row keeps it: the upsert leaves those columns as they are)."""
        row = self._conn.execute(
            "INSERT INTO leases (source, holder, token, expires_at) VALUES (?, ?, 1, ?) "
            "ON CONFLICT (source) DO UPDATE SET holder = excluded.holder, "
            "token = leases.token + 1, expires_at = excluded.expires_at "
            "WHERE leases.expires_at <= ? RETURNING token, polled_at, up",
            (source, self.replica, until, now),
        ).fetchone()
        if row is None:
            return None
        _log.info("lease of %s taken (token %d)", source, int(row[0]))
        token, polled_at, up = row
        if polled_at is None:
            return int(token), None
        return int(token), Polled(float(polled_at), None if up is None else bool(up))

    def start(
        self,
        busy: Callable[[], Iterable[str]],
        changed: Callable[[frozenset[str]], None],
        polled: PolledFn = dict,
    ) -> None:
        """Renew every third of the TTL in a thread of its own: a loaded event loop or a
        busy worker pool (renders, commits) never delays a renewal past the expiry."""

        def loop() -> None:
            while not self._stop.wait(self.ttl / 3):
                try:
                    changed(self.renew(busy, polled))
                except Exception:
                    _log.exception("lease renewal failed")

        self._thread = threading.Thread(target=loop, name="lease renewal", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl)

    def held(self, source: str) -> bool:
        """True while this replica surely holds ``source``'s lease (by its last renewal)."""
        with self._view:
            entry = None if source in self._draining else self._held.get(source)
        return entry is not None and self._monotonic() < entry[1]

    def held_now(self) -> frozenset[str]:
        """The leases this replica polls under now (draining ones are not among them)."""
        now = self._monotonic()
        with self._view:
            return frozenset(
                s for s, (_, until) in self._held.items() if now < until and s not in self._draining
            )

    @contextmanager
    def fenced(self, source: str) -> Iterator[None]:
        """Around a poll: its commits keep only while the lease it started under holds."""
        with self._view:
            entry = self._held.get(source)
        token = entry[0] if entry is not None else -1
        reset = _FENCE.set(Fence(source, self.replica, token))
        try:
            yield
        finally:
            _FENCE.reset(reset)

    def release(self) -> None:
        """Hand every lease back (a clean shutdown): the others take over at once."""
        try:
            with self._lock:
                self._conn.execute("DELETE FROM leases WHERE holder = ?", (self.replica,))
                self._conn.execute("DELETE FROM replicas WHERE replica = ?", (self.replica,))
            with self._view:
                self._held = {}
        except Exception as exc:
            _log.warning("leases not handed back (%s); they expire on their own", exc)

    def close(self) -> None:
        self._conn.close()

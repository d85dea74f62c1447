"""The landing page (``/``): the current week's review, rendered with the snapshot.

The daemon renders it after a refresh, from the same committed state and live
source health as the metrics, in a thread of its own, and puts the bytes in the
snapshot; the server serves them: a request never computes or calls out. A
review takes longer than a metrics render, so it is redone at most once per
``metrics.min_refresh``; if it fails, the previous page stays (logged), as a
failing provider keeps its previous families.
"""

from __future__ import annotations

import logging

from exporter.core.errors import state_failure
from exporter.core.provider import RenderContext
from exporter.core.snapshot import NO_PAGE, Page
from exporter.review.build import build_review
from exporter.review.render import html

log = logging.getLogger("exporter.review")


class LandingPage:
    """The last rendered landing page and when it was rendered (the daemon's clock)."""

    def __init__(self) -> None:
        self.served: Page = NO_PAGE
        self.at: float | None = None
        # The last rendering found the state unreadable (logged once, as providers do).
        self.unreadable = False

    def due(self, now: float, min_refresh: float) -> bool:
        # A clock set back (a test, a corrected host clock) also makes it due.
        return self.at is None or not 0 <= now - self.at < min_refresh

    def render(self, ctx: RenderContext) -> Page:
        """The page at ``ctx.now`` (with its gzip copy, made here, once per rendering):
        rendered anew when due, else the last one."""
        if not self.due(ctx.now, ctx.min_refresh):
            return self.served
        try:
            self.served = Page.of(html(build_review(ctx), landing=True).encode("utf-8"))
        except Exception as exc:
            self._failed(exc)
        else:
            if self.unreadable:
                self.unreadable = False
                log.info("the review page rendered again from the state")
        self.at = ctx.now
        return self.served

    def _failed(self, exc: Exception) -> None:
        """A bug is logged with its traceback each time; the state unreadable (the
        database down, a disk error) once when it starts, not at every rendering."""
        if not state_failure(exc):
            log.exception("the review page failed to render; serving the previous one")
            return
        if not self.unreadable:
            reason = " ".join(str(exc).split())[:300]
            log.warning(
                "the review page: state unreadable (%s); serving the previous one until "
                "it is readable again",
                reason,
            )
        self.unreadable = True

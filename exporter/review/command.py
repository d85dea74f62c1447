"""``platform-kpi-exporter report``: the review of one week from the stored history.

It opens the state database, reads what is committed, and polls nothing, so the
same store, week and instant always print the same review. Without ``--week``
the review is of the week holding the instant (``--as-of``, default now), up to
that instant; with ``--week`` of that whole week as the history holds it at the
instant (a week not over yet ends at the instant).
"""

from __future__ import annotations

from exporter.core.clock import FixedClock
from exporter.core.settings import ConfigBase
from exporter.domains import open_store, render_context
from exporter.review.build import build_review
from exporter.review.model import Review
from exporter.review.render import render
from exporter.review.weeks import IsoWeek


def review_of(config: ConfigBase, at: float, week: IsoWeek | None = None) -> Review:
    """The review of ``week`` (default: the week holding ``at``) as of ``at``."""
    store = open_store(
        config.state.location(), FixedClock(at), busy_timeout=config.state.busy_timeout
    )
    try:
        return build_review(render_context(config, store, at), week)
    finally:
        store.close()


def report_text(config: ConfigBase, at: float, week: IsoWeek | None, fmt: str) -> str:
    """The review rendered in ``fmt`` (html, markdown or json)."""
    return render(review_of(config, at, week), fmt)

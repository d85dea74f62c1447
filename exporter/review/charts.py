"""Static SVG sparklines for the review's 12-week trends: no script, no font, no fetch.

A trend is a short series with gaps (weeks without data). Each run of weeks with
data is one polyline; a lone week is a dot; this week is a larger dot. The SVG
carries a ``<title>`` (its text escaped) so a screen reader and a tooltip say
what it shows. See docs/decisions.md for why this is not a charting library.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH = 120.0
HEIGHT = 32.0
PAD = 3.0


def _points(values: Sequence[float | None]) -> list[tuple[float, float] | None]:
    known = [v for v in values if v is not None]
    if not known:
        return [None] * len(values)
    lo, hi = min(known), max(known)
    span = hi - lo or 1.0
    step = (WIDTH - 2 * PAD) / max(len(values) - 1, 1)
    out: list[tuple[float, float] | None] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        # A flat series sits in the middle; otherwise the highest value is at the top.
        y = HEIGHT / 2 if hi == lo else PAD + (HEIGHT - 2 * PAD) * (hi - v) / span
        out.append((PAD + i * step, y))
    return out


def _runs(points: list[tuple[float, float] | None]) -> list[list[tuple[float, float]]]:
    runs: list[list[tuple[float, float]]] = [[]]
    for p in points:
        if p is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(p)
    return [r for r in runs if r]


def sparkline(values: Sequence[float | None], title: str) -> str:
    """An inline SVG of ``values`` (oldest first), titled ``title``."""
    points = _points(values)
    parts = [
        f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" width="{WIDTH:g}" '
        f'height="{HEIGHT:g}" viewBox="0 0 {WIDTH:g} {HEIGHT:g}" role="img">'
        f"<title>{escape(title)}</title>"
    ]
    for run in _runs(points):
        if len(run) == 1:
            parts.append(f'<circle cx="{run[0][0]:.1f}" cy="{run[0][1]:.1f}" r="1.5"/>')
        else:
            xy = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
            parts.append(f'<polyline fill="none" stroke-width="1.5" points="{xy}"/>')
    last = points[-1] if points else None
    if last is not None:
        parts.append(f'<circle class="now" cx="{last[0]:.1f}" cy="{last[1]:.1f}" r="2.5"/>')
    if all(p is None for p in points):
        parts.append(
            f'<text x="{WIDTH / 2:g}" y="{HEIGHT / 2 + 4:g}" text-anchor="middle">no data</text>'
        )
    parts.append("</svg>")
    return "".join(parts)

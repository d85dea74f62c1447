"""How the review writes its numbers: one function per unit, shared by html and markdown,
so both show the same text for the same number. None is "no data", never 0."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

NO_DATA = "no data"
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def money(value: float, currency: str | None) -> str:
    magnitude = abs(value)
    if magnitude >= 1 or magnitude == 0:
        text = f"{value:,.2f}"
    else:
        # Three significant digits for small amounts (a cost per transaction).
        decimals = max(2, 2 - math.floor(math.log10(magnitude)))
        text = f"{value:.{decimals}f}"
    return f"{text} {currency}" if currency else text


def number(value: float | None, unit: str, currency: str | None = None) -> str:
    """``value`` in ``unit``: ratio, seconds, money, count or per_day."""
    if value is None:
        return NO_DATA
    if unit == "ratio":
        return f"{value * 100:.2f} %"
    if unit == "seconds":
        return duration(value)
    if unit == "money":
        return money(value, currency)
    if unit == "per_day":
        return f"{value:.2f}/day"
    return f"{value:,.0f}"


def change(value: float | None, unit: str, currency: str | None = None) -> str:
    """A week-on-week change, signed: ratios in percentage points."""
    if value is None:
        return NO_DATA
    sign = "+" if value >= 0 else "\u2212"
    magnitude = abs(value)
    if unit == "ratio":
        return f"{sign}{magnitude * 100:.2f} pp"
    return sign + number(magnitude, unit, currency)


def instant(t: float | None) -> str:
    if t is None:
        return NO_DATA
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def md_escape(value: object) -> str:
    """Text safe in a markdown table cell: markdown punctuation escaped, HTML written as
    entities, one line."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = " ".join(text.splitlines())
    return _MD_SPECIAL.sub(r"\\\1", text)


_BLOCKS = "\u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588"


def blocks(values: list[float | None]) -> str:
    """A text sparkline (one block per week, a space for a week without data)."""
    known = [v for v in values if v is not None]
    if not known:
        return NO_DATA
    lo, hi = min(known), max(known)
    out = []
    for v in values:
        if v is None:
            out.append("\u00b7")
        else:
            level = 3 if hi == lo else round((v - lo) / (hi - lo) * (len(_BLOCKS) - 1))
            out.append(_BLOCKS[level])
    return "".join(out)

"""The review in its three formats: html (one self-contained file), markdown and json.

Templates are Jinja2 with autoescaping on for html, so every name from upstream
(services, teams, incidents, sources, capabilities) is text, never markup; the
markdown environment passes every value through :func:`~formats.md_escape`.
Charts are inline SVG from :mod:`exporter.review.charts`.
"""

from __future__ import annotations

from functools import cache

import jinja2
from markupsafe import Markup

from exporter.review import formats
from exporter.review.charts import sparkline
from exporter.review.model import Review, as_json

FORMATS = ("html", "markdown", "json")


def _filters(env: jinja2.Environment) -> None:
    env.filters["num"] = formats.number
    env.filters["change"] = formats.change
    env.filters["instant"] = formats.instant
    env.filters["blocks"] = formats.blocks
    env.globals["NO_DATA"] = formats.NO_DATA


def _spark(values: list[float | None], title: str) -> Markup:
    # sparkline() escapes the only text it writes (the title); its markup is its own.
    return Markup(sparkline(values, title))


@cache
def _html_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("exporter.review", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    _filters(env)
    env.globals["spark"] = _spark
    return env


@cache
def _markdown_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("exporter.review", "templates"),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=formats.md_escape,
        keep_trailing_newline=True,
    )
    _filters(env)
    return env


def html(review: Review, *, landing: bool = False) -> str:
    """The review as one HTML file; ``landing`` adds the daemon's links (to /metrics)."""
    return _html_env().get_template("review.html.j2").render(r=review, landing=landing)


def markdown(review: Review) -> str:
    return _markdown_env().get_template("review.md.j2").render(r=review)


def render(review: Review, fmt: str) -> str:
    """The review in ``fmt``, one of :data:`FORMATS`."""
    if fmt == "html":
        return html(review)
    if fmt == "markdown":
        return markdown(review)
    if fmt == "json":
        return as_json(review)
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")

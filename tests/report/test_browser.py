"""The review in a real browser: Debian's headless Chromium over the DevTools protocol.

One browser serves the module. It opens the html report of the seeded history (a
file) and the landing page of a running demo, each at 1280x800 and 390x844: it
takes screenshots, checks from the DOM that the sections and values are there and
that no element sticks out of the viewport sideways, prints to PDF on A4 and
Letter (counting pages), and checks that the console stayed clean and that no
request left the page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from exporter.review import formats
from exporter.review.command import review_of
from exporter.review.render import html
from exporter.review.weeks import IsoWeek
from tests.report import seed
from tests.support.browser import Browser, Page, chromium_binary, pdf_pages
from tests.support.daemon import DemoProcess
from tests.support.net import http_get, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(chromium_binary() is None, reason="chromium is not installed"),
]

SIZES = ((1280, 800), (390, 844))
A4 = (8.27, 11.69)
LETTER = (8.5, 11.0)
SECTIONS = ["headline", "teams", "services", "changes", "health"]

# Elements whose right edge lies past the viewport, and the page's own width.
OVERFLOW_JS = """(() => {
  const w = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > w + 0.5)
    .map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className);
  return {width: w, scroll: document.documentElement.scrollWidth, wide: wide.slice(0, 5)};
})()"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    binary = chromium_binary()
    assert binary is not None
    b = Browser(binary)
    yield b
    b.close()


@pytest.fixture(scope="module")
def report_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The seeded week's html report as a file, and its headline values as written."""
    d = tmp_path_factory.mktemp("browser")
    review = review_of(seed.seeded(d), seed.AS_OF, IsoWeek.parse(seed.WEEK))
    path = d / "review.html"
    path.write_text(html(review), encoding="utf-8")
    uptime = formats.number(review.headlines[0].value.value, "ratio")
    return path, uptime


def _no_overflow(page: Page) -> None:
    found = page.js(OVERFLOW_JS)
    assert found["scroll"] <= found["width"], found
    assert found["wide"] == [], found


def _check_clean(page: Page, allowed: Callable[[str], bool]) -> None:
    assert page.errors() == []
    assert [u for u in page.requests() if not allowed(u)] == []


class TestTheReportFile:
    @pytest.mark.parametrize(("width", "height"), SIZES)
    def test_renders_every_section_within_the_viewport(
        self,
        browser: Browser,
        report_file: tuple[Path, str],
        tmp_path: Path,
        width: int,
        height: int,
    ) -> None:
        path, uptime = report_file
        with browser.page() as page:
            page.viewport(width, height)
            page.open(path.as_uri())
            png = page.screenshot(tmp_path / f"review-{width}x{height}.png")
            assert png.startswith(b"\x89PNG") and len(png) > 10_000
            assert page.js("[...document.querySelectorAll('section')].map(s => s.id)") == SECTIONS
            kpis = page.js(
                "[...document.querySelectorAll('.kpi')].map(k => [k.dataset.kpi, "
                "k.querySelector('.value').textContent])"
            )
            assert kpis[0] == ["uptime", uptime] and uptime == "92.86 %"
            assert [k for k, _ in kpis] == [
                "uptime",
                "p95_latency",
                "cost_per_transaction",
                "adoption",
                "time_to_production",
            ]
            assert page.js("document.querySelectorAll('svg.spark').length") == 5
            # The hostile service is a row's text, and no script or image came of it.
            names = page.js(
                "[...document.querySelectorAll('#services th[scope=row]')].map(t => t.textContent)"
            )
            assert seed.HOSTILE in names
            assert page.js("document.querySelectorAll('script, img').length") == 0
            _no_overflow(page)
            _check_clean(page, lambda u: u == path.as_uri())

    def test_prints_to_a4_and_letter(self, browser: Browser, report_file: tuple[Path, str]) -> None:
        path, _ = report_file
        with browser.page() as page:
            page.open(path.as_uri())
            a4, letter = page.pdf(*A4), page.pdf(*LETTER)
            assert a4.startswith(b"%PDF") and letter.startswith(b"%PDF")
            # Landscape (the page CSS): the headline and teams, then services, what
            # changed and data health.
            assert (pdf_pages(a4), pdf_pages(letter)) == (3, 3)
            _check_clean(page, lambda u: u == path.as_uri())


class TestTheLandingPage:
    def test_a_running_demo_serves_the_review_beside_metrics(
        self, browser: Browser, demo_process: Callable[..., DemoProcess], tmp_path: Path
    ) -> None:
        demo = demo_process()
        url = demo.url + "/"

        def reviewed() -> bool:
            status, _, body = http_get(url)
            return status == 200 and b"Platform review" in body and b"no data" in body

        # The first page comes after the demo's first polls (backfills) and a refresh: on a
        # loaded 2-core machine that took up to a minute, so the bound leaves room.
        wait_until(reviewed, timeout=180, what="the review on /")
        for width, height in SIZES:
            with browser.page() as page:
                page.viewport(width, height)
                page.open(url)
                page.screenshot(tmp_path / f"landing-{width}x{height}.png")
                assert page.js("document.querySelector('nav a').getAttribute('href')") == "/metrics"
                assert (
                    page.js("[...document.querySelectorAll('section')].map(s => s.id)") == SECTIONS
                )
                services = page.js(
                    "[...document.querySelectorAll('#services th[scope=row]')].map(t => t.textContent)"
                )
                assert {"checkout", "search", "accounts"} <= set(services)
                sources = page.js(
                    "[...document.querySelectorAll('#freshness th[scope=row]')].map(t => t.textContent)"
                )
                assert "probe" in sources
                _no_overflow(page)
                _check_clean(page, lambda u: u == url)

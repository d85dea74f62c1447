"""Kong answers that are valid but hostile: nothing is double counted, nothing is ``internal``.

An empty or partial exposition (Kong's documented ``/metrics`` of the Prometheus
plugin, https://docs.konghq.com/hub/kong-inc/prometheus/, lists only series that
have been observed) must not reset what the next poll counts; a sample that cannot
be a cumulative count (``+Inf``, ``NaN``, ``1e300``, negative) is rejected alone,
the poll reports ``malformed`` and the other samples are counted; Admin API answers
with wrong-typed fields or an endless ``next`` chain stop at a bound as ``malformed``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.core.sandbox.app import App, Request, Response
from exporter.daemon import Daemon
from exporter.domains.traffic.sources import kong as kong_source
from tests.domains.traffic.test_kong import (
    CK,
    KONG3_BASELINE,
    KONG3_NEXT,
    Scripted,
    by_class,
    make_config,
    run_polls,
)

TRUTH = {
    ("checkout", "2xx"): 60,
    ("checkout", "4xx"): 5,
    ("checkout", "5xx"): 4,
    ("unmapped", "2xx"): 10,
}
HEADERS_ONLY = (
    "# HELP kong_http_requests_total HTTP status codes\n# TYPE kong_http_requests_total counter\n"
)


def polls(tmp_path: Path, *texts: str) -> tuple[Daemon, list[bool]]:
    kong = Scripted(*texts)
    daemon = Daemon(make_config(tmp_path), transport=kong.app.transport())
    return daemon, run_polls(daemon, len(texts))


class TestEmptyAndPartialExpositions:
    def test_an_empty_exposition_between_two_normal_ones_changes_no_count(
        self, tmp_path: Path
    ) -> None:
        for empty in ("", HEADERS_ONLY):
            daemon, ok = polls(tmp_path / str(len(empty)), KONG3_BASELINE, empty, KONG3_NEXT)
            assert ok == [True, True, True]
            assert by_class(daemon) == TRUTH
            daemon.store.close()

    def test_a_series_missing_from_one_answer_counts_only_its_increase_when_back(
        self, tmp_path: Path
    ) -> None:
        """legacy is 7, then absent, then 17: +10, not +17."""
        partial = "\n".join(line for line in KONG3_BASELINE.splitlines() if "legacy" not in line)
        daemon, ok = polls(tmp_path, KONG3_BASELINE, partial + "\n", KONG3_NEXT)
        assert ok == [True, True, True]
        assert by_class(daemon) == TRUTH
        daemon.store.close()


class TestHostileSamples:
    def test_non_finite_and_out_of_range_samples_are_rejected_one_by_one(
        self, tmp_path: Path
    ) -> None:
        """Each bad value fails its poll as ``malformed``, never ``internal``; the good
        series of the same answer are counted, and the bad one resumes from its last
        good reading."""
        bad_line = f'kong_http_requests_total{{{CK},code="503",source="kong",consumer=""}}'
        good_line = f"{bad_line} 6"
        texts = [KONG3_BASELINE]
        for value in ("+Inf", "NaN", "1e300", "-5"):
            texts.append(KONG3_NEXT.replace(good_line, f"{bad_line} {value}"))
        texts.append(KONG3_NEXT)
        kong = Scripted(*texts)
        daemon = Daemon(make_config(tmp_path), transport=kong.app.transport())
        health = daemon.health["kong"]
        assert run_polls(daemon, 2) == [True, False]
        assert "1 sample(s) rejected" in (health.last_error or "")
        assert "kong_http_requests_total=inf" in (health.last_error or "")
        assert run_polls(daemon, 4) == [False, False, False, True]
        assert health.errors["malformed"] == 4
        assert health.errors["internal"] == 0
        assert by_class(daemon) == TRUTH
        daemon.store.close()

    def test_a_bucket_without_a_bound_is_rejected_not_a_key_error(self, tmp_path: Path) -> None:
        broken = KONG3_NEXT.replace('le="00025.0"', 'le="soon"')
        daemon, ok = polls(tmp_path, KONG3_BASELINE, broken)
        assert ok == [True, False]
        assert daemon.health["kong"].errors["malformed"] == 1
        assert daemon.health["kong"].errors["internal"] == 0
        assert by_class(daemon) == TRUTH
        daemon.store.close()


def admin(pages: dict[str, object]) -> App:
    """A Kong Admin API (https://docs.konghq.com/gateway/api/admin-oss/latest/) whose
    collections answer ``pages[entity]`` (a callable of the request, or a body)."""
    app = App()
    for entity in ("services", "routes", "consumers"):

        def answer(request: Request, entity: str = entity) -> Response:
            body = pages.get(entity, {"data": [], "next": None})
            return Response.json(body(request) if callable(body) else body)

        app.route("GET", f"/{entity}")(answer)
    return app


class TestAdminApi:
    def run(self, tmp_path: Path, app: App) -> Daemon:
        config = make_config(tmp_path, admin_url="http://kong.test:8001")
        daemon = Daemon(config, transport=app.transport())
        src = daemon.sources[0]
        assert src.kind == "kong"
        run_polls(daemon, 1)
        return daemon

    def test_wrong_typed_fields_are_malformed_not_internal(self, tmp_path: Path) -> None:
        app = admin(
            {
                "services": {"data": [{"id": ["x"], "name": {"n": 1}}], "next": None},
                "routes": {"data": [{"service": "s", "name": 5}], "next": 7},
            }
        )
        daemon = self.run(tmp_path, app)
        errors = daemon.health["kong"].errors
        assert (errors["malformed"], errors["internal"]) == (1, 0)
        assert "next is not a string" in (daemon.health["kong"].last_error or "")
        daemon.store.close()

    def test_an_endless_next_chain_stops_at_the_page_bound(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        pages: list[str] = []

        def endless(request: Request) -> object:
            pages.append(request.arg("offset", "") or "")
            return {"data": [{"id": f"s{len(pages)}"}], "next": f"/services?offset={len(pages)}"}

        monkeypatch.setattr(kong_source, "MAX_PAGES", 25)
        daemon = self.run(tmp_path, admin({"services": endless}))
        assert len(pages) == 25
        assert daemon.health["kong"].errors["malformed"] == 1
        assert "stopped after 25 pages and 25 items" in (daemon.health["kong"].last_error or "")
        daemon.store.close()

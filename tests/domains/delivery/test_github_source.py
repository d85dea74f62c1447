"""The GitHub source against the simulated GitHub API (httpx.MockTransport).

GitHub behaviour relied on: list endpoints page with ``Link: <...>; rel="next"``
(https://docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api),
a ``304`` to ``If-None-Match`` does not count against the primary rate limit
(https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate),
secondary limits answer ``403``/``429`` with ``Retry-After``
(https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from exporter.core.sandbox.fakes import Fault
from exporter.daemon import Daemon
from exporter.domains import open_store
from exporter.domains.delivery.sandbox import data as delivery_data
from exporter.domains.delivery.sandbox.data import EXPECTED, FakeDeployment, FakeRun
from exporter.domains.delivery.sandbox.github import TOKEN, GitHubFake
from exporter.domains.delivery.sources.github import GitHubSource
from tests.domains.delivery.helpers import MarkerSource, add_hotfix, config, delivery_samples, value
from tests.support.prometheus import promtool_check_metrics

H = 3600.0


def github_config(state: str = ":memory:", **settings: Any) -> Any:
    gh = {
        "token": TOKEN,
        "orgs": [{"name": "acme"}],
        "deploy_workflows": ["Deploy"],
        "requests_per_second": 10_000,
        **settings,
    }
    return config({"github": gh}, state=state)


class Harness:
    """A daemon with the GitHub source (fast retries) and a marker source, over a fake."""

    def __init__(self, tmp_path: Path | None = None, anchor: float | None = None, **settings: Any):
        self.scenario = delivery_data.build(anchor or time.time())
        self.fake = GitHubFake(self.scenario)
        self.state = str(tmp_path / "state.db") if tmp_path else ":memory:"
        self.settings = settings
        self.clock_offset = 0.0
        self.daemon = self.new_daemon()

    def new_daemon(self) -> Daemon:
        cfg = github_config(self.state, **self.settings)
        source = GitHubSource(cfg, cfg.sources.github)  # type: ignore[arg-type]
        source.backoff = 0.01
        source.max_retry_after = 0.5
        self.source = source
        return Daemon(
            cfg,
            transport=self.fake.app.transport(),
            sources=[source, MarkerSource(cfg)],
            store=open_store(self.state),
            clock=lambda: time.time() + self.clock_offset,
        )

    def poll(self) -> bool:
        return asyncio.run(self.daemon.poll(self.source))

    def poll_all(self) -> bool:
        return asyncio.run(self.daemon.poll_all())

    @property
    def text(self) -> bytes:
        return self.daemon.holder.current.text

    @property
    def health(self) -> Any:
        return self.daemon.health["github"]


class TestFirstSync:
    def test_known_values_from_the_scenario(self) -> None:
        h = Harness()
        assert h.poll_all()
        text = h.text
        exp = EXPECTED["checkout"]
        for (env, result), n in exp["deployments"].items():
            assert (
                value(
                    text,
                    "platform_deployments_total",
                    service="checkout",
                    team="payments",
                    environment=env,
                    result=result,
                )
                == n
            )
        assert value(
            text,
            "platform_lead_time_quantile_seconds",
            service="checkout",
            team="payments",
            window="7d",
            quantile="0.5",
        ) == pytest.approx(exp["lead_time"]["0.5"] * H)
        failed, total = exp["change_failure"]  # 3 of 6: one of them linked by a root cause
        assert value(
            text, "platform_change_failure_ratio", service="checkout", team="payments", window="30d"
        ) == pytest.approx(failed / total)
        assert value(
            text,
            "platform_time_to_production_seconds",
            service="recommendations",
            team="discovery",
        ) == pytest.approx(168 * H)
        # payments-api has no deployments: its Deploy workflow runs are.
        assert (
            value(
                text,
                "platform_deployments_total",
                service="payments-api",
                team="payments",
                environment="production",
                result="success",
            )
            == 3
        )

    def test_the_exposition_passes_promtool(self) -> None:
        h = Harness()
        h.poll_all()
        assert promtool_check_metrics(h.text) == ""

    def test_in_progress_runs_and_deployments_are_not_counted(self) -> None:
        h = Harness()
        h.poll()
        assert (
            value(
                h.text,
                "platform_pipeline_runs_total",
                service="checkout",
                team="payments",
                pipeline="CI",
                result="success",
            )
            == 3
        )
        rows = h.daemon.store.query("SELECT COUNT(*) FROM deployments WHERE status = 'pending'")
        assert rows[0][0] == 1

    def test_rate_limit_budget_is_exported(self) -> None:
        h = Harness()
        h.poll()
        remaining = h.health.rate_limit_remaining["core"]
        assert 0 < remaining < 5000
        assert (
            value(
                h.text,
                "platform_exporter_rate_limit_remaining",
                source="github",
                kind="github",
                resource="core",
            )
            == remaining
        )

    def test_repos_not_in_the_catalog_are_skipped(self) -> None:
        h = Harness()
        h.scenario.github["acme/unowned"] = delivery_data.FakeRepo("acme/unowned", 999, "x")
        assert h.poll()
        assert not any("unowned" in path for path, _, _ in h.fake.plan.log if "/repos/" in path)

    def test_org_include_exclude(self) -> None:
        """payments-api is only reached through the org (a pattern): excluding it drops it;
        repos listed explicitly in the catalog are read anyway."""
        h = Harness(orgs=[{"name": "acme", "exclude": ["payments-*"]}])
        h.poll()
        assert not any("payments-api" in p for p, _, _ in h.fake.plan.log)
        assert any("recommendations" in p for p, _, _ in h.fake.plan.log)

    def test_github_enterprise_base_url(self) -> None:
        h = Harness(base_url="https://ghe.example.com/api/v3")
        assert h.poll()
        assert all(path.startswith("/api/v3/") for path, _, _ in h.fake.plan.log)


class TestIncremental:
    def test_second_poll_without_change_is_all_304_and_changes_no_metric(self) -> None:
        """One conditional request per repo and resource (and the org list), all answered 304."""
        h = Harness()
        assert h.poll()
        before = delivery_samples(h.text)
        h.fake.plan.clear()
        assert h.poll()
        log = h.fake.plan.log
        assert {status for _, _, status in log} == {304}
        # 1 org list + 3 repos x (runs, deployments, issues); commits wait for a change.
        assert len(log) == 1 + 3 * 3
        assert delivery_samples(h.text) == before

    def test_a_new_deployment_is_picked_up_and_counted_once(self) -> None:
        h = Harness()
        h.poll()
        repo = h.scenario.github["acme/checkout"]
        sha = repo.commits[-1].sha
        t = time.time() - 60
        repo.deployments.append(
            FakeDeployment(
                777,
                sha,
                "production",
                t - 120,
                [(7771, "in_progress", t - 100), (7772, "success", t)],
            )
        )
        repo.touch()
        h.poll()
        h.poll()
        assert (
            value(
                h.text,
                "platform_deployments_total",
                service="checkout",
                team="payments",
                environment="production",
                result="success",
            )
            == 6
        )

    def test_a_run_of_a_reusable_workflow_records_its_workflow_file_and_the_reusable_one(
        self,
    ) -> None:
        """A finished run that called ``acme/platform-templates/.github/workflows/build.yml@v2``
        leaves two template uses for checkout: its own workflow file and the reusable one,
        both dated when the run finished."""
        h = Harness()
        h.poll()
        repo = h.scenario.github["acme/checkout"]
        t = float(int(time.time()) - 60)  # whole seconds, as the API gives them
        template = "acme/platform-templates/.github/workflows/build.yml@v2"
        repo.runs.append(
            FakeRun(
                9901,
                "Build",
                repo.commits[-1].sha,
                "main",
                "completed",
                "success",
                t - 300,
                t - 290,
                t,
                referenced=(template,),
            )
        )
        repo.touch()
        h.poll()
        rows = h.daemon.store.query(
            "SELECT ref, last_at FROM template_uses WHERE service = 'checkout' "
            "AND ref IN (?, ?) ORDER BY ref",
            (template, ".github/workflows/build.yml"),
        )
        assert [(str(d), float(u)) for d, u in rows] == [
            (".github/workflows/build.yml", t),
            (template, t),
        ]

    def test_a_hotfix_deployed_off_the_default_branch_is_linked_through_compare(self) -> None:
        """h1 (committed 2h ago on a hotfix branch off c6) is deployed 1h ago: it is not in the
        default branch's listing, so compare c6...h1 brings it in; its lead time is 1h."""
        h = Harness()
        h.poll()
        hotfix = add_hotfix(h.scenario.github["acme/checkout"], "hotfix", 888)
        h.fake.plan.clear()
        assert h.poll()
        assert any("/compare/" in p for p, _, _ in h.fake.plan.log)
        leads = {r[0]: r[1] for r in h.daemon.store.query("SELECT sha, committed_at FROM commits")}
        assert hotfix.sha in leads
        assert (
            value(
                h.text,
                "platform_lead_time_samples",
                service="checkout",
                team="payments",
                window="7d",
            )
            == EXPECTED["checkout"]["lead_time"]["n"] + 1
        )

    def test_a_pending_deployment_is_counted_when_it_finishes(self) -> None:
        h = Harness()
        h.poll()
        repo = h.scenario.github["acme/checkout"]
        pending = next(d for d in repo.deployments if len(d.statuses) == 1)
        pending.statuses.append((99_999, "success", time.time() - 30))
        repo.touch()
        h.poll()
        assert (
            value(
                h.text,
                "platform_deployments_total",
                service="checkout",
                team="payments",
                environment="staging",
                result="success",
            )
            == 2
        )

    def test_restart_resumes_from_persisted_cursors(self, tmp_path: Path) -> None:
        """A new process on the same state makes only conditional requests and counts nothing twice."""
        h = Harness(tmp_path)
        h.poll()
        before = delivery_samples(h.text)
        asyncio.run(h.daemon.shutdown())
        h.fake.plan.clear()
        h.daemon = h.new_daemon()
        assert h.poll()
        assert {status for _, _, status in h.fake.plan.log} == {304}
        assert delivery_samples(h.text) == before


class TestReruns:
    """A re-run is a new ``run_attempt`` of a run: same id, same ``created_at``."""

    @staticmethod
    def rerun(h: Harness, name: str, conclusion: str, hours_ago: float) -> None:
        """Re-run the newest run of workflow ``name`` created at least ``hours_ago`` hours
        ago; the new attempt starts 10 min ago and finishes now with ``conclusion``."""
        repo = h.scenario.github["acme/payments-api"]
        now = time.time()
        run = max(
            (r for r in repo.runs if r.name == name and r.created_at <= now - hours_ago * H),
            key=lambda r: r.created_at,
        )
        run.attempt += 1
        run.conclusion = conclusion
        run.started_at = now - 600
        run.updated_at = now - 30
        repo.touch()

    def deploy_counts(self, h: Harness) -> dict[str, float | None]:
        return {
            result: value(
                h.text,
                "platform_deployments_total",
                service="payments-api",
                team="payments",
                environment="production",
                result=result,
            )
            for result in ("success", "failure")
        }

    def lead_samples(self, h: Harness) -> float | None:
        return value(
            h.text,
            "platform_lead_time_samples",
            service="payments-api",
            team="payments",
            window="30d",
        )

    def test_a_rerun_of_a_failed_deploy_behind_the_cursor_is_a_new_run_and_deployment(
        self,
    ) -> None:
        """payments-api's Deploy of q4 failed 8h ago, before the cursor (the newest run, 6h
        ago). Re-run, it succeeds: one more Deploy run (success 3 -> 4) and one more
        production deployment (success 3 -> 4); the failed attempt stays counted (1), and
        the re-run of the same commit ships nothing new (lead time samples unchanged)."""
        h = Harness()
        assert h.poll()
        assert self.deploy_counts(h) == {"success": 3, "failure": 1}
        leads = self.lead_samples(h)
        self.rerun(h, "Deploy", "success", 7.9)
        assert h.poll()
        runs = {
            result: value(
                h.text,
                "platform_pipeline_runs_total",
                service="payments-api",
                team="payments",
                pipeline="Deploy",
                result=result,
            )
            for result in ("success", "failure")
        }
        assert runs == {"success": 4, "failure": 1}
        assert self.deploy_counts(h) == {"success": 4, "failure": 1}
        assert self.lead_samples(h) == leads
        # The re-run finished now and the 6h deploy is within 1d: 2 a day.
        freq = value(
            h.text,
            "platform_deployment_frequency_per_day",
            service="payments-api",
            team="payments",
            window="1d",
        )
        assert freq == 2.0
        h.fake.plan.clear()
        assert h.poll()  # nothing changed: counted once
        assert self.deploy_counts(h) == {"success": 4, "failure": 1}

    def test_a_rerun_of_a_run_older_than_the_lookback_is_not_read(self) -> None:
        """Only runs created in the last RERUN_LOOKBACK (1 day) are read back: re-running
        the Deploy run of q1 (250h old) goes unseen."""
        h = Harness()
        assert h.poll()
        self.rerun(h, "Deploy", "success", 200)
        assert h.poll()
        assert self.deploy_counts(h) == {"success": 3, "failure": 1}


class TestFaults:
    """Each fault marks only the GitHub source down; the next poll recovers it."""

    @pytest.mark.parametrize(
        "fault",
        [
            Fault("/actions/runs", 429, {"Retry-After": "120"}, b'{"message":"slow down"}'),
            Fault(
                "/deployments",
                403,
                {"Retry-After": "120"},
                b'{"message":"You have exceeded a secondary rate limit."}',
            ),
            # As many failures as one request's attempts: the poll spends them and fails
            # (it sends no more: repos go one after another, retries come from a budget).
            Fault("/commits", 502, times=4),
            Fault("/issues", 200, truncate=True),
            Fault("/actions/runs", 200, delay=2.0),
        ],
        ids=["429", "403-retry-after", "5xx-burst", "truncated-json", "timeout"],
    )
    def test_fault_marks_down_then_recovers(self, fault: Fault) -> None:
        h = Harness(timeout="0.5s")
        assert h.poll_all()
        h.fake.plan.clear()
        # A change upstream, so the next poll reads past the 304s.
        for repo in h.scenario.github.values():
            repo.touch()
        marker_before = delivery_samples(h.text, "accounts")
        h.fake.plan.add(fault)
        assert not h.poll()
        assert h.health.up is False
        assert delivery_samples(h.text, "accounts") == marker_before
        assert h.daemon.health["marker"].up is True
        h.clock_offset = 600.0  # past any Retry-After
        assert h.poll()
        assert h.health.up is True

    def test_page_failing_mid_pagination_commits_nothing_of_that_repo(self) -> None:
        h = Harness()
        import exporter.domains.delivery.sources.github as gh

        old = gh.PER_PAGE
        gh.PER_PAGE = 2
        try:
            h.fake.plan.add(Fault("/repos/acme/checkout/actions/runs", 500, times=10, after=1))
            assert not h.poll()
            runs = h.daemon.store.query(
                "SELECT COUNT(*) FROM pipeline_runs WHERE service = 'checkout'"
            )[0][0]
            assert runs == 0
            assert h.daemon.store.get_cursor("github", "acme/checkout:runs") is None
            h.fake.plan.clear()
            assert h.poll()
            assert (
                value(
                    h.text,
                    "platform_pipeline_runs_total",
                    service="checkout",
                    team="payments",
                    pipeline="CI",
                    result="success",
                )
                == 3
            )
        finally:
            gh.PER_PAGE = old

    def test_bad_token_stops_the_source_without_hammering(self) -> None:
        h = Harness(token="wrong")
        assert not h.poll()
        assert h.health.errors["auth"] == 1
        first = len(h.fake.plan.log)
        assert first <= 2  # the org list, and at most what was already in flight
        assert not h.poll()
        assert len(h.fake.plan.log) == first  # stopped: no further request
        assert "credentials" in (h.health.last_error or "")


class TestGitHubApp:
    def test_installation_token_is_minted_and_used(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        h = Harness(token=None, app={"app_id": 42, "installation_id": 7, "private_key": pem})
        h.fake.app_credentials = (42, 7)
        h.daemon = h.new_daemon()
        assert h.poll()
        assert len(h.fake.installation_tokens) == 1
        assert h.fake.plan.requests[("/app/installations/7/access_tokens", 201)] == 1


def _pem(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return str(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
    )


class TestAppJwt:
    """The app JWT GitHub documents ("Generating a JSON Web Token (JWT) for a GitHub App"):
    RS256, ``iat`` 60 s back against clock drift, ``exp`` at most 10 minutes on, ``iss``
    the app id."""

    NOW = 1_800_000_000.0

    def test_signed_with_the_app_s_key_and_the_documented_claims(self) -> None:
        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa

        from exporter.domains.delivery.sources.github import app_jwt

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = app_jwt(42, _pem(key), self.NOW)
        assert jwt.get_unverified_header(token) == {"alg": "RS256", "typ": "JWT"}
        claims = jwt.decode(
            token,
            key.public_key(),
            algorithms=["RS256"],
            options={"verify_exp": False, "verify_iat": False},
        )
        assert claims == {"iat": 1_799_999_940, "exp": 1_800_000_540, "iss": "42"}
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(
                token, other.public_key(), algorithms=["RS256"], options={"verify_exp": False}
            )

    @pytest.mark.parametrize("kind", ["ec", "garbage"])
    def test_a_key_that_is_not_rsa_is_an_auth_error_that_never_quotes_it(self, kind: str) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        from exporter.core.errors import AuthError
        from exporter.domains.delivery.sources.github import app_jwt

        pem = _pem(ec.generate_private_key(ec.SECP256R1())) if kind == "ec" else "not-a-key-x1"
        with pytest.raises(AuthError) as caught:
            app_jwt(42, pem, self.NOW)
        assert str(caught.value) == "the GitHub App private key is not an RSA private key in PEM"

    def test_without_pyjwt_installed_the_poll_names_the_extra(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import sys

        from exporter.core.errors import MissingExtra, classify
        from exporter.domains.delivery.sources.github import app_jwt

        monkeypatch.setitem(sys.modules, "jwt", None)  # what an install without it does
        with pytest.raises(MissingExtra, match=r"platform-kpi-exporter\[github-app\]") as caught:
            app_jwt(42, "unused", self.NOW)
        assert classify(caught.value) == "config"

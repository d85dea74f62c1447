"""Webhook deliveries from GitHub and GitLab: verified, then parsed into the records the
pollers make of the same objects.

The bodies carry the documented examples' fields and values (see ``webhook_payloads``);
signatures follow https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
(its test vector below) and tokens
https://docs.gitlab.com/user/project/integrations/webhooks/#validate-requests-with-a-secret-token
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

import jsonschema
import pytest

from exporter.config import Config, masked
from exporter.core.webhooks import Malformed, WebhookIntake, verify
from exporter.domains import open_store
from exporter.domains.delivery.records import Deployment, PipelineRun
from exporter.domains.delivery.sources.common import with_repo
from exporter.domains.delivery.sources.github import GitHubSource
from exporter.domains.delivery.store import DEPLOYMENTS_TOTAL, RUNS_TOTAL
from exporter.domains.delivery.webhooks.endpoints import endpoints
from exporter.domains.delivery.webhooks.github import github_event
from exporter.domains.delivery.webhooks.gitlab import gitlab_event, gitlab_time
from exporter.domains.delivery.webhooks.scope import StoreScope
from tests.domains.delivery import webhook_payloads as payloads
from tests.domains.delivery.test_github_contract import _spec, schema_for


def t(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def make_config(gitlab_hook: dict[str, Any] | None = None, **github: Any) -> Config:
    gitlab: dict[str, Any] = {} if gitlab_hook is None else {"webhook": gitlab_hook}
    return Config(
        services=[
            {"name": "hello", "team": "t", "ci": [{"github": "Codertocat/Hello-World"}]},
            {"name": "octo", "team": "t", "ci": [{"github": "octo-org/octo-*"}]},
            {"name": "deployer", "team": "t", "ci": [{"gitlab": "root/test-deployment-webhooks"}]},
            {"name": "gitlab-test", "team": "t", "ci": [{"gitlab": "gitlab-org/gitlab-test"}]},
        ],
        sources={
            "probe": {"enabled": False},
            "github": {"orgs": [{"name": "octo-org"}], **github},
            "gitlab": gitlab,
        },
        state={"path": ":memory:"},
    )


@pytest.fixture
def scope() -> StoreScope:
    config = make_config()
    return StoreScope(config, open_store(":memory:"))


def gh(event: str, body: dict[str, Any], scope: StoreScope) -> Any:
    return github_event(event, payloads.encoded(body), scope)


def github_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class TestSignatures:
    """The endpoints' settings, as the intake verifies them."""

    def hook_auth(self, kind: str, **hook: Any) -> Any:
        config = make_config(webhook=hook) if kind == "github" else make_config(gitlab_hook=hook)
        (endpoint,) = [e for e in endpoints(config) if e.name == kind]
        return endpoint.settings.auth

    def test_githubs_documented_test_vector(self) -> None:
        """The secret and payload of GitHub's page give the signature it lists."""
        auth = self.hook_auth("github", secret="It's a Secret to Everybody")
        expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        assert github_signature("It's a Secret to Everybody", b"Hello, World!") == expected
        assert verify(auth, b"Hello, World!", {"x-hub-signature-256": expected})

    @pytest.mark.parametrize(
        "header",
        [
            None,
            "",
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",  # no prefix
            "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e18",
        ],
    )
    def test_any_other_signature_is_refused(self, header: str | None) -> None:
        auth = self.hook_auth("github", secret="It's a Secret to Everybody")
        headers = {} if header is None else {"x-hub-signature-256": header}
        assert not verify(auth, b"Hello, World!", headers)

    def test_a_signature_over_another_body_or_secret_is_refused(self) -> None:
        auth = self.hook_auth("github", secret="s3cret")
        assert not verify(
            auth, b'{"a": 1}', {"x-hub-signature-256": github_signature("s3cret", b'{"a":1}')}
        )
        assert not verify(
            auth, b'{"a":1}', {"x-hub-signature-256": github_signature("other", b'{"a":1}')}
        )

    def test_gitlab_token_must_equal_the_secret_token(self) -> None:
        auth = self.hook_auth("gitlab", token="glwt-token")
        assert verify(auth, b"{}", {"x-gitlab-token": "glwt-token"})
        for header in ("", "glwt-toke", "glwt-token ", "GLWT-TOKEN"):
            assert not verify(auth, b"{}", {"x-gitlab-token": header})

    def test_the_secrets_are_never_printed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """From the environment, as the README shows; masked in the printed config and in
        the endpoint's settings."""
        monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", "gh-secret-value-42")
        config = make_config(
            gitlab_hook={"token": "gl-token-value-42"},
            webhook={"secret": {"env": "GITHUB_WEBHOOK_SECRET"}},
        )
        shown = json.dumps(masked(config)) + "".join(repr(e.settings) for e in endpoints(config))
        assert "gh-secret-value-42" not in shown and "gl-token-value-42" not in shown
        auth = self.hook_auth("github", secret={"env": "GITHUB_WEBHOOK_SECRET"})
        body = b"{}"
        assert verify(
            auth, body, {"x-hub-signature-256": github_signature("gh-secret-value-42", body)}
        )

    def test_no_webhook_no_endpoint(self) -> None:
        assert endpoints(make_config()) == []
        assert endpoints(make_config(webhook={"secret": "x", "enabled": False})) == []


class TestGitHubDeploymentStatus:
    def test_the_documented_example_is_the_polls_deployment(self, scope: StoreScope) -> None:
        """Deployment 145988746 finished by its ``success`` status, under the key the poll
        of its statuses writes."""
        body = payloads.github_deployment_status()
        event = gh("deployment_status", body, scope)
        assert event.ignored is None
        expected = Deployment(
            source="github",
            service="hello",
            environment="production",
            production=True,
            deploy_id="Codertocat/Hello-World/145988746",
            sha="f95f852bd8fca8fcc58a9a2d6c842781e32a215e",
            status="success",
            created_at=t("2019-05-15T15:20:53Z"),
            finished_at=t("2019-05-15T15:20:55Z"),
            repo="github:Codertocat/Hello-World",
        )
        assert event.records == (expected,)
        source = GitHubSource(make_config(), make_config().sources.github)
        polled = source._deployment_record(
            "Codertocat/Hello-World", "hello", body["deployment"], [body["deployment_status"]]
        )
        # As the poll commits it: stamped with its repo.
        assert with_repo([polled], "github", "Codertocat/Hello-World") == [expected]

    @pytest.mark.parametrize(
        ("state", "status"),
        [
            ("failure", "failure"),
            ("error", "failure"),
            ("in_progress", "pending"),
            ("queued", "pending"),
        ],
    )
    def test_states(self, scope: StoreScope, state: str, status: str) -> None:
        (record,) = gh("deployment_status", payloads.github_deployment_status(state), scope).records
        assert isinstance(record, Deployment) and record.status == status
        assert record.finished_at == (None if status == "pending" else t("2019-05-15T15:20:55Z"))

    def test_inactive_before_finishing_records_nothing(self, scope: StoreScope) -> None:
        event = gh("deployment_status", payloads.github_deployment_status("inactive"), scope)
        assert event.records == () and event.ignored is not None

    def test_the_repo_keeps_the_configs_spelling(self, scope: StoreScope) -> None:
        """GitHub's full name in another case is the same repo, keyed as the poll keys it."""
        body = payloads.github_deployment_status()
        body["repository"]["full_name"] = "codertocat/hello-world"
        (record,) = gh("deployment_status", body, scope).records
        assert isinstance(record, Deployment)
        assert record.key == "github/Codertocat/Hello-World/145988746"

    def test_a_repo_no_source_reads_is_ignored(self, scope: StoreScope) -> None:
        body = payloads.github_deployment_status()
        body["repository"]["full_name"] = "Codertocat/Other"
        event = gh("deployment_status", body, scope)
        assert event.records == () and "Codertocat/Other" in (event.ignored or "")


class TestGitHubWorkflowRun:
    def test_the_documented_example_is_the_polls_run(self, scope: StoreScope) -> None:
        """Run 289782451 of octo-org/octo-repo (read through the org, mapped by the
        ``octo-org/octo-*`` pattern): its empty name falls back to the workflow's path."""
        (record,) = gh("workflow_run", payloads.github_workflow_run(), scope).records
        assert record == PipelineRun(
            source="github",
            service="octo",
            pipeline=".github/workflows/test.yml",
            run_id="octo-org/octo-repo/289782451",
            result="success",
            created_at=t("2020-10-05T16:33:24Z"),
            started_at=None,
            finished_at=t("2020-10-05T16:33:49Z"),
            repo="github:octo-org/octo-repo",
        )

    def test_a_run_not_completed_is_ignored(self, scope: StoreScope) -> None:
        event = gh("workflow_run", payloads.github_workflow_run("requested"), scope)
        assert event.records == () and "queued" in (event.ignored or "")

    def test_a_re_run_is_its_own_attempt(self, scope: StoreScope) -> None:
        body = payloads.github_workflow_run()
        body["workflow_run"].update(run_attempt=2, run_started_at="2020-10-05T16:40:00Z")
        (record,) = gh("workflow_run", body, scope).records
        assert isinstance(record, PipelineRun)
        assert record.key == "github/octo-org/octo-repo/289782451/attempt/2"
        assert record.created_at == t("2020-10-05T16:40:00Z")

    def test_a_deploy_workflow_run_deploys_a_repo_polled_without_deployments(self) -> None:
        """With ``deploy_workflows``, once the poll found the repo without Deployments, a
        completed run of a deploy workflow on the default branch is a production deployment;
        before the first poll (unknown), it is only a run, and the poll adds the deployment."""
        config = make_config(deploy_workflows=["deploy*"])
        store = open_store(":memory:")
        scope = StoreScope(config, store)
        body = payloads.github_workflow_run(name="deploy")
        assert len(gh("workflow_run", body, scope).records) == 1
        with store.transaction() as tx:
            tx.set_cursor("github", "octo-org/octo-repo:deployments", json.dumps({"any": False}))
        _, dep = gh("workflow_run", body, scope).records
        assert isinstance(dep, Deployment)
        assert dep.key == "github/octo-org/octo-repo/run/289782451"
        assert (dep.production, dep.status, dep.sha) == (
            True,
            "success",
            "3484a3fb816e0859fd6e1cea078d76385ff50625",
        )
        with store.transaction() as tx:
            tx.set_cursor("github", "octo-org/octo-repo:deployments", json.dumps({"any": True}))
        assert len(gh("workflow_run", body, scope).records) == 1

    def test_an_org_repo_the_orgs_patterns_exclude_is_ignored(self) -> None:
        config = make_config(orgs=[{"name": "octo-org", "exclude": ["octo-repo"]}])
        event = gh(
            "workflow_run",
            payloads.github_workflow_run(),
            StoreScope(config, open_store(":memory:")),
        )
        assert event.records == () and event.ignored


class TestGitHubBodies:
    @pytest.mark.parametrize(
        "body",
        [b"", b"{", b"[]", b'"x"', b"\xff\xfe"],
        ids=["empty", "truncated", "list", "string", "not-utf8"],
    )
    def test_a_body_that_is_not_a_json_object_is_malformed(
        self, scope: StoreScope, body: bytes
    ) -> None:
        with pytest.raises(Malformed):
            github_event("deployment_status", body, scope)

    @pytest.mark.parametrize(
        ("event", "path"),
        [
            ("deployment_status", ("deployment",)),
            ("deployment_status", ("deployment_status", "state")),
            ("deployment_status", ("deployment", "created_at")),
            ("deployment_status", ("repository", "full_name")),
            ("workflow_run", ("workflow_run", "id")),
            ("workflow_run", ("workflow_run", "updated_at")),
        ],
    )
    def test_a_missing_field_is_malformed(
        self, scope: StoreScope, event: str, path: tuple[str, ...]
    ) -> None:
        body = (
            payloads.github_deployment_status()
            if event == "deployment_status"
            else payloads.github_workflow_run()
        )
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]
        with pytest.raises(Malformed):
            gh(event, body, scope)

    def test_a_mistyped_time_is_malformed(self, scope: StoreScope) -> None:
        body = payloads.github_deployment_status()
        body["deployment"]["created_at"] = 1557933653
        with pytest.raises(Malformed):
            gh("deployment_status", body, scope)

    def test_ping_and_other_events_are_accepted_and_ignored(self, scope: StoreScope) -> None:
        for event in ("ping", "push", ""):
            assert github_event(event, b"not even json", scope).ignored


# The webhook's objects are the REST API's: each field the parser reads is in the REST
# schema, and the documented example's value validates against it.
_REST_FIELDS = [
    (
        "/repos/{owner}/{repo}/deployments",
        ("deployment",),
        ("id", "sha", "environment", "created_at"),
    ),
    (
        "/repos/{owner}/{repo}/deployments/{deployment_id}/statuses",
        ("deployment_status",),
        ("state", "created_at"),
    ),
    (
        "/repos/{owner}/{repo}/actions/runs",
        ("workflow_run",),
        (
            "id",
            "name",
            "status",
            "conclusion",
            "created_at",
            "updated_at",
            "head_branch",
            "head_sha",
        ),
    ),
]


class TestGitHubFieldsAgainstTheRestSchemas:
    @pytest.mark.parametrize(
        ("path", "where", "fields"), _REST_FIELDS, ids=[f[0] for f in _REST_FIELDS]
    )
    def test_fields_read_are_the_rest_objects_fields(
        self, path: str, where: tuple[str, ...], fields: tuple[str, ...]
    ) -> None:
        schema = schema_for(_spec(), path)
        item = schema["items"] if schema.get("type") == "array" else schema
        if "workflow_runs" in item.get("properties", {}):
            item = item["properties"]["workflow_runs"]["items"]
        body: Any = (
            payloads.github_workflow_run()
            if where == ("workflow_run",)
            else payloads.github_deployment_status()
        )
        obj = body[where[0]]
        for field in fields:
            assert field in item["properties"], field
            jsonschema.validate(obj[field], item["properties"][field])
        for field in ("run_attempt", "run_started_at", "path"):
            if where == ("workflow_run",):
                assert field in item["properties"], field


class TestGitLabEvents:
    def test_the_documented_deployment_example(self, scope: StoreScope) -> None:
        """Deployment 15 to staging, finished ``success`` at 21:50 +02:00; its commit's full
        SHA is read from ``commit_url``."""
        event = gitlab_event(
            "Deployment Hook", payloads.encoded(payloads.gitlab_deployment()), scope
        )
        assert event.records == (
            Deployment(
                source="gitlab",
                service="deployer",
                environment="staging",
                production=False,
                deploy_id="root/test-deployment-webhooks/15",
                sha="279484c09fbe69ededfced8c1bb6e6d24616b468",
                status="success",
                created_at=t("2021-04-28T19:50:00Z"),
                finished_at=t("2021-04-28T19:50:00Z"),
                repo="gitlab:root/test-deployment-webhooks",
            ),
        )

    @pytest.mark.parametrize(
        ("status", "result"),
        [("created", "pending"), ("running", "pending"), ("failed", "failure")],
    )
    def test_deployment_statuses(self, scope: StoreScope, status: str, result: str) -> None:
        body = payloads.gitlab_deployment(status=status)
        (record,) = gitlab_event("Deployment Hook", payloads.encoded(body), scope).records
        assert isinstance(record, Deployment) and record.status == result
        assert (record.finished_at is None) == (result == "pending")

    @pytest.mark.parametrize("status", ["canceled", "skipped", "blocked"])
    def test_deployments_that_never_ran_record_nothing(
        self, scope: StoreScope, status: str
    ) -> None:
        body = payloads.gitlab_deployment(status=status)
        assert gitlab_event("Deployment Hook", payloads.encoded(body), scope).records == ()

    def test_without_a_commit_url_the_short_sha_is_kept(self, scope: StoreScope) -> None:
        body = payloads.gitlab_deployment(commit_url=None)
        (record,) = gitlab_event("Deployment Hook", payloads.encoded(body), scope).records
        assert isinstance(record, Deployment) and record.sha == "279484c0"

    def test_the_documented_pipeline_example(self, scope: StoreScope) -> None:
        """Pipeline 31 finished at 15:26:29 UTC after 63 s of running."""
        event = gitlab_event("Pipeline Hook", payloads.encoded(payloads.gitlab_pipeline()), scope)
        assert event.records == (
            PipelineRun(
                source="gitlab",
                service="gitlab-test",
                pipeline="Pipeline for branch: master",
                run_id="gitlab-org/gitlab-test/31",
                result="success",
                created_at=t("2016-08-12T15:23:28Z"),
                started_at=t("2016-08-12T15:25:26Z"),
                finished_at=t("2016-08-12T15:26:29Z"),
                repo="gitlab:gitlab-org/gitlab-test",
            ),
        )

    def test_with_queued_duration_the_run_starts_after_its_queue(self, scope: StoreScope) -> None:
        body = payloads.gitlab_pipeline(queued_duration=12)
        (record,) = gitlab_event("Pipeline Hook", payloads.encoded(body), scope).records
        assert isinstance(record, PipelineRun)
        assert record.started_at == t("2016-08-12T15:23:40Z")

    @pytest.mark.parametrize("status", ["created", "pending", "running", "manual"])
    def test_a_pipeline_not_finished_is_ignored(self, scope: StoreScope, status: str) -> None:
        body = payloads.gitlab_pipeline(status=status, finished_at=None)
        event = gitlab_event("Pipeline Hook", payloads.encoded(body), scope)
        assert event.records == () and event.ignored

    def test_a_body_of_another_kind_is_malformed(self, scope: StoreScope) -> None:
        with pytest.raises(Malformed):
            gitlab_event("Pipeline Hook", payloads.encoded(payloads.gitlab_deployment()), scope)

    @pytest.mark.parametrize(
        "field", ["deployment_id", "status_changed_at", "project", "environment"]
    )
    def test_a_deployment_missing_a_field_is_malformed(self, scope: StoreScope, field: str) -> None:
        body = payloads.gitlab_deployment()
        del body[field]
        with pytest.raises(Malformed):
            gitlab_event("Deployment Hook", payloads.encoded(body), scope)

    def test_other_hooks_are_ignored(self, scope: StoreScope) -> None:
        assert gitlab_event("Push Hook", b"{}", scope).ignored

    @pytest.mark.parametrize(
        ("text", "iso"),
        [
            ("2021-04-28 21:50:00 +0200", "2021-04-28T19:50:00Z"),
            ("2016-08-12 15:23:28 UTC", "2016-08-12T15:23:28Z"),
            ("2021-02-23T02:41:37.886Z", "2021-02-23T02:41:37.886Z"),
        ],
    )
    def test_gitlab_hook_times(self, text: str, iso: str) -> None:
        assert gitlab_time(text) == t(iso)

    @pytest.mark.parametrize("text", ["2021-04-28 21:50:00", "yesterday", "", None, 5])
    def test_a_time_without_offset_is_refused(self, text: Any) -> None:
        with pytest.raises(ValueError):
            gitlab_time(text)


def counted(store: Any, metric: str) -> float:
    return sum(value for _, value in store.counters(metric))


def intake() -> WebhookIntake:
    config = make_config(gitlab_hook={"token": "glwt-token"}, webhook={"secret": "s3cret"})
    return WebhookIntake(endpoints(config), open_store(":memory:"), lambda: 1_700_000_000.0)


def push_github(hooks: WebhookIntake, event: str, body: dict[str, Any], delivery: str) -> int:
    raw = payloads.encoded(body)
    headers = {
        "x-github-event": event,
        "x-github-delivery": delivery,
        "x-hub-signature-256": github_signature("s3cret", raw),
    }
    return hooks.handle("github", "POST", raw, headers)[0]


def push_gitlab(hooks: WebhookIntake, body: dict[str, Any], delivery: str) -> int:
    headers = {
        "x-gitlab-event": "Deployment Hook",
        "x-gitlab-token": "glwt-token",
        "idempotency-key": delivery,
    }
    return hooks.handle("gitlab", "POST", payloads.encoded(body), headers)[0]


class TestStoring:
    """Through the intake: each delivery in its own transaction, as the server runs it."""

    def test_a_redelivered_event_counts_once(self) -> None:
        """The same event under new delivery ids (GitHub's "redeliver") counts once; the same
        delivery id again is a replay, acknowledged without a write."""
        hooks = intake()
        for n in range(3):
            assert (
                push_github(
                    hooks, "deployment_status", payloads.github_deployment_status(), f"d{n}"
                )
                == 200
            )
            assert (
                push_github(hooks, "workflow_run", payloads.github_workflow_run(), f"r{n}") == 200
            )
        assert push_github(hooks, "workflow_run", payloads.github_workflow_run(), "r0") == 200
        assert counted(hooks.store, DEPLOYMENTS_TOTAL) == 1
        assert counted(hooks.store, RUNS_TOTAL) == 1
        assert hooks.counts()["github"] == {"accepted": 6, "replayed": 1}

    def test_a_status_delivered_late_changes_nothing_finished(self) -> None:
        """``in_progress`` arriving after ``success``, then a ``failure``: the deployment
        stays finished by its first finish, counted once."""
        hooks = intake()
        for n, state in enumerate(("success", "in_progress", "failure")):
            body = payloads.github_deployment_status(state, status_id=209916254 + n)
            assert push_github(hooks, "deployment_status", body, f"d{n}") == 200
        assert hooks.store.counters(DEPLOYMENTS_TOTAL) == [
            ({"environment": "production", "result": "success", "service": "hello"}, 1.0)
        ]
        row = hooks.store.query_one("SELECT status, finished_at FROM deployments")
        assert row is not None and tuple(row) == ("success", t("2019-05-15T15:20:55Z"))

    def test_a_gitlab_deployment_keeps_the_time_it_was_created(self) -> None:
        hooks = intake()
        for status, at in (
            ("running", "2021-04-28 21:40:00 +0200"),
            ("success", "2021-04-28 21:50:00 +0200"),
        ):
            body = payloads.gitlab_deployment(status=status, status_changed_at=at)
            assert push_gitlab(hooks, body, status) == 200
        row = hooks.store.query_one("SELECT status, created_at, finished_at FROM deployments")
        assert row is not None
        assert tuple(row) == ("success", t("2021-04-28T19:40:00Z"), t("2021-04-28T19:50:00Z"))
        assert counted(hooks.store, DEPLOYMENTS_TOTAL) == 1

    def test_a_malformed_body_stores_nothing(self) -> None:
        hooks = intake()
        body = payloads.github_deployment_status()
        del body["deployment"]["sha"]
        assert push_github(hooks, "deployment_status", body, "d1") == 400
        assert hooks.store.query("SELECT key FROM deployments") == []
        # Not remembered as seen: the corrected delivery is taken.
        assert (
            push_github(hooks, "deployment_status", payloads.github_deployment_status(), "d1")
            == 200
        )

    def test_an_ignored_event_stores_nothing(self) -> None:
        hooks = intake()
        assert push_github(hooks, "ping", {"zen": "Keep it logically awesome."}, "p1") == 200
        assert (
            push_github(hooks, "workflow_run", payloads.github_workflow_run("requested"), "w1")
            == 200
        )
        assert hooks.store.query("SELECT key FROM pipeline_runs") == []

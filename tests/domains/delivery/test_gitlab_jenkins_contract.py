"""Contract: the simulated GitLab and Jenkins APIs carry the fields their documentation lists.

GitLab pages cited per test; Jenkins: https://www.jenkins.io/doc/book/using/remote-access-api/
(``tree=`` and ``{M,N}`` ranges) and the git plugin's ``BuildData`` action
(https://javadoc.jenkins.io/plugin/git/hudson/plugins/git/util/BuildData.html,
``lastBuiltRevision.SHA1``), the metrics plugin's ``TimeInQueueAction``
(https://javadoc.jenkins.io/plugin/metrics/jenkins/metrics/impl/TimeInQueueAction.html).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx

from exporter.domains.delivery.sandbox import data as delivery_data
from exporter.domains.delivery.sandbox.gitlab import TOKEN, GitLabFake
from exporter.domains.delivery.sandbox.jenkins import API_TOKEN, USER, JenkinsFake, parse_tree

SCENARIO = delivery_data.build(anchor=1_750_000_000.0)
PID = SCENARIO.gitlab["discovery/search"].id


def gitlab(url: str, token: str = TOKEN) -> httpx.Response:
    fake = GitLabFake(SCENARIO)

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=fake.app.transport()) as client:
            return await client.get(
                f"https://gitlab.example.com{url}", headers={"PRIVATE-TOKEN": token}
            )

    return asyncio.run(go())


def jenkins(url: str, auth: tuple[str, str] = (USER, API_TOKEN)) -> httpx.Response:
    fake = JenkinsFake(SCENARIO)
    basic = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=fake.app.transport()) as client:
            return await client.get(
                f"https://jenkins.example.com{url}", headers={"Authorization": f"Basic {basic}"}
            )

    return asyncio.run(go())


def has(obj: dict[str, Any], *fields: str) -> None:
    missing = [f for f in fields if f not in obj]
    assert not missing, missing


class TestGitLab:
    def test_deployments_fields(self) -> None:
        """https://docs.gitlab.com/api/deployments/#list-project-deployments"""
        r = gitlab(f"/api/v4/projects/{PID}/deployments?order_by=updated_at&sort=asc")
        body = r.json()
        assert body
        for d in body:
            has(
                d,
                "id",
                "iid",
                "ref",
                "sha",
                "created_at",
                "updated_at",
                "status",
                "environment",
                "deployable",
                "user",
            )
            has(d["environment"], "id", "name")
            assert d["status"] in ("created", "running", "success", "failed", "canceled", "blocked")
        times = [d["updated_at"] for d in body]
        assert times == sorted(times)

    def test_updated_after_returns_only_later_updates(self) -> None:
        """https://docs.gitlab.com/api/deployments/ (updated_after, order_by=updated_at)"""
        all_ = gitlab(f"/api/v4/projects/{PID}/deployments?order_by=updated_at&sort=asc").json()
        after = all_[1]["updated_at"]
        later = gitlab(
            f"/api/v4/projects/{PID}/deployments?order_by=updated_at&sort=asc&updated_after={after}"
        ).json()
        assert [d["id"] for d in later] == [d["id"] for d in all_[2:]]

    def test_pipelines_list_and_detail_fields(self) -> None:
        """https://docs.gitlab.com/api/pipelines/ (list, and get a single pipeline)"""
        listed = gitlab(f"/api/v4/projects/{PID}/pipelines").json()
        assert listed
        for p in listed:
            has(
                p,
                "id",
                "iid",
                "project_id",
                "sha",
                "ref",
                "status",
                "source",
                "created_at",
                "updated_at",
                "web_url",
            )
        detail = gitlab(f"/api/v4/projects/{PID}/pipelines/{listed[0]['id']}").json()
        has(detail, "started_at", "finished_at", "duration", "queued_duration", "user")

    def test_commits_fields(self) -> None:
        """https://docs.gitlab.com/api/commits/#list-repository-commits"""
        body = gitlab(f"/api/v4/projects/{PID}/repository/commits?ref_name=main").json()
        for c in body:
            has(
                c,
                "id",
                "short_id",
                "title",
                "author_name",
                "authored_date",
                "committer_name",
                "committed_date",
                "created_at",
                "parent_ids",
                "message",
                "web_url",
            )

    def test_incident_issues_fields(self) -> None:
        """https://docs.gitlab.com/api/issues/#list-project-issues (issue_type=incident)"""
        body = gitlab(f"/api/v4/projects/{PID}/issues?issue_type=incident").json()
        assert body
        for i in body:
            has(
                i,
                "iid",
                "description",
                "state",
                "created_at",
                "updated_at",
                "closed_at",
                "labels",
                "issue_type",
            )
            assert i["state"] in ("opened", "closed")
        assert "root cause: " in body[0]["description"]  # a string (null when empty)

    def test_merged_merge_requests_fields(self) -> None:
        """https://docs.gitlab.com/api/merge_requests/#list-project-merge-requests
        (state=merged, updated_after "on or after", order_by=updated_at)"""
        url = f"/api/v4/projects/{PID}/merge_requests?state=merged&order_by=updated_at&sort=asc"
        body = gitlab(url).json()
        assert len(body) == 2
        for m in body:
            has(
                m,
                "id",
                "iid",
                "project_id",
                "state",
                "created_at",
                "updated_at",
                "merged_at",
                "target_branch",
                "source_branch",
                "sha",
                "merge_commit_sha",
                "squash_commit_sha",
                "squash",
                "web_url",
            )
            assert m["state"] == "merged"
        assert [m["updated_at"] for m in body] == sorted(m["updated_at"] for m in body)
        squashed = [m for m in body if m["squash"]]
        assert len(squashed) == 1 and len(squashed[0]["squash_commit_sha"]) == 40
        later = gitlab(f"{url}&updated_after={body[1]['updated_at']}").json()
        assert [m["iid"] for m in later] == [body[1]["iid"]]  # on or after: inclusive

    def test_merge_request_commits_fields(self) -> None:
        """https://docs.gitlab.com/api/merge_requests/#get-single-merge-request-commits"""
        body = gitlab(f"/api/v4/projects/{PID}/merge_requests/2/commits").json()
        assert len(body) == 2
        for c in body:
            has(
                c,
                "id",
                "short_id",
                "title",
                "message",
                "author_name",
                "authored_date",
                "committer_name",
                "committed_date",
                "created_at",
                "parent_ids",
                "web_url",
            )
        assert body[0]["parent_ids"] == [body[1]["id"]]  # newest first
        assert gitlab(f"/api/v4/projects/{PID}/merge_requests/99/commits").status_code == 404

    def test_compare_fields(self) -> None:
        """https://docs.gitlab.com/api/repositories/#compare-branches-tags-or-commits
        (from...to by default: the commits of `to` since the merge base, oldest first)"""
        shas = [c.sha for c in SCENARIO.gitlab["discovery/search"].commits]
        body = gitlab(
            f"/api/v4/projects/{PID}/repository/compare?from={shas[1]}&to={shas[3]}"
        ).json()
        has(body, "commit", "commits", "diffs", "compare_timeout", "compare_same_ref", "web_url")
        assert body["compare_timeout"] is False
        assert [c["id"] for c in body["commits"]] == shas[2:4]
        for c in body["commits"]:
            has(c, "id", "short_id", "parent_ids", "authored_date", "committed_date", "title")
        assert body["commit"]["id"] == shas[3]
        missing = gitlab(f"/api/v4/projects/{PID}/repository/compare?from=nope&to={shas[3]}")
        assert missing.status_code == 404

    def test_offset_pagination_headers(self) -> None:
        """https://docs.gitlab.com/api/rest/#pagination (X-Next-Page, X-Total, Link)"""
        r = gitlab(f"/api/v4/projects/{PID}/deployments?per_page=2")
        assert r.headers["X-Next-Page"] == "2"
        assert r.headers["X-Total"] == str(len(SCENARIO.gitlab["discovery/search"].deployments))
        assert 'rel="next"' in r.headers["Link"]
        last = gitlab(f"/api/v4/projects/{PID}/deployments?per_page=2&page=3")
        assert last.headers["X-Next-Page"] == ""

    def test_keyset_pagination_on_group_projects(self) -> None:
        """https://docs.gitlab.com/api/rest/#keyset-based-pagination (Link rel="next" only)"""
        r = gitlab("/api/v4/groups/discovery/projects?pagination=keyset&order_by=id&sort=asc")
        assert r.json()[0]["path_with_namespace"] == "discovery/search"
        assert "X-Next-Page" not in r.headers

    def test_ci_lint_of_the_project_configuration_lists_its_includes(self) -> None:
        """https://docs.gitlab.com/api/lint/#validate-a-projects-ci-configuration
        (``GET /projects/:id/ci/lint``: ``valid``, ``errors``, ``warnings``, ``merged_yaml``,
        ``includes``); each include as GitLab's ``API::Entities::Ci::Lint::Result::Include``
        exposes it: ``type``, ``location``, ``blob``, ``raw``, ``extra`` (``project`` and
        ``ref`` of a ``file`` include), ``context_project``, ``context_sha``."""
        r = gitlab(f"/api/v4/projects/{PID}/ci/lint")
        assert r.status_code == 200
        body = r.json()
        has(body, "valid", "errors", "warnings", "merged_yaml", "includes")
        assert body["valid"] is True and body["errors"] == []
        head = SCENARIO.gitlab["discovery/search"].commits[-1].sha
        kinds = {}
        for include in body["includes"]:
            has(
                include,
                "type",
                "location",
                "blob",
                "raw",
                "extra",
                "context_project",
                "context_sha",
            )
            assert include["type"] in ("local", "file", "remote", "template", "component")
            assert include["context_project"] == "discovery/search"
            assert include["context_sha"] == head
            kinds[include["type"]] = include
        assert kinds["file"]["extra"] == {"project": "acme/platform-templates", "ref": "v2"}
        assert "/acme/platform-templates/-/blob/" in kinds["file"]["blob"]
        assert kinds["local"]["blob"].endswith(
            f"/discovery/search/-/blob/{head}/{kinds['local']['location']}"
        )
        assert kinds["template"]["blob"] is None
        assert gitlab("/api/v4/projects/999999/ci/lint").status_code == 404
        pinned = gitlab(f"/api/v4/projects/{PID}/ci/lint?content_ref={head}")
        assert pinned.json()["includes"] == body["includes"]
        assert gitlab(f"/api/v4/projects/{PID}/ci/lint?content_ref=nope").status_code == 404

    def test_rate_limit_headers_and_bad_token(self) -> None:
        """https://docs.gitlab.com/administration/settings/user_and_ip_rate_limits/#response-headers"""
        r = gitlab(f"/api/v4/projects/{PID}/pipelines")
        for h in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
            assert h in r.headers
        bad = gitlab(f"/api/v4/projects/{PID}/pipelines", token="nope")
        assert bad.status_code == 401 and bad.json() == {"message": "401 Unauthorized"}


class TestJenkins:
    TREE = (
        "builds[number,result,building,timestamp,duration,"
        "actions[lastBuiltRevision[SHA1],queuingDurationMillis],"
        "changeSets[items[commitId,timestamp]]]{0,2}"
    )

    def test_tree_returns_only_named_fields_and_range(self) -> None:
        r = jenkins(f"/job/identity/job/accounts-deploy/api/json?tree={self.TREE}")
        body = r.json()
        assert set(body) <= {"_class", "builds"}
        assert len(body["builds"]) == 2
        newest = body["builds"][0]
        assert set(newest) <= {
            "_class",
            "number",
            "result",
            "building",
            "timestamp",
            "duration",
            "actions",
            "changeSets",
        }
        assert newest["building"] is True and newest["result"] is None

    def test_build_data_and_time_in_queue(self) -> None:
        body = jenkins(f"/job/identity/job/accounts-deploy/api/json?tree={self.TREE}").json()
        done = body["builds"][1]
        assert done["result"] == "SUCCESS"
        shas = [a["lastBuiltRevision"]["SHA1"] for a in done["actions"] if "lastBuiltRevision" in a]
        assert len(shas) == 1 and len(shas[0]) == 40
        assert any("queuingDurationMillis" in a for a in done["actions"])
        items = done["changeSets"][0]["items"]
        assert [set(i) - {"_class"} for i in items] == [{"commitId", "timestamp"}] * len(items)

    def test_job_without_tree_is_refused_and_bad_auth_is_401(self) -> None:
        assert jenkins("/job/identity/job/accounts-deploy/api/json").status_code == 400
        assert jenkins("/job/identity/api/json?tree=jobs[name]", ("x", "y")).status_code == 401

    def test_folder_lists_jobs(self) -> None:
        body = jenkins("/job/identity/api/json?tree=jobs[name,_class]").json()
        assert sorted(j["name"] for j in body["jobs"]) == ["accounts-ci", "accounts-deploy"]

    def test_tree_parser(self) -> None:
        assert parse_tree("a,b[c,d[e]]{0,5}") == {
            "a": {},
            "b": {"c": {}, "d": {"e": {}}, "__range__": (0, 5)},
        }

"""Contract: every body the simulated GitHub serves validates against GitHub's OpenAPI description.

The schemas are the ``200`` responses of ``../shared/api/github/openapi-subset.json``
(octokit's dereferenced api.github.com description), the shared contract beside
the repository; the copy in ``tests/data`` stands in where that is absent, and
a test checks the two are the same. OpenAPI 3.0 ``nullable`` is
turned into JSON Schema's ``null`` type before validating with ``jsonschema``.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
from typing import Any

import httpx
import jsonschema
import pytest

from exporter.domains.delivery.sandbox import data as delivery_data
from exporter.domains.delivery.sandbox.github import TOKEN, GitHubFake
from tests.support.paths import DATA, REPO_ROOT

# The shared contract beside the repository, and a copy of it (@octokit/openapi 23.0.2's
# subset, MIT, see github-openapi-subset.LICENSE) for checkouts without it.
SHARED_SPEC = REPO_ROOT.parent / "shared" / "api" / "github" / "openapi-subset.json"
COPY_SPEC = DATA / "github-openapi-subset.json"
SPEC_PATH = SHARED_SPEC if SHARED_SPEC.is_file() else COPY_SPEC
_SPEC: dict[str, Any] = {}


def _spec() -> dict[str, Any]:
    if not _SPEC:
        _SPEC.update(json.loads(SPEC_PATH.read_text(encoding="utf-8")))
    return _SPEC


def nullable_to_jsonschema(schema: Any) -> Any:
    """OpenAPI 3.0 ``nullable: true`` -> JSON Schema ``null`` allowed."""
    if isinstance(schema, list):
        return [nullable_to_jsonschema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: nullable_to_jsonschema(v) for k, v in schema.items()}
    if out.pop("nullable", False):
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        elif "type" not in out:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def schema_for(spec: dict[str, Any], path: str) -> Any:
    response = spec["paths"][path]["get"]["responses"]["200"]
    return nullable_to_jsonschema(copy.deepcopy(response["content"]["application/json"]["schema"]))


SCENARIO = delivery_data.build(anchor=1_750_000_000.0)
REPO = "acme/checkout"
DEPLOY_ID = SCENARIO.github[REPO].deployments[0].id
# The newest run calls a reusable workflow, so a non-empty ``referenced_workflows`` is checked.
REUSED = "acme/platform-templates/.github/workflows/build.yml@v2"
_runs = SCENARIO.github[REPO].runs
_newest = max(range(len(_runs)), key=lambda i: (_runs[i].created_at, _runs[i].id))
_runs[_newest] = dataclasses.replace(_runs[_newest], referenced=(REUSED,))

CASES = [
    ("/orgs/{org}/repos", "/orgs/acme/repos"),
    ("/repos/{owner}/{repo}/actions/runs", f"/repos/{REPO}/actions/runs"),
    ("/repos/{owner}/{repo}/actions/runs", "/repos/acme/payments-api/actions/runs"),
    ("/repos/{owner}/{repo}/deployments", f"/repos/{REPO}/deployments"),
    (
        "/repos/{owner}/{repo}/deployments/{deployment_id}/statuses",
        f"/repos/{REPO}/deployments/{DEPLOY_ID}/statuses",
    ),
    ("/repos/{owner}/{repo}/commits", f"/repos/{REPO}/commits"),
    ("/repos/{owner}/{repo}/commits", "/repos/acme/recommendations/commits"),
    ("/repos/{owner}/{repo}/issues", f"/repos/{REPO}/issues?state=all&labels=incident"),
    ("/rate_limit", "/rate_limit"),
    (
        "/repos/{owner}/{repo}/compare/{basehead}",
        f"/repos/{REPO}/compare/{SCENARIO.github[REPO].commits[1].sha}..."
        f"{SCENARIO.github[REPO].commits[4].sha}",
    ),
]


def fetch(url: str) -> httpx.Response:
    fake = GitHubFake(SCENARIO)

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(
            transport=fake.app.transport(), base_url="https://api.github.com"
        ) as client:
            return await client.get(url, headers={"Authorization": f"Bearer {TOKEN}"})

    return asyncio.run(go())


class TestGitHubBodiesMatchTheOpenAPIDescription:
    @pytest.mark.parametrize(("spec_path", "url"), CASES, ids=[c[1] for c in CASES])
    def test_body_validates(self, spec_path: str, url: str) -> None:
        """The fake's 200 body for this endpoint validates against its response schema."""
        response = fetch(url)
        assert response.status_code == 200
        body = response.json()
        assert body, "an empty body proves nothing"
        jsonschema.validate(body, schema_for(_spec(), spec_path))

    def test_an_incident_body_naming_its_root_cause_validates(self) -> None:
        """Incident issues whose body names a root-cause commit are still valid issues."""
        body = fetch(f"/repos/{REPO}/issues?state=all&labels=incident").json()
        named = [i["body"] for i in body if i["body"]]
        assert len(named) == 1 and "root cause: " in named[0]
        jsonschema.validate(body, schema_for(_spec(), "/repos/{owner}/{repo}/issues"))

    def test_a_run_calling_a_reusable_workflow_is_described(self) -> None:
        body = fetch(f"/repos/{REPO}/actions/runs").json()
        assert body["workflow_runs"][0]["referenced_workflows"] == [
            {"path": REUSED, "sha": body["workflow_runs"][0]["head_sha"], "ref": "refs/tags/v2"}
        ]
        jsonschema.validate(body, schema_for(_spec(), "/repos/{owner}/{repo}/actions/runs"))

    def test_the_validator_rejects_a_broken_body(self) -> None:
        """The check has teeth: a run without its required head_sha is refused."""
        body = fetch(f"/repos/{REPO}/actions/runs").json()
        del body["workflow_runs"][0]["head_sha"]
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, schema_for(_spec(), "/repos/{owner}/{repo}/actions/runs"))

    def test_every_delivery_endpoint_is_covered(self) -> None:
        paths = {p for p, _ in CASES}
        for needed in (
            "/repos/{owner}/{repo}/actions/runs",
            "/repos/{owner}/{repo}/deployments",
            "/repos/{owner}/{repo}/deployments/{deployment_id}/statuses",
            "/repos/{owner}/{repo}/commits",
            "/repos/{owner}/{repo}/issues",
            "/orgs/{org}/repos",
        ):
            assert needed in paths and needed in _spec()["paths"]


class TestGitHubHeaders:
    def test_link_pagination_and_etag(self) -> None:
        response = fetch(f"/repos/{REPO}/actions/runs?per_page=2")
        assert 'rel="next"' in response.headers["Link"]
        assert "page=2" in response.headers["Link"]
        assert response.headers["ETag"].startswith('W/"')
        assert int(response.headers["X-RateLimit-Remaining"]) < 5000

    def test_bad_token_is_401_bad_credentials(self) -> None:
        fake = GitHubFake(SCENARIO)

        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=fake.app.transport()) as client:
                return await client.get(
                    "https://api.github.com/rate_limit", headers={"Authorization": "Bearer nope"}
                )

        response = asyncio.run(go())
        assert response.status_code == 401
        assert response.json()["message"] == "Bad credentials"


def test_the_copy_equals_the_shared_contract() -> None:
    """The copy in tests/data is the shared contract, byte for byte, where both exist."""
    if not SHARED_SPEC.is_file():
        pytest.skip(f"{SHARED_SPEC} is not beside this checkout")
    assert COPY_SPEC.read_bytes() == SHARED_SPEC.read_bytes()

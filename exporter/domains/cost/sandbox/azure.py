"""A fake of Azure Cost Management's Query API and the Microsoft identity
platform's client-credentials token endpoint, following their documented shapes:

* ``POST /{tenant}/oauth2/v2.0/token`` (form: ``grant_type=client_credentials``,
  ``client_id``, ``client_secret``, ``scope=.../.default``) answers
  ``{"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
  "access_token": ...}``, or 401 ``{"error": "invalid_client", ...}``
  (https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow);
  with ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``
  and a ``client_assertion`` instead of the secret, the workload-identity form
  (https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow#second-case-access-token-request-with-a-certificate);
* ``GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=...``
  (``client_id`` for a user-assigned identity) with ``Metadata: true``: the managed
  identity endpoint (IMDS), answering ``access_token``, ``expires_in``,
  ``expires_on`` (epoch seconds, as strings), ``resource`` and ``token_type``
  (https://learn.microsoft.com/en-us/entra/identity/managed-identities-azure-resources/how-to-use-vm-token#get-a-token-using-http);
* ``POST {scope}/providers/Microsoft.CostManagement/query?api-version=...``
  validates the body (``type``, ``timeframe``, ``timePeriod`` for ``Custom``,
  ``dataset.granularity``, ``aggregation``, at most two ``grouping`` entries of
  type ``Dimension`` or ``TagKey``) and answers a ``QueryResult``:
  ``properties.columns`` (``Cost``, ``UsageDate`` as a ``YYYYMMDD`` number with
  daily granularity, ``TagKey``, ``TagValue``, ``Currency``), ``properties.rows``
  and ``properties.nextLink`` (``$skiptoken`` paging)
  (https://learn.microsoft.com/en-us/rest/api/cost-management/query/usage);
  expired or unknown tokens get 401, and queued throttles a 429 with
  ``x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from urllib.parse import parse_qs

from exporter.core.clock import Clock, system_clock
from exporter.core.sandbox.app import App, Request, Response

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# (scope, YYYY-MM-DD) -> [(tag value, cost, currency)]
Costs = dict[tuple[str, str], list[tuple[str, float, str]]]


def _error(status: int, code: str, message: str) -> Response:
    return Response.json({"error": {"code": code, "message": message}}, status)


@dataclass
class AzureCostFake:
    """State of the fake: tenants' clients, issued tokens, cost data, throttles."""

    tenant: str = "tenant-1"
    client_id: str = "client-1"
    client_secret: str = "secret-1"
    base_url: str = "https://management.azure.com"
    expires_in: int = 3599
    page_size: int = 100
    costs: Costs = field(default_factory=dict)
    clock: Clock = system_clock
    # Each query request pops one: the headers of a 429 to answer instead.
    throttles: list[dict[str, str]] = field(default_factory=list)
    tokens: dict[str, float] = field(default_factory=dict)
    token_requests: int = 0
    # The assertion a workload identity presents (its federated service-account token).
    federated_token: str | None = None
    # The client id of the managed identity the IMDS endpoint holds.
    managed_client_id: str = "managed-1"
    queries: list[dict[str, object]] = field(default_factory=list)

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    def app(self) -> App:
        app = App()
        app.route("POST", "/{tenant}/oauth2/v2.0/token")(self._token)
        app.route("GET", "/metadata/identity/oauth2/token")(self._imds_token)
        app.route("POST", "/{scope:path}/providers/Microsoft.CostManagement/query")(self._query)
        return app

    def _token(self, request: Request) -> Response:
        """The Entra ID client-credentials grant."""
        self.token_requests += 1
        form = {k: v[-1] for k, v in parse_qs(request.body.decode()).items()}
        if request.params["tenant"] != self.tenant:
            return Response.json(
                {
                    "error": "invalid_request",
                    "error_description": "AADSTS90002: Tenant not found.",
                },
                400,
            )
        if form.get("grant_type") != "client_credentials":
            return Response.json(
                {"error": "unsupported_grant_type", "error_description": "AADSTS70003"}, 400
            )
        if not str(form.get("scope", "")).endswith("/.default"):
            return Response.json(
                {"error": "invalid_scope", "error_description": "AADSTS1002012"}, 400
            )
        if form.get("client_assertion_type") == JWT_BEARER:
            if form.get("client_id") != self.client_id or (
                self.federated_token is None or form.get("client_assertion") != self.federated_token
            ):
                return Response.json(
                    {
                        "error": "invalid_client",
                        "error_description": "AADSTS70021: No matching federated identity "
                        "record found for presented assertion.",
                        "error_codes": [70021],
                    },
                    401,
                )
            return self._issue()
        if (
            form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return Response.json(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                    "error_codes": [7000215],
                },
                401,
            )
        return self._issue()

    def _issue(self) -> Response:
        access = uuid.uuid4().hex
        self.tokens[access] = self.clock() + self.expires_in
        return Response.json(
            {
                "token_type": "Bearer",
                "expires_in": self.expires_in,
                "ext_expires_in": self.expires_in,
                "access_token": access,
            }
        )

    def _imds_token(self, request: Request) -> Response:
        """The managed identity's token from the instance metadata service."""
        self.token_requests += 1
        query = {k: v[-1] for k, v in request.query.items()}
        if request.headers.get("metadata") != "true":
            return Response.json(
                {
                    "error": "invalid_request",
                    "error_description": "Required metadata header not specified",
                },
                400,
            )
        if not query.get("api-version") or not query.get("resource"):
            return Response.json(
                {"error": "invalid_request", "error_description": "Required parameter missing"},
                400,
            )
        if query.get("client_id", self.managed_client_id) != self.managed_client_id:
            return Response.json(
                {"error": "invalid_request", "error_description": "Identity not found"}, 400
            )
        access = uuid.uuid4().hex
        expires_on = self.clock() + self.expires_in
        self.tokens[access] = expires_on
        return Response.json(
            {
                "access_token": access,
                "client_id": self.managed_client_id,
                "expires_in": str(self.expires_in),
                "expires_on": str(int(expires_on)),
                "ext_expires_in": str(self.expires_in),
                "not_before": str(int(self.clock())),
                "resource": query["resource"],
                "token_type": "Bearer",
            }
        )

    def _refused(self, request: Request) -> Response | None:
        """The answer to a query the API refuses before reading it: bad or expired token,
        no api-version, or a throttle queued by the test."""
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        if not auth.startswith("Bearer ") or token not in self.tokens:
            return _error(401, "AuthenticationFailed", "Authentication failed.")
        if self.tokens[token] <= self.clock():
            return _error(
                401,
                "ExpiredAuthenticationToken",
                "The access token expiry UTC time is earlier than current UTC time.",
            )
        if not request.arg("api-version"):
            return _error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if self.throttles:
            headers = self.throttles.pop(0)
            return Response.json(
                {"error": {"code": "429", "message": "Too many requests. Please retry."}},
                429,
                headers,
            )
        return None

    def _query(self, request: Request) -> Response:
        """The Cost Management query: daily cost per tag value, paged by ``$skiptoken``."""
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            body = json.loads(request.body)
            start, end = self._validate(body)
        except (ValueError, KeyError, TypeError) as exc:
            return _error(400, "BadRequest", f"Invalid query definition: {exc}")
        self.queries.append(body)
        scope = "/" + request.params["scope"]
        rows = self._query_rows(scope, body["dataset"]["grouping"][0]["name"], start, end)
        return self._page(request, scope, rows)

    def _query_rows(self, scope: str, tag_key: str, start: date, end: date) -> list[list[object]]:
        rows: list[list[object]] = []
        d = start
        while d <= end:
            for value, cost, currency in self.costs.get((scope, d.isoformat()), []):
                usage = int(d.strftime("%Y%m%d"))
                rows.append([cost, usage, tag_key, value, currency])
            d += timedelta(days=1)
        return rows

    def _page(self, request: Request, scope: str, rows: list[list[object]]) -> Response:
        skip = int(request.arg("$skiptoken") or 0)
        page = rows[skip : skip + self.page_size]
        next_link = None
        if skip + self.page_size < len(rows):
            next_link = (
                f"{self.base_url}{scope}/providers/Microsoft.CostManagement/query"
                f"?api-version={request.arg('api-version')}&$skiptoken={skip + self.page_size}"
            )
        qid = str(uuid.uuid4())
        return Response.json(
            {
                "id": f"{scope}/providers/Microsoft.CostManagement/query/{qid}",
                "name": qid,
                "type": "Microsoft.CostManagement/query",
                "location": None,
                "sku": None,
                "eTag": None,
                "properties": {
                    "nextLink": next_link,
                    "columns": [
                        {"name": "Cost", "type": "Number"},
                        {"name": "UsageDate", "type": "Number"},
                        {"name": "TagKey", "type": "String"},
                        {"name": "TagValue", "type": "String"},
                        {"name": "Currency", "type": "String"},
                    ],
                    "rows": page,
                },
            }
        )

    @staticmethod
    def _validate(body: dict[str, object]) -> tuple[date, date]:
        if body.get("type") not in ("ActualCost", "AmortizedCost", "Usage"):
            raise ValueError("type must be ActualCost, AmortizedCost or Usage")
        if body.get("timeframe") != "Custom":
            raise ValueError("this fake answers Custom time frames only")
        period = body["timePeriod"]
        assert isinstance(period, dict)
        start = datetime.fromisoformat(str(period["from"])).date()
        end = datetime.fromisoformat(str(period["to"])).date()
        if end < start or (end - start).days > 31:
            raise ValueError("a daily query covers 1 to 31 days")
        dataset = body["dataset"]
        assert isinstance(dataset, dict)
        if dataset.get("granularity") != "Daily":
            raise ValueError("granularity must be Daily here")
        aggregation = dataset["aggregation"]
        assert isinstance(aggregation, dict) and aggregation
        for agg in aggregation.values():
            if agg.get("function") != "Sum":
                raise ValueError("aggregation function must be Sum")
        grouping = dataset["grouping"]
        assert isinstance(grouping, list)
        if not 1 <= len(grouping) <= 2 or any(
            g.get("type") not in ("Dimension", "TagKey") for g in grouping
        ):
            raise ValueError("one or two groupings of type Dimension or TagKey")
        return start, end

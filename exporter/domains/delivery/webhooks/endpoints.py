"""The delivery domain's webhook endpoints: ``/webhooks/github`` and ``/webhooks/gitlab``.

Each exists only when its source block has a ``webhook`` (and the source is enabled).
The intake (:mod:`exporter.core.webhooks`) checks the body's size and the sender's
proof first; the parser here turns the event into records and names the delivery,
so the intake acknowledges a replay without writing: GitHub's ``X-GitHub-Delivery``,
GitLab's ``Idempotency-Key`` (the same on every retry of one event) or, before
GitLab 17.4, its ``X-Gitlab-Event-UUID``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exporter.core.webhooks import Endpoint, Parsed, WebhookRequest
from exporter.domains.delivery.records import Deployment, PipelineRun
from exporter.domains.delivery.webhooks import github, gitlab
from exporter.domains.delivery.webhooks.events import Hook
from exporter.domains.delivery.webhooks.scope import StoreScope
from exporter.domains.delivery.webhooks.store import PushedDeployment

HOOKS = (github.HOOK, gitlab.HOOK)


def endpoints(config: Any) -> list[Endpoint]:
    """The endpoints this config turns on."""
    out: list[Endpoint] = []
    for hook_of in HOOKS:
        settings = getattr(config.sources, hook_of.kind, None)
        hook = getattr(settings, "webhook", None)
        if settings is None or not settings.enabled or hook is None or not hook.enabled:
            continue
        out.append(
            Endpoint(
                hook_of.kind,
                hook.intake(),
                _parser(config, hook_of),
                produces=(PushedDeployment, PipelineRun),
            )
        )
    return out


def _parser(config: Any, hook: Hook) -> Callable[[WebhookRequest], Parsed]:
    scopes: dict[int, StoreScope] = {}  # by store: one daemon has one

    def parser(request: WebhookRequest) -> Parsed:
        scope = scopes.get(id(request.store))
        if scope is None:
            scope = scopes.setdefault(id(request.store), StoreScope(config, request.store))
        event = hook.parse(request.headers.get(hook.event_header, ""), request.body, scope)
        delivery = next(
            (request.headers[h] for h in hook.delivery_headers if request.headers.get(h)), None
        )
        records = [PushedDeployment(r) if isinstance(r, Deployment) else r for r in event.records]
        return Parsed(records, delivery)

    return parser

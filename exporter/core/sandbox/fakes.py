"""What every simulated CI/CD upstream shares: ETags, page slicing, injected faults.

A :class:`FaultPlan` lets a test make the next requests matching a path fail
(an HTTP status with headers, truncated JSON, a delay longer than the client's
timeout), and counts every request by path and status so tests can check what
the exporter asked for.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from exporter.core.sandbox.app import App, Request, Response

T = TypeVar("T")


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_ms(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def etag_of(*parts: object) -> str:
    digest = hashlib.sha1(":".join(map(str, parts)).encode()).hexdigest()[:20]
    return f'W/"{digest}"'


def page_slice(items: Sequence[T], page: int, per_page: int) -> tuple[list[T], bool]:
    """Items of a 1-based page, and whether a next page exists."""
    start = (page - 1) * per_page
    return list(items[start : start + per_page]), start + per_page < len(items)


def int_arg(request: Request, name: str, default: int, maximum: int | None = None) -> int:
    try:
        value = int(request.arg(name) or default)
    except ValueError:
        value = default
    value = max(1, value)
    return min(value, maximum) if maximum else value


@dataclass
class Fault:
    """Make up to ``times`` requests whose path contains ``path`` fail this way."""

    path: str
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"message":"Server Error"}'
    times: int = 1
    # Answer 200 with a body cut in half (a truncated JSON document).
    truncate: bool = False
    # Wait this long first (longer than the client's timeout: a timeout).
    delay: float = 0.0
    # Let this many matching requests through before failing (a failure mid-pagination).
    after: int = 0


@dataclass
class FaultPlan:
    faults: list[Fault] = field(default_factory=list)
    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    log: list[tuple[str, str, int]] = field(default_factory=list)  # (path, query, status)
    latency: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, fault: Fault) -> None:
        with self.lock:
            self.faults.append(fault)

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.requests.clear()
            self.log.clear()

    def wrap(self, app: App) -> App:
        """An app that applies the plan around ``app``."""
        plan = self
        wrapped = App()
        inner: Callable[[Request], Response] = app.handle

        def handle(request: Request) -> Response:
            fault: Fault | None = None
            with plan.lock:
                for f in plan.faults:
                    if f.path in request.path and f.times > 0:
                        if f.after > 0:
                            f.after -= 1
                            continue
                        f.times -= 1
                        fault = f
                        break
            if fault is not None and not fault.truncate:
                response = Response(fault.status, fault.body, dict(fault.headers))
                response.headers.setdefault("Content-Type", "application/json")
            else:
                response = inner(request)
                if fault is not None:
                    response.body = response.body[: max(1, len(response.body) // 2)]
            if fault is not None and fault.delay:
                response.delay = fault.delay
            elif plan.latency:
                response.delay = plan.latency
            query = "&".join(f"{k}={v[-1]}" for k, v in sorted(request.query.items()))
            with plan.lock:
                plan.requests[(request.path, response.status)] += 1
                plan.log.append((request.path, query, response.status))
            return response

        wrapped.handle = handle  # type: ignore[method-assign]
        return wrapped

    def statuses(self) -> Counter[int]:
        with self.lock:
            out: Counter[int] = Counter()
            for (_, status), n in self.requests.items():
                out[status] += n
            return out


def json_response(data: Any, headers: dict[str, str] | None = None) -> Response:
    return Response.json(data, 200, headers or {})

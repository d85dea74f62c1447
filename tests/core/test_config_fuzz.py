"""``check-config`` under generated configs: never a traceback, and what it accepts starts.

A valid seed config that names every section and most source blocks is mutated by
hypothesis: keys deleted or added, values replaced by other types, odd numbers (``.inf``,
``.nan``, huge, negative), URLs without a scheme or host, unknown service names. For
each, ``check-config`` either accepts it (exit 0) or refuses it with lines that each
name the file (exit 2); nothing else, and no traceback. Every accepted config then
starts: the daemon builds its store, sources and snapshot (one render) and serves it on
loopback, without calling any upstream. Derandomized and bounded, so the suite stays
quick and every run tries the same configs.
"""

from __future__ import annotations

import contextlib
import copy
import io
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.cli import main
from exporter.config import load_config
from exporter.daemon import Daemon
from tests.support.net import http_get

SEED: dict[str, Any] = {
    "server": {"listen_address": "127.0.0.1", "port": 9877, "startup_grace": "2m"},
    "state": {"path": "state.db", "retention": "35d", "busy_timeout": "5s"},
    "services": [
        {
            "name": "checkout",
            "team": "payments",
            "routes": ["checkout-api", "/checkout"],
            "ci": [{"github": "acme/checkout"}, {"jenkins": "shop/checkout-deploy"}],
            "cost": {"tags": {"service": "checkout"}},
            "tags": ["golden-path"],
            "probes": [
                {"name": "health", "url": "https://checkout.example/healthz", "interval": "30s"},
                {"name": "db", "url": "tcp://db.example:5432"},
            ],
            "slo": {
                "availability": {"objective": 99.9},
                "latency": {"objective": 99, "threshold": "0.5s"},
            },
        },
        {"name": "search", "team": "discovery", "ci": [{"gitlab": "discovery/search"}]},
    ],
    "sources": {
        "probe": {"interval": "5s", "concurrency": 8},
        "github": {
            "token": "ghp_x",
            "orgs": [{"name": "acme"}],
            "base_url": "https://api.github.com",
        },
        "gitlab": {"token": "glpat-x", "groups": [{"name": "discovery"}]},
        "jenkins": {"base_url": "http://jenkins:8080", "username": "u", "api_token": "t"},
        "kong": {"status_url": "http://kong:8100", "admin_url": "http://kong:8001"},
        "nginx": {"access_log": "access.json", "stub_status_url": "http://nginx/status"},
        "cloudwatch": {"apis": [{"name": "checkout-api", "stage": "prod", "service": "checkout"}]},
        "prometheus": {
            "url": "http://prometheus:9090",
            "scalar_service": "search",
            "queries": {"requests": "sum(up)", "errors_5xx": "sum(up)"},
        },
        "focus": {"urls": ["https://billing.example/focus.csv"]},
        "request_totals": {"url": "http://prometheus:9090"},
    },
    "delivery": {"production_environments": ["production"], "backfill_days": 30},
    "cost": {"budgets": [{"scope": "team", "name": "payments", "monthly": 100}]},
    "capabilities": [
        {"name": "golden-path", "detect": {"rule": "catalog", "tag": "golden-path"}},
        {"name": "gateway", "detect": {"rule": "gateway_traffic"}, "cost_services": ["checkout"]},
    ],
}

ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "1h",
            "-5s",
            ".inf",
            "1e20",
            "http://",
            "ftp://x/",
            "kong:8100",
            "http://a:99999",
            "http://bad host/",
            "nope",
            "unallocated",
            "checkout",
            "month",
            "",
            "0.0.0.0",
        ]
    ),
    st.lists(st.text(max_size=6), max_size=3),
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=2),
)


def paths(node: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``node`` (dict keys and list indexes)."""
    out = [here] if here else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += paths(value, (*here, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += paths(value, (*here, i))
    return out


def mutate(data: dict[str, Any], draw: Any) -> dict[str, Any]:
    """A copy of ``data`` with one to three mutations drawn from ``draw``."""
    out = copy.deepcopy(data)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        where = draw(st.sampled_from(paths(out)))
        parent: Any = out
        for step in where[:-1]:
            parent = parent[step]
        last = where[-1]
        action = draw(st.sampled_from(["replace", "delete", "delete", "add_key"]))
        if action == "delete":
            del parent[last]
        elif action == "add_key" and isinstance(parent[last], dict):
            parent[last][draw(st.text(min_size=1, max_size=8))] = draw(ODD_VALUES)
        else:
            parent[last] = draw(ODD_VALUES)
    return out


def check_config(path: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["check-config", str(path)])
    return code, err.getvalue()


def starts(path: Path, state_dir: Path) -> None:
    """The accepted config builds a daemon that renders once and serves it."""
    config = load_config(path)
    config = config.model_copy(
        update={
            "state": config.state.model_copy(update={"path": state_dir / "state.db"}),
            "server": config.server.model_copy(update={"listen_address": "127.0.0.1", "port": 0}),
        }
    )
    daemon = Daemon(config)
    try:
        assert daemon.holder.current.text
        server = daemon.start_server()
        try:
            assert http_get(f"{server.url}/healthz")[0] == 200
        finally:
            server.stop()
    finally:
        daemon.store.close()


class TestCheckConfigFuzz:
    def test_the_seed_is_valid_and_starts(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "config.yaml"
            path.write_text(yaml.safe_dump(SEED), encoding="utf-8")
            assert check_config(path) == (0, "")
            starts(path, Path(tmp))

    @settings(
        max_examples=60,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.data())
    def test_a_mutated_config_is_refused_in_one_line_each_or_starts(self, data: Any) -> None:
        config = mutate(SEED, data.draw)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "config.yaml"
            path.write_text(yaml.safe_dump(config), encoding="utf-8")
            code, err = check_config(path)
            assert code in (0, 2), (code, err)
            if code == 2:
                lines = err.strip().splitlines()
                assert lines, "a refusal says why"
                assert all(line.startswith(f"config error in {path}: ") for line in lines), err
                assert "Traceback" not in err
            else:
                assert err == ""
                starts(path, Path(tmp))

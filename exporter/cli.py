"""The ``platform-kpi-exporter`` command line.

Exit codes:
  0  success
  1  runtime failure (``once``: at least one source failed; ``once --as-of``: a
     metrics provider failed; the error is logged), or an environment that keeps
     the daemon from starting (a read-only or corrupt state file, a port in use)
  2  invalid configuration or usage (also a state path that is a directory or on
     a kernel pseudo-filesystem, a listen address that is not one)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from exporter import __version__
from exporter.config import ConfigError, load_config, masked
from exporter.core import logs, redact, tracing
from exporter.core.clock import Clock, ShiftedClock, parse_instant, system_clock, utc_datetime
from exporter.core.errors import MissingExtra, StartupError
from exporter.core.settings import ConfigBase
from exporter.core.snapshot import Snapshot
from exporter.core.webconfig import WebConfigError, load_web_config

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

EPILOG = """exit codes:
  0  success
  1  runtime failure (once: a source failed; once --as-of: a KPI failed), or the
     environment keeps the daemon from starting (state file, port in use)
  2  invalid configuration or usage

environment:
  PLATFORM_KPI_<SECTION>__<FIELD>  overrides the config file, e.g. PLATFORM_KPI_SERVER__PORT=9100
"""

AS_OF = "TIMESTAMP is ISO 8601 (2027-03-01T00:05:00Z; no zone means UTC) or Unix epoch seconds."

ONCE = """Poll every enabled source once, print /metrics to stdout and exit.

With --as-of, poll nothing: print the KPIs computed from the stored history
(the state database) as they stood at TIMESTAMP, every window ending then.
Nothing is recorded, so the same command prints the same report again: a
month-end report, or a re-run of a past review. Counters and histograms
(totals so far, not values at an instant) and source health are left out.
"""

REPORT = """Print the platform review of one ISO week, computed from the stored history
(the state database) with the same KPI functions as /metrics: the five headline
KPIs with their change and 12-week trend, every team and service, what changed,
and each source's freshness. Polls nothing and records nothing. html is one
self-contained file; markdown pastes into a wiki or an issue; json carries the
same numbers.
"""

DEMO = """Start the simulated platform on loopback and the real daemon against it.

With --as-of, both run on one clock that starts at TIMESTAMP and runs on at
the real pace: the demo as it looks at 00:05 on the 1st of a month, on a leap
day or on New Year's Eve. Only the demo's clock moves, not the machine's.
"""

log = logging.getLogger("exporter")


class UsageError(Exception):
    """A command-line value is invalid; ``str()`` is the one line to print."""


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", required=True, type=Path, help="YAML config file")


def _add_run(p: argparse.ArgumentParser) -> None:
    _config_option(p)
    p.add_argument(
        "--web.config.file",
        dest="web_config_file",
        type=Path,
        default=None,
        metavar="FILE",
        help="TLS and basic auth in the exporter-toolkit format (sets server.web_config_file)",
    )


def _add_check_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="YAML config file")


def _add_once(p: argparse.ArgumentParser) -> None:
    _config_option(p)
    p.add_argument(
        "--openmetrics", action="store_true", help="print the OpenMetrics format instead"
    )
    p.add_argument(
        "--as-of",
        metavar="TIMESTAMP",
        default=None,
        help="report from the stored history at TIMESTAMP, without polling",
    )


def _add_report(p: argparse.ArgumentParser) -> None:
    _config_option(p)
    p.add_argument(
        "--week",
        metavar="YYYY-Www",
        help="the ISO week to review, e.g. 2026-W53 (default: the week holding the instant)",
    )
    p.add_argument(
        "--as-of",
        metavar="TIMESTAMP",
        default=None,
        help="read the history as it stood at TIMESTAMP (default: now); a week still "
        "running then ends there",
    )
    p.add_argument("--format", choices=["html", "markdown", "json"], default="html")
    p.add_argument("--out", type=Path, default=None, help="write here instead of stdout")


def _add_rules(p: argparse.ArgumentParser) -> None:
    _config_option(p)
    p.add_argument(
        "--out", "-o", type=Path, default=Path("alerts"), help="output directory (default alerts)"
    )


def _add_dashboards(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        "-o",
        type=Path,
        default=Path("dashboards"),
        help="output directory (default dashboards)",
    )


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=9877, help="port for /metrics (default 9877)")
    p.add_argument("--seed", type=int, default=42, help="scenario seed (default 42)")
    p.add_argument(
        "--state-dir", type=Path, default=None, help="state directory (default: a temporary one)"
    )
    p.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (default: run)"
    )
    p.add_argument(
        "--as-of",
        metavar="TIMESTAMP",
        default=None,
        help="run the simulated platform and the daemon from TIMESTAMP (default: now)",
    )
    p.add_argument(
        "--write-config",
        type=Path,
        default=None,
        help="also write the generated config to this file",
    )


# (command, help, description, adds its arguments), in the order ``--help`` lists them.
_COMMANDS: tuple[tuple[str, str, str, Callable[[argparse.ArgumentParser], None]], ...] = (
    (
        "run",
        "run the daemon",
        "Poll every enabled source on its schedule and serve /metrics.",
        _add_run,
    ),
    (
        "check-config",
        "validate a config and print it with secrets masked",
        "Validate FILE (with environment overrides) and print the resolved config.",
        _add_check_config,
    ),
    ("once", "poll every source once, print the exposition, exit", ONCE + AS_OF, _add_once),
    (
        "report",
        "print the weekly platform review from the stored history",
        REPORT + AS_OF,
        _add_report,
    ),
    (
        "rules",
        "write Prometheus rule files: SLO recording rules and alerts",
        "Write slo.rules.yml (Sloth-compatible SLO recording rules and multi-window "
        "multi-burn-rate alerts) and exporter.rules.yml (exporter health alerts) into DIR.",
        _add_rules,
    ),
    (
        "dashboards",
        "write the Grafana dashboards (needs the dashboards extra)",
        "Write the five Grafana dashboards as JSON into DIR.",
        _add_dashboards,
    ),
    (
        "demo",
        "run the daemon against the built-in simulated platform",
        DEMO + AS_OF,
        _add_demo,
    ),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="platform-kpi-exporter",
        description="Poll CI/CD, billing and gateway APIs; expose platform KPIs to Prometheus.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (default INFO)",
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=list(logs.FORMATS),
        help="text lines, or one JSON object per line with source, poll_id and "
        "duration_seconds fields (default text)",
    )
    parser.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        default=None,
        help="trace polls and upstream requests to this OTLP/HTTP endpoint, e.g. "
        "http://jaeger:4318/v1/traces (needs the otel extra)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, description, add_arguments in _COMMANDS:
        add_arguments(
            sub.add_parser(
                name,
                help=help_text,
                epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter,
                description=description,
            )
        )
    return parser


def _setup_logging(level: str, log_format: str = "text") -> None:
    logging.basicConfig(level=getattr(logging, level), format=logs.TEXT_FORMAT, stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        logs.configure(handler, log_format)
    # APScheduler's own skip message is replaced by ours, which names the source.
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Every record, httpx's and httpcore's debug lines too, passes the redaction layer.
    redact.install()


def _load(path: Path, web_config_file: Path | None = None) -> ConfigBase:
    config = load_config(path)
    if web_config_file is not None:
        config = _with_web_config(config, web_config_file)
    if config.server.web_config_file is not None:
        try:
            load_web_config(config.server.web_config_file)
        except WebConfigError as exc:
            raise UsageError(f"config error in {path}: server.web_config_file: {exc}") from None
    redact.REDACTOR.learn(config)
    return config


def _with_web_config(config: ConfigBase, path: Path) -> ConfigBase:
    """``config`` with ``--web.config.file`` as its ``server.web_config_file``."""
    if config.server.tls is not None or config.server.basic_auth is not None:
        raise UsageError(
            "--web.config.file replaces server.tls and server.basic_auth: "
            "move them into the web config file"
        )
    server = config.server.model_copy(update={"web_config_file": path})
    return config.model_copy(update={"server": server})


async def _serve(
    config: ConfigBase,
    duration: float | None = None,
    banner: str | None = None,
    clock: Clock = system_clock,
    listening: Callable[[str], None] | None = None,
) -> int:
    from exporter.core.allocator import limit_arenas, release_free_memory, unmap_large_blocks
    from exporter.core.heap import set_aside_long_lived
    from exporter.daemon import Daemon

    # A daemon renders multi-megabyte buffers every refresh: they go back to the system.
    unmap_large_blocks()
    limit_arenas()  # before the worker threads start
    daemon = Daemon(config, clock=clock, release_memory=release_free_memory)
    # Imports, config and store live as long as the process: collections stop walking them.
    set_aside_long_lived()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)

    def announce(url: str) -> None:
        if banner is not None:
            print(banner.format(url=url), flush=True)
        if listening is not None:
            listening(url)

    await daemon.run(stop, on_ready=announce)
    return EXIT_OK


def _print(snapshot: Snapshot, openmetrics: bool) -> None:
    body = snapshot.openmetrics()[0] if openmetrics else snapshot.text
    sys.stdout.buffer.write(body)
    sys.stdout.flush()


async def _once(config: ConfigBase, openmetrics: bool) -> int:
    from exporter.daemon import Daemon

    daemon = Daemon(config)
    try:
        ok = await daemon.poll_all()
        _print(daemon.holder.current, openmetrics)
    finally:
        await daemon.shutdown()
    return EXIT_OK if ok else EXIT_FAILURE


def _require_history(config_file: Path, config: ConfigBase, why: str) -> None:
    """A state that does not exist yet is a one-line config error (exit 2): what reads the
    stored history creates no state, on a SQLite file as on PostgreSQL."""
    from exporter.core.store import holds_state

    location = config.state.location()
    if holds_state(location):
        return
    field = "state.path" if config.state.url is None else "state.url"
    if isinstance(location, Path):
        problem = f"{field}: {location} does not exist: {why}"
    else:
        where = "" if location.schema is None else f" (schema {location.schema})"
        problem = f"{field}: {location}{where} holds no state database: {why}"
    raise ConfigError(str(config_file), [problem])


def _report(config_file: Path, config: ConfigBase, at: float, openmetrics: bool) -> int:
    """``once --as-of``: the stored history at ``at``; polls nothing, records nothing."""
    from exporter.report import report

    _require_history(config_file, config, "--as-of reports on a stored history")
    snapshot, failed = report(config, at)
    _print(snapshot, openmetrics)
    return EXIT_FAILURE if failed else EXIT_OK


def _review(args: argparse.Namespace, at: float | None) -> int:
    """``report``: the platform review of one week from the stored history."""
    from exporter.review.command import report_text
    from exporter.review.weeks import IsoWeek

    config = _load(args.config)
    week = None
    if args.week is not None:
        try:
            week = IsoWeek.parse(args.week)
        except ValueError as exc:
            raise UsageError(f"report --week: {exc}") from None
    _require_history(args.config, config, "report reads a stored history")
    instant = system_clock() if at is None else at
    if week is not None and week.start > instant:
        raise UsageError(f"report --week: {week.label} starts after the review's instant")
    text = report_text(config, instant, week, args.format)
    if args.out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        try:
            args.out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"report --out: cannot write {args.out}: {exc.strerror}") from None
    return EXIT_OK


def _as_of(args: argparse.Namespace) -> float | None:
    """The ``--as-of`` instant, if given; a bad one is a usage error (exit 2, one line)."""
    text = getattr(args, "as_of", None)
    if text is None:
        return None
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise UsageError(f"{args.command} --as-of: {exc}") from None


def _tracing(endpoint: str | None) -> None:
    """Set up tracing to ``endpoint``, if given; a bad one is a usage error."""
    if endpoint is None:
        return
    if not endpoint.startswith(("http://", "https://")):
        raise UsageError(f"--otlp-endpoint: {endpoint!r} is not an http:// or https:// URL")
    try:
        tracing.setup(endpoint)
    except MissingExtra as exc:
        raise UsageError(f"--otlp-endpoint: {exc}") from None


def _demo(args: argparse.Namespace, at: float | None) -> int:
    from exporter.config import Config as _Config
    from exporter.core.sandbox.scenario import Scenario
    from exporter.sandbox import platform

    # One clock for the simulated platform and the daemon, so they agree on "now".
    clock: Clock = system_clock if at is None else ShiftedClock(at)
    scenario = Scenario(seed=args.seed, clock=clock)
    sandbox = platform.start(scenario)
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="platform-kpi-demo-"))
    data = platform.demo_config(sandbox.url, state_dir, scenario, args.port)
    if args.write_config:
        args.write_config.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    config = _Config(**data)
    since = "" if at is None else f"; clock from {utc_datetime(at).isoformat()}"
    print(
        f"simulated platform on {sandbox.url} (seed {args.seed}); state in {state_dir}{since}",
        flush=True,
    )
    # The simulated upstreams that post to the exporter (webhooks) start once it listens.
    pushers: list[platform.Pusher] = []
    try:
        return asyncio.run(
            _serve(
                config,
                args.duration,
                banner="metrics at {url}/metrics  review at {url}/  (Ctrl-C to stop)",
                clock=clock,
                listening=lambda url: pushers.extend(platform.push(scenario, url)),
            )
        )
    finally:
        for pusher in pushers:
            pusher.stop()
        sandbox.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level, args.log_format)
    try:
        return _command(parser, args)
    finally:
        tracing.shutdown()


def _error(message: str) -> None:
    """Print an error as a log line is written: through the redaction layer (a URL's user
    name and password, known secrets)."""
    print(redact.REDACTOR.text(message), file=sys.stderr)


def _command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        _tracing(args.otlp_endpoint)
        at = _as_of(args)
        if args.command == "check-config":
            config = _load(args.file)
            print(json.dumps(redact.REDACTOR.data(masked(config)), indent=2))
            return EXIT_OK
        if args.command == "run":
            return asyncio.run(_serve(_load(args.config, args.web_config_file)))
        if args.command == "once":
            config = _load(args.config)
            if at is not None:
                return _report(args.config, config, at, args.openmetrics)
            return asyncio.run(_once(config, args.openmetrics))
        if args.command == "report":
            return _review(args, at)
        if args.command == "rules":
            from exporter.rules import write_rules

            for path in write_rules(_load(args.config), args.out):
                print(path)
            return EXIT_OK
        if args.command == "dashboards":
            try:
                from exporter.dashboards import write_dashboards
            except ImportError as exc:
                print(f"{exc}: pip install 'platform-kpi-exporter[dashboards]'", file=sys.stderr)
                return EXIT_FAILURE
            for path in write_dashboards(args.out):
                print(path)
            return EXIT_OK
        if args.command == "demo":
            return _demo(args, at)
    except (ConfigError, UsageError) as exc:
        _error(str(exc))
        return EXIT_CONFIG
    except StartupError as exc:
        file = getattr(args, "config", None) or getattr(args, "file", None) or "the config"
        kind = "config error" if exc.exit_code == EXIT_CONFIG else "cannot start"
        _error(f"{kind} in {file}: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_OK
    parser.error(f"unknown command {args.command}")
    return EXIT_CONFIG

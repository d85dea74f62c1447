"""Probes side by side: this exporter vs Debian's prometheus-blackbox-exporter, one run.

Both probe the same loopback targets (``tests/support/targets.py`` in its own
process, answering ``/delay/<ms>`` after exactly that long) at the same rate:
``--checks`` HTTP checks every ``--interval`` seconds. The exporter runs as
``platform-kpi-exporter run`` with its own grid, scraped by a real Prometheus
every 15 s (as in production); blackbox_exporter is driven by a second real
Prometheus that scrapes ``/probe?target=...`` for every target at the same
interval (the standard relabelling). After a warm-up, both are measured over
the same ``--seconds`` window:

* probes made vs expected (checks x window / interval): the exporter's stored
  results started in the window; for blackbox, the ``probe_success`` samples
  Prometheus stored in the window;
* CPU seconds per 1,000 probes (``/proc/<pid>/stat`` utime + stime deltas):
  the exporter, and blackbox_exporter alone and with the Prometheus that drives it;
* RSS (``VmRSS``) at the end;
* latency error: median over probes of (measured duration - the target's delay),
  from the stored durations and from ``probe_duration_seconds``.

    python3 benchmarks/probes.py                     # 1,000 checks at 15 s for 2 minutes
    python3 benchmarks/probes.py --checks 100 --seconds 30
    python3 benchmarks/probes.py --poll-interval 5   # the exporter commits (renders) every 5 s
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.net import free_port, port_open, wait_until  # noqa: E402
from tests.support.targets import TargetServer  # noqa: E402

DELAYS_MS = (10, 20, 50)  # the targets' fixed latencies, in turn
TICKS = os.sysconf("SC_CLK_TCK")
BLACKBOX = shutil.which("prometheus-blackbox-exporter") or "/usr/bin/prometheus-blackbox-exporter"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def target_urls(base: str, checks: int) -> list[tuple[str, int]]:
    """(url, delay ms) of every check; each its own path, so no two checks share a URL."""
    return [(f"{base}/delay/{DELAYS_MS[i % 3]}/{i}", DELAYS_MS[i % 3]) for i in range(checks)]


def exporter_config(
    work: Path, urls: list[tuple[str, int]], interval: float, port: int, poll: float = 15.0
) -> Path:
    per_service = 10
    services = [
        {
            "name": f"svc{s}",
            "team": "bench",
            "probes": [
                {"name": f"c{i}", "url": url, "interval": f"{interval}s", "timeout": "5s"}
                for i, (url, _) in enumerate(urls[s * per_service : (s + 1) * per_service])
            ],
        }
        for s in range((len(urls) + per_service - 1) // per_service)
    ]
    config = {
        "server": {"listen_address": "127.0.0.1", "port": port, "startup_grace": "1h"},
        "state": {"path": str(work / "state.db")},
        "services": services,
        "sources": {"probe": {"interval": f"{poll:g}s", "concurrency": 64}},
    }
    path = work / "exporter.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def prometheus(
    work: Path, name: str, scrape: dict[str, Any]
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    d = work / name
    d.mkdir()
    (d / "prometheus.yml").write_text(
        yaml.safe_dump({"global": {"scrape_interval": "15s"}, "scrape_configs": [scrape]}),
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={d / 'prometheus.yml'}",
            f"--storage.tsdb.path={d / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: port_open(port), timeout=30, what=f"prometheus {name}")
    return proc, port


def query(port: int, expr: str, at: float) -> list[dict[str, Any]]:
    qs = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?{qs}", timeout=60) as resp:
        return list(json.load(resp)["data"]["result"])


def blackbox_latency_errors(
    port: int, at: float, seconds: float, delays: dict[str, int]
) -> list[float]:
    """(probe_duration_seconds - target delay) of every stored blackbox probe in the window."""
    errors: list[float] = []
    for series in query(port, f"probe_duration_seconds[{int(seconds)}s]", at):
        delay = delays[series["metric"]["instance"]] / 1000
        errors.extend(float(v) - delay for _, v in series["values"])
    return errors


def exporter_results(state: Path, t0: float, t1: float) -> list[tuple[str, str, float, int]]:
    conn = sqlite3.connect(state, timeout=30)
    try:
        rows = conn.execute(
            "SELECT service, probe, duration, success FROM probe_results "
            "WHERE started_at >= ? AND started_at < ?",
            (t0, t1),
        ).fetchall()
    finally:
        conn.close()
    return [(str(s), str(p), float(d), int(ok)) for s, p, d, ok in rows]


def settle(state: Path, t0: float, t1: float, poll: float, most: float = 120.0) -> None:
    """Wait until the exporter has committed the window's probes (its next polls do): the
    count is read a poll interval and a second apart until two readings agree."""
    step = max(6.0, poll + 1.0)
    deadline = time.monotonic() + most
    last = -1
    time.sleep(step)
    while time.monotonic() < deadline:
        n = len(exporter_results(state, t0, t1))
        if n == last:
            return
        last = n
        time.sleep(step)


def skipped(state: Path) -> int:
    conn = sqlite3.connect(state, timeout=30)
    try:
        row = conn.execute(
            "SELECT SUM(value) FROM counters WHERE metric = 'platform_probe_skipped_total'"
        ).fetchone()
    finally:
        conn.close()
    return int(row[0] or 0)


def row(name: str, made: int, expected: int, cpu: float, rss: float, errors: list[float]) -> str:
    per_1000 = cpu / made * 1000 if made else float("nan")
    median_ms = statistics.median(errors) * 1000 if errors else float("nan")
    return (
        f"| {name} | {made} / {expected} ({made / expected:.1%}) | {per_1000:.2f} | "
        f"{rss:.0f} MiB | {median_ms:+.1f} ms |"
    )


def main() -> None:  # Over 80 lines: one straight run of the side-by-side set-up and report.
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=15.0)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--warmup", type=float, default=30.0)
    parser.add_argument("--target-workers", type=int, default=2)
    # How often the exporter commits (and so re-renders) what its grid probed.
    parser.add_argument("--poll-interval", type=float, default=15.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-probes-"))
    procs: list[subprocess.Popen[Any]] = []
    targets = TargetServer(workers=args.target_workers).start()
    try:
        urls = target_urls(targets.url, args.checks)
        delays = {url: ms for url, ms in urls}
        exporter_port = free_port()
        exporter = subprocess.Popen(
            [sys.executable, "-m", "exporter", "run", "--config",
             str(exporter_config(work, urls, args.interval, exporter_port, args.poll_interval))],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(exporter)
        bb_port = free_port()
        bb_config = work / "blackbox.yml"
        bb_config.write_text(
            yaml.safe_dump(
                {"modules": {"http_2xx": {"prober": "http", "timeout": "5s",
                                          "http": {"preferred_ip_protocol": "ip4"}}}}
            ),
            encoding="utf-8",
        )  # fmt: skip
        blackbox = subprocess.Popen(
            [BLACKBOX, f"--config.file={bb_config}", f"--web.listen-address=127.0.0.1:{bb_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(blackbox)
        wait_until(lambda: port_open(bb_port), timeout=30, what="blackbox_exporter")
        bb_prom, bb_prom_port = prometheus(
            work,
            "prom-blackbox",
            {
                "job_name": "blackbox",
                "metrics_path": "/probe",
                "params": {"module": ["http_2xx"]},
                "scrape_interval": f"{args.interval:g}s",
                "scrape_timeout": "5s",
                "static_configs": [{"targets": [u for u, _ in urls]}],
                "relabel_configs": [
                    {"source_labels": ["__address__"], "target_label": "__param_target"},
                    {"source_labels": ["__param_target"], "target_label": "instance"},
                    {"target_label": "__address__", "replacement": f"127.0.0.1:{bb_port}"},
                ],
            },
        )
        procs.append(bb_prom)
        ex_prom, _ = prometheus(
            work,
            "prom-exporter",
            {"job_name": "exporter", "scrape_interval": "15s",
             "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]},
        )  # fmt: skip
        procs.append(ex_prom)
        wait_until(lambda: port_open(exporter_port), timeout=60, what="the exporter")

        time.sleep(args.warmup)
        t0 = time.time()
        start = {p.pid: cpu_seconds(p.pid) for p in (exporter, blackbox, bb_prom)}
        time.sleep(args.seconds)
        t1 = time.time()
        cpu = {p.pid: cpu_seconds(p.pid) - start[p.pid] for p in (exporter, blackbox, bb_prom)}
        rss = {p.pid: rss_mib(p.pid) for p in (exporter, blackbox, bb_prom)}
        settle(work / "state.db", t0, t1, args.poll_interval)

        expected = int(args.checks * args.seconds / args.interval)
        ours = exporter_results(work / "state.db", t0, t1)
        our_delay = {(f"svc{i // 10}", f"c{i % 10}"): ms for i, (_, ms) in enumerate(urls)}
        our_errors = [d - our_delay[(s, p)] / 1000 for s, p, d, ok in ours if ok]
        bb_made = query(
            bb_prom_port, f"sum(count_over_time(probe_success[{int(args.seconds)}s]))", t1
        )
        bb_count = int(float(bb_made[0]["value"][1])) if bb_made else 0
        bb_errors = blackbox_latency_errors(bb_prom_port, t1, args.seconds, delays)

        print(f"{args.checks} checks every {args.interval:g} s (the exporter committing every "
              f"{args.poll_interval:g} s), measured over {args.seconds:g} s after {args.warmup:g} s "
              f"of warm-up; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
        print()
        print("| | probes made / expected | CPU s per 1,000 probes | RSS | median latency error |")
        print("|---|---:|---:|---:|---:|")
        print(row("platform-kpi-exporter", len(ours), expected, cpu[exporter.pid],
                  rss[exporter.pid], our_errors))  # fmt: skip
        print(row("blackbox_exporter", bb_count, expected, cpu[blackbox.pid],
                  rss[blackbox.pid], bb_errors))  # fmt: skip
        print(row("blackbox_exporter + its Prometheus", bb_count, expected,
                  cpu[blackbox.pid] + cpu[bb_prom.pid], rss[blackbox.pid] + rss[bb_prom.pid],
                  bb_errors))  # fmt: skip
        failed = sum(1 for *_, ok in ours if not ok)
        print()
        print(
            f"exporter: {failed} failed probes in the window, {skipped(work / 'state.db')} slots "
            f"skipped since start; work dir {work}"
        )
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        targets.stop()


if __name__ == "__main__":
    main()

"""A real headless Chromium, driven over the Chrome DevTools Protocol's websocket.

One browser process per test module (:func:`chromium`), one page (tab) per test
(:meth:`Browser.page`). A :class:`Page` records every network request the page
makes and every console error or uncaught exception, so a test can assert that
nothing left the page and nothing failed. Debian's ``chromium`` package provides
the binary (``scripts/test`` installs it). Protocol reference:
https://chromedevtools.github.io/devtools-protocol/ (Page, Runtime, Network,
Emulation, Log domains).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import websocket

from tests.support.faketime import without_faketime

CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium_binary() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class Page:
    """One tab: navigate, evaluate, screenshot and print, recording what happened."""

    def __init__(self, ws_url: str, timeout: float = 60.0) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self.timeout = timeout
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result
            self.events.append(msg)
        raise TimeoutError(method)

    def wait_for(self, event: str) -> dict[str, Any]:
        """The first ``event`` not yet consumed, waiting for it."""
        deadline = time.monotonic() + self.timeout
        seen = 0
        while time.monotonic() < deadline:
            for i, msg in enumerate(self.events[seen:], seen):
                if msg.get("method") == event:
                    self.events[i] = {"method": f"consumed:{event}", "params": msg["params"]}
                    return msg
            seen = len(self.events)
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(event)

    def viewport(self, width: int, height: int) -> None:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=width < 600,
        )

    def open(self, url: str, headers: dict[str, str] | None = None) -> None:
        if headers:
            self.call("Network.setExtraHTTPHeaders", headers=headers)
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def screenshot(self, path: Path) -> bytes:
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path.write_bytes(png)
        return png

    def pdf(self, width_in: float, height_in: float) -> bytes:
        """The page printed on paper of that size (inches), with its own CSS page rules."""
        data = self.call(
            "Page.printToPDF",
            paperWidth=width_in,
            paperHeight=height_in,
            printBackground=True,
            preferCSSPageSize=False,
        )["data"]
        return base64.b64decode(data)

    def requests(self) -> list[str]:
        """Every URL the page asked for, in order."""
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors."""
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(str(params["exceptionDetails"].get("text")))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                out.append(str(params.get("args")))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                out.append(str(params["entry"].get("text")))
        return out

    def close(self) -> None:
        self.ws.close()


def pdf_pages(pdf: bytes) -> int:
    """Pages of a PDF: its page objects (``/Type /Page``, not ``/Pages``)."""
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf))


class Browser:
    """A headless Chromium with its DevTools endpoint on a loopback port."""

    def __init__(self, binary: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.proc = subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            # On the real clock: the browser only displays pages the exporter rendered
            # (no script in them reads the date), and under libfaketime each of its
            # processes and timers is slowed enough to reach the tests' deadlines.
            env=without_faketime(dict(os.environ)),
        )
        self.endpoint = self._endpoint()

    def _endpoint(self) -> str:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            m = re.search(r"DevTools listening on ws://([^/]+)/", line)
            if m:
                return m.group(1)
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError("chromium did not start its DevTools endpoint")

    @contextmanager
    def page(self) -> Iterator[Page]:
        target = httpx.put(f"http://{self.endpoint}/json/new?about:blank", timeout=10).json()
        page = Page(target["webSocketDebuggerUrl"])
        try:
            yield page
        finally:
            page.close()
            httpx.get(f"http://{self.endpoint}/json/close/{target['id']}", timeout=10)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        shutil.rmtree(self.profile, ignore_errors=True)

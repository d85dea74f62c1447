"""A moto server in server mode on loopback, for the sources that speak AWS through boto3."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def moto_server() -> Iterator[str]:
    """A ThreadedMotoServer on a free loopback port; yields its base URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def fresh_account(url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Reset the server's state and point boto3's default chain at test credentials."""
    for name, value in TEST_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    httpx.post(f"{url}/moto-api/reset").raise_for_status()
    return url

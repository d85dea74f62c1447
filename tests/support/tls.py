"""A throwaway self-signed certificate for 127.0.0.1, made with the openssl CLI."""

from __future__ import annotations

import calendar
import shutil
import subprocess
import time
from pathlib import Path


def self_signed(directory: Path, name: str = "localhost") -> tuple[Path, Path]:
    """(certificate, key) PEM files valid for 127.0.0.1 and localhost, for one day."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed")
    subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)


def signed_chain(directory: Path, ca_days: int, leaf_days: int) -> tuple[Path, Path, Path]:
    """(chain, key, CA certificate): a leaf for 127.0.0.1 valid ``leaf_days``, signed by a
    CA valid ``ca_days``; ``chain`` holds the leaf then the CA, as a server sends them."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    leaf, key, csr = directory / "leaf.crt", directory / "leaf.key", directory / "leaf.csr"
    ext = directory / "leaf.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n", encoding="utf-8")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(ca_days),
        "-keyout", str(ca_key), "-out", str(ca), "-subj", "/CN=Test CA",
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", str(leaf_days), "-out", str(leaf), "-extfile", str(ext),
    )  # fmt: skip
    chain = directory / "chain.crt"
    chain.write_text(leaf.read_text() + ca.read_text(), encoding="utf-8")
    return chain, key, ca


def not_after(cert: Path) -> float:
    """The certificate's notAfter as Unix seconds, read by the openssl CLI."""
    openssl = shutil.which("openssl") or "openssl"
    out = subprocess.run(
        [openssl, "x509", "-noout", "-enddate", "-in", str(cert)],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    stamp = out.strip().removeprefix("notAfter=")
    return calendar.timegm(time.strptime(stamp, "%b %d %H:%M:%S %Y %Z"))

"""Alerts on what the probes see.

* ``PlatformProbeCertificateExpiresSoon``: the earliest certificate of a probed
  service's TLS chain expires in under 14 days
  (``platform_probe_tls_cert_expiry_timestamp_seconds``), time enough to renew it;
  once, however many replicas serve the series (:func:`~exporter.core.replicas.one_copy`).
"""

from __future__ import annotations

from typing import Any

from exporter.core.replicas import one_copy

CERT_EXPIRY = "platform_probe_tls_cert_expiry_timestamp_seconds"
CERT_DAYS = 14


def rules(config: Any) -> list[dict[str, Any]]:
    """The probe alerts (the same for every config: the certificates are series)."""
    return [
        {
            "alert": "PlatformProbeCertificateExpiresSoon",
            "expr": f"{one_copy(CERT_EXPIRY)} - time() < {CERT_DAYS} * 86400\n",
            "labels": {"severity": "ticket"},
            "annotations": {
                "summary": "TLS certificate of {{ $labels.service }} ({{ $labels.probe }}) "
                f"expires in under {CERT_DAYS} days.",
                "description": "The earliest certificate in the chain that {{ $labels.service }} "
                "serves to probe {{ $labels.probe }} expires within "
                f"{CERT_DAYS} days; renew it.",
            },
        }
    ]

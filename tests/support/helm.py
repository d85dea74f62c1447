"""The real helm binary (v3.17, installed by ``scripts/install-helm``) and what the chart renders.

:func:`template` runs ``helm template`` on the chart and returns its documents;
:func:`validate` checks one against its schema: the Kubernetes API's own (the
``kubernetes-validate`` package bundles them, offline) for built-in kinds, and
the prometheus-operator CRD schemas kept in ``tests/data/crds/`` for
``ServiceMonitor`` and ``PrometheusRule``. Both are strict: a field the schema
does not know is an error, as ``kubectl apply --validate=strict`` makes it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from tests.support.paths import DATA, REPO_ROOT

CHART = REPO_ROOT / "deploy" / "helm" / "platform-kpi-exporter"
RELEASE = "platform-kpi-exporter"
# The Kubernetes version the rendered objects must be valid for: the oldest one still supported.
KUBERNETES = "1.31"
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): DATA
    / "crds"
    / "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): DATA
    / "crds"
    / "prometheusrule-monitoring-v1.json",
}


@cache
def helm_binary() -> str:
    """``$PKE_HELM``, else the one ``scripts/install-helm`` cached (installing it if missing)."""
    given = os.environ.get("PKE_HELM")
    if given:
        return given
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "install-helm")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        found = shutil.which("helm")
        if found:
            return found
        raise RuntimeError(f"no helm binary: scripts/install-helm said {proc.stderr.strip()}")
    return proc.stdout.strip()


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run helm; its notes that the chart links files of the repository are dropped."""
    proc = subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=120, check=False
    )
    stderr = "\n".join(
        line for line in proc.stderr.splitlines() if "found symbolic link in path" not in line
    )
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout, stderr)


def template_args(
    values: Sequence[Path] = (), sets: Sequence[str] = (), set_files: Sequence[str] = ()
) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", "monitoring"]
    for path in values:
        args += ["--values", str(path)]
    for item in sets:
        args += ["--set", item]
    for item in set_files:
        args += ["--set-file", item]
    return args


def template(
    values: Sequence[Path] = (), sets: Sequence[str] = (), set_files: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The documents ``helm template`` renders; a failure raises with helm's message."""
    proc = helm(*template_args(values, sets, set_files))
    if proc.returncode != 0:
        raise AssertionError(f"helm template failed: {proc.stderr}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _strict(schema: Any) -> Any:
    """The schema with every object that lists its properties closed to others (what
    Kubernetes' strict field validation does), unless it keeps unknown fields itself,
    and its Go regular expressions written for Python's ``re``."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    pattern = out.get("pattern")
    if isinstance(pattern, str) and "(?i)" in pattern:
        # Go's regexp takes a flag anywhere (``^(?i)(abort|warn)?$``); Python's only first.
        out["pattern"] = "(?i)" + pattern.replace("(?i)", "")
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def _crd_schema(path: Path) -> dict[str, Any]:
    schema: dict[str, Any] = _strict(json.loads(path.read_text(encoding="utf-8")))
    return schema


def validate(doc: dict[str, Any]) -> None:
    """Raise if ``doc`` is not a valid object of its kind (see the module docstring)."""
    crd = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if crd is not None:
        jsonschema.validate(doc, _crd_schema(crd))
        return
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)

"""Every import in ``exporter/`` is covered by what ``pyproject.toml`` declares.

A static check, on the installed distributions' own metadata: each third-party
module that ``exporter/`` imports belongs to a distribution, and that distribution
must be a base dependency (or one of theirs, following their requirements), or, for
an import that runs only inside a function, one of an extra's. ``dev`` covers
nothing: what only the test install brings (``cryptography`` through moto, once)
would crash the image. The lock the image installs under pins all of it.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from exporter.core.errors import MissingExtra, classify, needs_extra
from tests.support.paths import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
LOCK = REPO_ROOT / "requirements" / "image.lock"
# Extras the image may install (the Dockerfile's EXTRAS); dev and dashboards are not for it.
IMAGE_EXTRAS = ("aws", "parquet", "github-app", "otel", "postgres")
# ...and what the lock pins besides, for an image built with them.
LOCKED_EXTRAS = (*IMAGE_EXTRAS, "azure")
# Modules that are themselves optional: each owned by one extra, imported only lazily.
OPTIONAL_MODULES = {
    "exporter.dashboards": "dashboards",
    "exporter.core.backend_postgres": "postgres",
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module of exporter/
    name: str  # the top-level name imported
    lazy: bool  # inside a function: runs only when that function does
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = _module_name(path)

    def walk(node: ast.AST, lazy: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            inside = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # never runs
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(module, alias.name.split(".")[0], lazy, child.lineno)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield Import(module, child.module.split(".")[0], lazy, child.lineno)
            yield from walk(child, inside)

    yield from walk(tree, False)


@cache
def third_party_imports() -> tuple[Import, ...]:
    out = []
    for path in sorted((REPO_ROOT / "exporter").rglob("*.py")):
        for imp in _imports(path):
            if imp.name in sys.stdlib_module_names or imp.name in {"exporter", "__future__"}:
                continue
            out.append(imp)
    return tuple(out)


@cache
def _closure(requirements: tuple[str, ...], extras: tuple[str, ...] = ()) -> frozenset[str]:
    """The distributions ``requirements`` install, their own requirements followed."""
    env = default_environment()
    seen: set[str] = set()
    todo = [(Requirement(r), frozenset(extras)) for r in requirements]
    while todo:
        req, wanted = todo.pop()
        markers_ok = req.marker is None or any(
            req.marker.evaluate({**env, "extra": e}) for e in (wanted or {""})
        )
        if not markers_ok:
            continue
        name = canonicalize_name(req.name)
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # not installed here: nothing of exporter/ imports it then
        for sub in dist.requires or []:
            todo.append((Requirement(sub), frozenset(req.extras)))
    return frozenset(k.split("[")[0] for k in seen)


@cache
def base() -> frozenset[str]:
    return _closure(tuple(PYPROJECT["project"]["dependencies"]))


@cache
def extra(name: str) -> frozenset[str]:
    reqs = tuple(PYPROJECT["project"]["optional-dependencies"][name])
    return base() | _closure(reqs)


@cache
def _providers() -> dict[str, list[str]]:
    return dict(metadata.packages_distributions())


def distributions_of(name: str) -> frozenset[str]:
    """The installed distributions that provide top-level module ``name``."""
    found = _providers().get(name)
    assert found, f"{name} is imported but no installed distribution provides it"
    return frozenset(canonicalize_name(d) for d in found)


def non_dev_extras() -> list[str]:
    return [e for e in PYPROJECT["project"]["optional-dependencies"] if e != "dev"]


class TestEveryImportIsDeclared:
    def test_the_check_sees_the_imports(self) -> None:
        names = {i.name for i in third_party_imports()}
        assert {"httpx", "prometheus_client", "boto3", "pyarrow", "jwt"} <= names

    def test_what_runs_at_import_time_is_a_base_dependency(self) -> None:
        """A module-level import runs when the daemon starts: the base install must have it."""
        missing = [
            f"{i.module}:{i.line} imports {i.name}"
            for i in third_party_imports()
            if not i.lazy
            and i.module not in OPTIONAL_MODULES
            and not distributions_of(i.name) & base()
        ]
        assert missing == []

    def test_a_lazy_import_is_covered_by_base_or_an_extra(self) -> None:
        uncovered = [
            f"{i.module}:{i.line} imports {i.name}"
            for i in third_party_imports()
            if i.lazy and not any(distributions_of(i.name) & extra(e) for e in non_dev_extras())
        ]
        assert uncovered == []

    def test_an_optional_module_is_covered_by_its_extra_and_imported_only_lazily(self) -> None:
        for module, owner in OPTIONAL_MODULES.items():
            mine = [i for i in third_party_imports() if i.module == module]
            assert mine
            assert [i.name for i in mine if not distributions_of(i.name) & extra(owner)] == []
        for path in sorted((REPO_ROOT / "exporter").rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in tree.body:  # module level only
                if isinstance(node, ast.ImportFrom) and node.module in OPTIONAL_MODULES:
                    pytest.fail(f"{path.name}:{node.lineno} imports {node.module} at module level")

    def test_github_app_signing_is_the_github_app_extra_s(self) -> None:
        assert {"pyjwt", "cryptography"} <= extra("github-app")
        assert "cryptography" not in base()

    def test_dev_alone_would_have_hidden_a_missing_one(self) -> None:
        """The check is not vacuous: cryptography is in the dev install (moto needs it),
        which is exactly why dev must not count."""
        assert "cryptography" in extra("dev")


class TestAMissingExtra:
    def test_is_a_config_failure_naming_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "boto3", None)  # what an install without it does
        with pytest.raises(MissingExtra) as caught, needs_extra("aws", "the cloudwatch source"):
            import boto3  # noqa: F401
        assert str(caught.value) == (
            "the cloudwatch source needs boto3: pip install 'platform-kpi-exporter[aws]'"
        )
        assert classify(caught.value) == "config"


class TestTheImageLock:
    def pins(self) -> dict[str, str]:
        out = {}
        for line in LOCK.read_text(encoding="utf-8").splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-"):
                req = Requirement(line)
                (spec,) = req.specifier
                assert spec.operator == "==", line
                out[canonicalize_name(req.name)] = spec.version
        return out

    def test_pins_every_distribution_the_image_extras_install(self) -> None:
        """Everything the base and the image's extras need, as installed here, is pinned."""
        pins = self.pins()
        wanted = base() | frozenset().union(*(extra(e) for e in LOCKED_EXTRAS))
        assert sorted(wanted - set(pins)) == []

    def test_each_pin_satisfies_what_pyproject_asks(self) -> None:
        pins = self.pins()
        project = PYPROJECT["project"]
        declared = [*project["dependencies"]]
        for name in LOCKED_EXTRAS:
            declared += project["optional-dependencies"][name]
        for text in declared:
            req = Requirement(text)
            version = pins[canonicalize_name(req.name)]
            assert req.specifier.contains(version, prereleases=True), (text, version)

    def test_the_dockerfile_installs_under_it_with_its_extras_argument(self) -> None:
        docker = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
        assert f'ARG EXTRAS="{",".join(IMAGE_EXTRAS)}"' in docker
        assert "--constraint requirements/image.lock" in docker
        assert '".${EXTRAS:+[$EXTRAS]}"' in docker  # "" installs no extra

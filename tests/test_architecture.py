"""The shape of the code: what may import what, and how big a function may grow.

Every module of ``exporter/`` is parsed once (``ast``) into its imports (at module
level, inside functions and under ``if TYPE_CHECKING``: all count) and its
functions. The rules are phrased by a module's name segments (``kpis``,
``metrics``, ``sources``, ``sandbox``), so they read the same for any layout:

* no import cycle between modules, nor between folders;
* a ``kpis`` module is pure: it imports no I/O, no store, no source, no metrics;
* a ``metrics`` module imports no source and computes nothing of its own;
* only the CLI imports a sandbox; nothing under ``core``, ``domains`` or
  ``sandbox`` imports ``exporter.config``;
* no package scans (``pkgutil``, ``import_module``) and no literal lists of
  source kinds: things are found through declarations;
* no function over 80 lines without a ``# Over 80 lines: <reason>`` comment.

Each test names every violation it finds by an id (``<rule>:<where>``) and
where it is (file:line), and fails if there is any.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "exporter"
MAX_FUNCTION_LINES = 80
LONG_REASON = "# Over 80 lines:"

# Standard-library and project modules a pure KPI module may import.
PURE_STDLIB = frozenset(
    {
        "__future__",
        "bisect",
        "calendar",
        "collections",
        "dataclasses",
        "datetime",
        "enum",
        "fnmatch",
        "functools",
        "hashlib",
        "itertools",
        "json",
        "math",
        "re",
        "statistics",
        "typing",
    }
)
PURE_SEGMENTS = frozenset({"kpis", "records", "settings"})
PURE_CORE = frozenset({"exporter.core.stats", "exporter.core.periods", "exporter.core.catalog"})
# Modules that shape metric families (and so must not compute or read upstreams).
PROVIDER_CORE = frozenset(
    {"exporter.core.provider", "exporter.core.self_health", "exporter.core.runtime"}
)
METRICS_FORBIDDEN_EXTERNAL = frozenset({"httpx", "sqlite3", "boto3", "botocore"})
COMPUTING_CALLS = frozenset({"sum", "min", "max", "len", "round", "abs"})
ARITHMETIC = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)
# The one module allowed to import a module by name: the sandbox finds its domains' fakes.
IMPORT_BY_NAME = frozenset({"exporter/sandbox/platform.py"})
# Folders that the config is built from, so they must not import it.
NO_CONFIG_FOLDERS = frozenset({"core", "domains", "sandbox"})


@dataclass(frozen=True)
class Edge:
    """One import: ``source`` imports ``target`` (a module of the project, or ``EXT:<name>``)."""

    source: str
    target: str
    path: str
    line: int


@dataclass
class Module:
    name: str
    path: str  # relative to the repository root, with "/"
    tree: ast.Module
    lines: list[str]
    edges: list[Edge] = field(default_factory=list)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(name: str, modules: Iterable[str]) -> str | None:
    """The longest prefix of dotted ``name`` that is a module of the project."""
    known = set(modules)
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _relative_base(module: Module, node: ast.ImportFrom) -> str:
    base = module.name.split(".")
    if not module.path.endswith("__init__.py"):
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _targets(module: Module, node: ast.Import | ast.ImportFrom, names: set[str]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            found = _resolve(alias.name, names)
            yield found if found else f"EXT:{alias.name.split('.')[0]}"
        return
    base = _relative_base(module, node) if node.level else (node.module or "")
    if not base.startswith("exporter"):
        yield f"EXT:{base.split('.')[0]}"
        return
    for alias in node.names:
        # ``from pkg import sub`` imports the submodule; ``from pkg import name`` the package.
        found = _resolve(f"{base}.{alias.name}", names)
        if found:
            yield found


def _load() -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT).as_posix()
        modules[_module_name(path)] = Module(
            _module_name(path), rel, ast.parse(text, rel), text.splitlines()
        )
    names = set(modules)
    for module in modules.values():
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(module, node, names):
                    if target != module.name:
                        module.edges.append(Edge(module.name, target, module.path, node.lineno))
    return modules


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return _load()


def _check(rule: str, found: dict[str, str]) -> None:
    """``found``: id -> where (file:line and detail). Fails on any violation of ``rule``."""
    lines = [f"violation {i}: {found[i]}" for i in sorted(found) if i.startswith(f"{rule}:")]
    assert not lines, "\n".join(lines)


def _segments(name: str) -> list[str]:
    return name.split(".")


def _folder(name: str) -> str:
    parts = _segments(name)
    if parts[:2] == ["exporter", "domains"] and len(parts) >= 3:
        return ".".join(parts[:3])
    return ".".join(parts[:2])


def _sccs(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
                continue
            if child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return out


def _cycles(edges: Iterable[Edge], node_of: dict[str, str] | None = None) -> dict[str, str]:
    graph: dict[str, set[str]] = {}
    where: dict[tuple[str, str], Edge] = {}
    for e in edges:
        if e.target.startswith("EXT:"):
            continue
        a = node_of[e.source] if node_of else e.source
        b = node_of[e.target] if node_of else e.target
        if a != b:
            graph.setdefault(a, set()).add(b)
            where.setdefault((a, b), e)
    found: dict[str, str] = {}
    for component in _sccs(graph):
        members = set(component)
        detail = [
            f"{a} -> {b} ({where[(a, b)].path}:{where[(a, b)].line})"
            for a in component
            for b in sorted(graph.get(a, ()))
            if b in members
        ]
        found[">".join(component)] = "; ".join(detail)
    return found


def _all_edges(modules: dict[str, Module]) -> list[Edge]:
    return [e for m in modules.values() for e in m.edges]


def _module_cycles(modules: dict[str, Module]) -> dict[str, str]:
    return {f"cycle:{k}": v for k, v in _cycles(_all_edges(modules)).items()}


def _folder_cycles(modules: dict[str, Module]) -> dict[str, str]:
    node_of = {name: _folder(name) for name in modules}
    return {f"folders:{k}": v for k, v in _cycles(_all_edges(modules), node_of).items()}


def _is_pure_subject(name: str) -> bool:
    return "kpis" in _segments(name) or name in PURE_CORE - {"exporter.core.catalog"}


def _impure(modules: dict[str, Module]) -> dict[str, str]:
    found: dict[str, str] = {}
    for m in modules.values():
        if not _is_pure_subject(m.name):
            continue
        for e in m.edges:
            if e.target.startswith("EXT:"):
                ok = e.target[4:] in PURE_STDLIB
            else:
                ok = bool(PURE_SEGMENTS & set(_segments(e.target))) or e.target in PURE_CORE
            if not ok:
                found[f"impure:{e.source}>{e.target}"] = f"{e.path}:{e.line}"
    return found


def _providers(modules: dict[str, Module]) -> list[Module]:
    return [
        m for m in modules.values() if "metrics" in _segments(m.name) or m.name in PROVIDER_CORE
    ]


def _metrics_io(modules: dict[str, Module]) -> dict[str, str]:
    found: dict[str, str] = {}
    for m in _providers(modules):
        for e in m.edges:
            bad = (
                e.target[4:] in METRICS_FORBIDDEN_EXTERNAL
                if e.target.startswith("EXT:")
                else "sources" in _segments(e.target)
            )
            if bad:
                found[f"metrics-io:{e.source}>{e.target}"] = f"{e.path}:{e.line}"
    return found


def _sandbox_imports(modules: dict[str, Module]) -> dict[str, str]:
    found: dict[str, str] = {}
    for e in _all_edges(modules):
        if e.target.startswith("EXT:") or e.source == "exporter.cli":
            continue
        if "sandbox" in _segments(e.target) and "sandbox" not in _segments(e.source):
            found[f"sandbox-import:{e.source}>{e.target}"] = f"{e.path}:{e.line}"
    return found


def _config_imports(modules: dict[str, Module]) -> dict[str, str]:
    found: dict[str, str] = {}
    for e in _all_edges(modules):
        if e.target == "exporter.config" and _segments(e.source)[1] in NO_CONFIG_FOLDERS:
            found[f"config-import:{e.source}"] = f"{e.path}:{e.line}"
    return found


def _scoped(tree: ast.Module) -> Iterator[tuple[str, ast.AST]]:
    """Every node with the qualified name of the function or class around it."""

    def walk(node: ast.AST, scope: str) -> Iterator[tuple[str, ast.AST]]:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                inner = f"{scope}.{child.name}" if scope else child.name
            yield inner or "<module>", child
            yield from walk(child, inner)

    yield from walk(tree, "")


def _computes(node: ast.AST) -> str | None:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ARITHMETIC):
        if any(
            isinstance(side, ast.JoinedStr)
            or (isinstance(side, ast.Constant) and isinstance(side.value, str))
            for side in (node.left, node.right)
        ):
            return None  # text, not arithmetic
        return f"{type(node.op).__name__} at line {node.lineno}"
    if isinstance(node, ast.AugAssign) and isinstance(node.op, ARITHMETIC):
        return f"augmented {type(node.op).__name__} at line {node.lineno}"
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name) and func.id in COMPUTING_CALLS:
            return f"{func.id}() at line {node.lineno}"
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "statistics"
        ):
            return f"statistics.{func.attr}() at line {node.lineno}"
    return None


def _computing(modules: dict[str, Module]) -> dict[str, str]:
    found: dict[str, str] = {}
    for m in _providers(modules):
        for scope, node in _scoped(m.tree):
            what = _computes(node)
            if what:
                key = f"compute:{m.path}:{scope}"
                found[key] = f"{found[key]}, {what}" if key in found else what
    return found


def _imports_by_name(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id in ("__import__", "import_module")
    )


def _scans(modules: dict[str, Module]) -> dict[str, str]:
    found: dict[str, str] = {}
    for m in modules.values():
        for e in m.edges:
            if e.target == "EXT:pkgutil":
                found[f"scan:{m.path}"] = f"{e.path}:{e.line} imports pkgutil"
        if m.path in IMPORT_BY_NAME:
            continue
        for node in ast.walk(m.tree):
            if _imports_by_name(node):
                found[f"scan:{m.path}:import_module"] = f"{m.path}:{getattr(node, 'lineno', 0)}"
    return found


def _registered_kinds() -> frozenset[str]:
    from exporter.config import SourcesConfig

    return frozenset(SourcesConfig.model_fields)


def _kind_lists(modules: dict[str, Module]) -> dict[str, str]:
    kinds = _registered_kinds()
    found: dict[str, str] = {}
    for m in modules.values():
        for scope, node in _scoped(m.tree):
            items: list[ast.expr | None] = []
            if isinstance(node, ast.Tuple | ast.List | ast.Set):
                items = list(node.elts)
            elif isinstance(node, ast.Dict):
                items = list(node.keys)
            named = {
                i.value
                for i in items
                if isinstance(i, ast.Constant) and isinstance(i.value, str) and i.value in kinds
            }
            if len(named) >= 2:
                found[f"kinds:{m.path}:{scope}"] = (
                    f"{m.path}:{getattr(node, 'lineno', 0)} {sorted(named)}"
                )
    return found


def _has_reason(m: Module, node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A ``# Over 80 lines: <reason>`` comment between the def and its first statement
    (after the docstring)."""
    body = node.body
    if (
        len(body) > 1
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        body = body[1:]
    head = m.lines[node.lineno - 1 : body[0].lineno - 1]
    return any(line.strip().startswith(LONG_REASON) for line in head)


def _long_functions(modules: dict[str, Module]) -> dict[str, str]:
    found: dict[str, str] = {}
    for m in modules.values():
        for scope, node in _scoped(m.tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES and not _has_reason(m, node):
                found[f"long:{m.path}:{scope}"] = f"{m.path}:{node.lineno} {length} lines"
    return found


RULES: dict[str, Callable[[dict[str, Module]], dict[str, str]]] = {
    "cycle": _module_cycles,
    "folders": _folder_cycles,
    "impure": _impure,
    "metrics-io": _metrics_io,
    "sandbox-import": _sandbox_imports,
    "config-import": _config_imports,
    "compute": _computing,
    "scan": _scans,
    "kinds": _kind_lists,
    "long": _long_functions,
}


class TestImports:
    def test_no_cycle_between_modules(self, modules: dict[str, Module]) -> None:
        """No module imports, directly or through others, a module that imports it."""
        _check("cycle", _module_cycles(modules))

    def test_no_cycle_between_folders(self, modules: dict[str, Module]) -> None:
        """Folders (``exporter.<pkg>``, ``exporter.domains.<d>``) form no cycle either."""
        _check("folders", _folder_cycles(modules))

    def test_kpis_are_pure(self, modules: dict[str, Module]) -> None:
        """A KPI module imports no I/O, store, source, metrics or sandbox: records in, numbers out."""
        _check("impure", _impure(modules))

    def test_metrics_import_no_sources(self, modules: dict[str, Module]) -> None:
        """Providers read the store and the KPIs, never an upstream."""
        _check("metrics-io", _metrics_io(modules))

    def test_only_the_cli_imports_a_sandbox(self, modules: dict[str, Module]) -> None:
        """The simulated platform is a CLI feature: no product module depends on it."""
        _check("sandbox-import", _sandbox_imports(modules))

    def test_nothing_in_core_or_domains_imports_config(self, modules: dict[str, Module]) -> None:
        """The config is built from the domains, so they must not import it back."""
        _check("config-import", _config_imports(modules))


class TestProviders:
    def test_metrics_compute_nothing(self, modules: dict[str, Module]) -> None:
        """A provider shapes families from KPI values: no arithmetic, no sum/min/max/len/round."""
        _check("compute", _computing(modules))


class TestDiscovery:
    def test_no_package_scans(self, modules: dict[str, Module]) -> None:
        """Modules are found through declarations, not by listing a package's files or by
        importing a module by name (outside the sandbox's one lookup)."""
        _check("scan", _scans(modules))

    def test_no_kind_lists(self, modules: dict[str, Module]) -> None:
        """No literal tuple, list, set or dict keys naming two or more source kinds: what a
        source is and produces comes from its declaration."""
        _check("kinds", _kind_lists(modules))


class TestSize:
    def test_functions_fit_in_80_lines(self, modules: dict[str, Module]) -> None:
        """A function longer than 80 lines says why at its top, or is split."""
        _check("long", _long_functions(modules))


def _print_found() -> None:  # pragma: no cover - a quick look without pytest
    """``python3 -m tests.test_architecture``: every current violation and where it is."""
    mods = _load()
    for find in RULES.values():
        for key, where in sorted(find(mods).items()):
            print(f"{key}  {where}")


if __name__ == "__main__":  # pragma: no cover
    _print_found()

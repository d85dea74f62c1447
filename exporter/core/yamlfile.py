"""Reading YAML config files: the loader that refuses duplicate keys, and pydantic
errors as one ``field.path: reason`` line each. Shared by the main config and the
web config file."""

from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import ValidationError

from exporter.core.settings import FieldError

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def field_path(loc: tuple[int | str, ...]) -> str:
    """``a.b[0].c`` for the location ``("a", "b", 0, "c")``; a key with dots, spaces or
    line breaks is quoted (``a['x.y']``), so the path stays one unambiguous line."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _PLAIN_KEY.match(str(part)):
            out += f"[{str(part)!r}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def one_line(problem: str) -> str:
    """``problem`` with control characters escaped: each problem stays one line."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], problem)


def format_validation_error(exc: ValidationError) -> list[str]:
    """One line per problem: ``field.path: reason``."""
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not str(p).startswith("function-after"))
        msg = err["msg"].removeprefix("Value error, ")
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, FieldError):
            # A check across sections: its path is where the problem is.
            problems.append(f"{field_path(loc) + '.' if loc else ''}{cause.path}: {cause.message}")
            continue
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        problems.append(f"{field_path(loc)}: {msg}")
    return problems


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML 1.2 forbids
    it; PyYAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                duplicate = key in seen
            except TypeError:
                continue  # an unhashable key: the constructor below reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

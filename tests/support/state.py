"""The config's ``state`` block for a store test's location, on either backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.core.backend import PostgresTarget


def state_block(where: Path | PostgresTarget) -> dict[str, Any]:
    """``state:`` for a daemon keeping its state at ``where`` (tests/conftest.py's
    ``state_location``): a SQLite file's path, or a PostgreSQL URL, password and schema."""
    if isinstance(where, PostgresTarget):
        return {"url": where.url, "password": where.password, "schema": where.schema}
    return {"path": str(where)}

"""Checks on the state database's path before SQLite opens it.

SQLite's own errors ("unable to open database file") name neither the path nor
the cause. These checks run first and say, in one line, which of the usual
mistakes it is: a directory, a kernel pseudo-filesystem, a missing or read-only
directory, a file that is not a database. See :class:`~exporter.core.errors.StartupError`
for the exit codes.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from exporter.core.errors import StartupError

FIELD = "state.path"
CONFIG, ENVIRONMENT = 2, 1
# Filesystems that hold no files of ours: writes there fail or vanish.
_PSEUDO = frozenset(
    {
        "proc",
        "sysfs",
        "devtmpfs",
        "devpts",
        "cgroup",
        "cgroup2",
        "debugfs",
        "securityfs",
        "tracefs",
        "configfs",
        "fusectl",
        "bpf",
        "pstore",
        "mqueue",
        "hugetlbfs",
    }
)


def filesystem_type(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> str | None:
    """The type of the filesystem ``path`` is on (longest mount point prefix), if known."""
    try:
        lines = mountinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    best, kind = "", None
    target = str(path)
    for line in lines:
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        mount = fields[4].replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, line.split(" - ", 1)[1].split()[0]
    return kind


def check_state_path(path: Path) -> None:
    """Raise StartupError unless ``path`` can be a writable SQLite file."""
    path = Path(os.path.abspath(path))
    if path.is_dir():
        raise StartupError(f"{FIELD}: {path} is a directory, not a database file", CONFIG)
    kind = filesystem_type(path.parent if not path.parent.exists() else path.parent.resolve())
    if kind in _PSEUDO:
        raise StartupError(
            f"{FIELD}: {path} is on the kernel's {kind} filesystem, not on a disk", CONFIG
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(
            f"{FIELD}: cannot create the directory {path.parent}: {_why(exc)}", ENVIRONMENT
        ) from None
    if path.exists() and not path.is_file():
        raise StartupError(f"{FIELD}: {path} is not a regular file", CONFIG)
    _probe_writable(path)


def _probe_writable(path: Path) -> None:
    # access() says yes to root on a read-only mount's files but not for EROFS, and
    # never for the WAL and shared-memory files SQLite creates beside the database:
    # so write a file there, as SQLite will.
    probe = path.parent / f".{path.name}.probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise StartupError(
            f"{FIELD}: cannot write in {path.parent}: {_why(exc)}", ENVIRONMENT
        ) from None
    os.close(fd)
    probe.unlink(missing_ok=True)
    if path.exists():
        try:
            os.close(os.open(path, os.O_RDWR))
        except OSError as exc:
            raise StartupError(f"{FIELD}: cannot write {path}: {_why(exc)}", ENVIRONMENT) from None


def _why(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "the file system is mounted read-only"
    return (exc.strerror or str(exc)).lower()


def unusable(path: str, exc: Exception) -> StartupError:
    """The one-line error for SQLite refusing the file at ``path``."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
        return StartupError(
            f"{FIELD}: {path} is not a SQLite database or is corrupt ({exc}); "
            "move it away to start afresh",
            ENVIRONMENT,
        )
    if name.startswith("SQLITE_READONLY"):
        return StartupError(f"{FIELD}: {path} is read-only ({exc})", ENVIRONMENT)
    return StartupError(f"{FIELD}: cannot open {path}: {exc}", ENVIRONMENT)

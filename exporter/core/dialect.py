"""SQLite's SQL, as the stores write it, rewritten for PostgreSQL.

The domains' stores and migrations are written once, in SQLite's dialect. The rewrites
here are the mechanical ones, made on tokens (string literals and quoted names are left
as they are), once per distinct statement (cached):

- ``?`` placeholders become ``%s`` (and every ``%``, in literals too, ``%%``), psycopg's style;
- ``INSERT OR IGNORE INTO`` becomes ``INSERT INTO ... ON CONFLICT DO NOTHING``;
- ``a IS NOT b`` / ``a IS b`` (b not NULL) become ``IS [NOT] DISTINCT FROM``;
- the scalar ``MAX(a, b)`` / ``MIN(a, b)`` become ``GREATEST`` / ``LEAST``, ``IFNULL`` is
  ``COALESCE``, ``json_object`` is ``json_build_object`` (as text), and
  ``date(x, 'unixepoch')`` is the UTC day of an epoch as ``YYYY-MM-DD``;
- types: ``REAL`` is ``DOUBLE PRECISION`` (PostgreSQL's ``REAL`` is 4 bytes), ``INTEGER``
  is ``BIGINT`` (epoch milliseconds and byte counts pass 2^31), ``BLOB`` is ``BYTEA``;
- a subquery in ``FROM`` gets the alias PostgreSQL requires, an empty ``IN ()`` list is
  an empty subquery;
- ``INDEXED BY name``, SQLite's planner hint, is dropped;
- a column named as a PostgreSQL reserved word (``window``) is quoted;
- a table SQLite gives a ``rowid`` (every one not declared ``WITHOUT ROWID``) gets a
  ``rowid`` identity column, so ``ORDER BY rowid`` and the backfills' rowid ranges keep
  their meaning: insertion order, unchanged by an update.

What is not mechanical (a boolean expression summed as an integer, say) is written for
each backend by the statement's owner (:class:`Dialects`).
"""

from __future__ import annotations

import re
from functools import lru_cache

_TOKEN = re.compile(
    r"""(?P<str>'(?:[^']|'')*')|(?P<ident>"(?:[^"]|"")*")|(?P<word>[A-Za-z_][A-Za-z_0-9]*)"""
    r"""|(?P<num>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)|(?P<space>\s+)|(?P<other>.)""",
    re.DOTALL,
)
_TYPES = {"REAL": "DOUBLE PRECISION", "INTEGER": "BIGINT", "BLOB": "BYTEA"}
_FUNCS = {"IFNULL": "COALESCE", "JSON_OBJECT": "json_build_object"}
# Column names SQLite allows that PostgreSQL reserves (our SQL never means the keyword).
_RESERVED = {"WINDOW": '"window"'}


class Dialects(str):
    """A migration written for each backend, where a mechanical rewrite of the SQLite text
    cannot do. It is the SQLite text (the one that shipped: never edit it); PostgreSQL runs
    ``postgresql`` (itself rewritten as any other statement)."""

    postgresql: str

    def __new__(cls, sqlite: str, postgresql: str) -> Dialects:
        made = super().__new__(cls, sqlite)
        made.postgresql = postgresql
        return made


def _tokens(sql: str) -> list[str]:
    return [m.group(0) for m in _TOKEN.finditer(sql)]


def _is_word(token: str, *words: str) -> bool:
    return token.upper() in words


def _next(tokens: list[str], i: int) -> int:
    """Index of the first non-space token at or after ``i`` (len(tokens) if none)."""
    while i < len(tokens) and tokens[i].isspace():
        i += 1
    return i


def _close(tokens: list[str], open_at: int) -> tuple[int, list[int]]:
    """Index of the parenthesis closing the one at ``open_at``, and its top-level commas."""
    depth, commas = 0, list[int]()
    for j in range(open_at, len(tokens)):
        if tokens[j] == "(":
            depth += 1
        elif tokens[j] == ")":
            depth -= 1
            if depth == 0:
                return j, commas
        elif tokens[j] == "," and depth == 1:
            commas.append(j)
    raise ValueError("unbalanced parentheses")


@lru_cache(maxsize=4096)
def to_postgres(sql: str) -> str:
    """``sql`` (SQLite's dialect, ``?`` placeholders) in PostgreSQL's, for psycopg."""
    tokens = _tokens(sql)
    tokens = _functions(tokens)
    tokens = _qualify_upsert(tokens)
    out: list[str] = []
    ignore = False
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        upper = tok.upper()
        if tok == "?":
            out.append("%s")
        elif "%" in tok:
            # psycopg reads every % of a statement, inside string literals too.
            out.append(tok.replace("%", "%%"))
        elif upper == "OR" and out and _last_word(out) == "INSERT":
            j = _next(tokens, i + 1)
            if _is_word(tokens[j], "IGNORE"):
                ignore = True
                i = _next(tokens, j + 1)  # INSERT's own space stays; OR IGNORE and theirs go
                continue
            out.append(tok)
        elif upper == "IS":
            j = _next(tokens, i + 1)
            if _is_word(tokens[j], "NOT"):
                k = _next(tokens, j + 1)
                if _is_word(tokens[k], "NULL", "TRUE", "FALSE"):
                    out.append(tok)
                else:
                    out.append("IS DISTINCT FROM")
                    i = j + 1
                    continue
            elif _is_word(tokens[j], "NULL", "TRUE", "FALSE", "DISTINCT"):
                out.append(tok)
            else:
                out.append("IS NOT DISTINCT FROM")
        elif upper == "INDEXED" and _is_word(tokens[_next(tokens, i + 1)], "BY"):
            # SQLite's planner hint; PostgreSQL's planner takes none (the index still exists).
            i = _next(tokens, _next(tokens, i + 1) + 1) + 1
            continue
        elif upper == "WITHOUT" and _is_word(tokens[_next(tokens, i + 1)], "ROWID"):
            i = _next(tokens, i + 1) + 1
            continue
        elif upper in _TYPES:
            out.append(_TYPES[upper])
        elif upper in _RESERVED:
            out.append(_RESERVED[upper])
        else:
            out.append(tok)
        i += 1
    text = "".join(out)
    if ignore:
        text = text.rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
    return text


def _last_word(out: list[str]) -> str:
    for tok in reversed(out):
        if not tok.isspace():
            return tok.upper()
    return ""


def _functions(tokens: list[str]) -> list[str]:
    """Rewrite the function calls PostgreSQL spells otherwise (innermost first)."""
    i = len(tokens) - 1
    while i >= 0:
        upper = tokens[i].upper()
        j = _next(tokens, i + 1)
        if j < len(tokens) and tokens[j] == "(" and upper in {"MAX", "MIN", "DATE", *_FUNCS}:
            end, commas = _close(tokens, j)
            if upper in _FUNCS:
                tokens[i] = _FUNCS[upper]
                if upper == "JSON_OBJECT":
                    tokens[end] = ")::text"
            elif upper in {"MAX", "MIN"} and commas:
                tokens[i] = "GREATEST" if upper == "MAX" else "LEAST"
            elif upper == "DATE" and len(commas) == 1:
                modifier = "".join(tokens[commas[0] + 1 : end]).strip()
                if modifier.lower() != "'unixepoch'":
                    raise ValueError(f"date() modifier {modifier} has no PostgreSQL rewrite")
                tokens[i : end + 1] = [
                    "to_char(to_timestamp(",
                    *tokens[j + 1 : commas[0]],
                    ") AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
                ]
        elif (
            tokens[i] == "("
            and _is_word(_previous(tokens, i), "IN")
            and (tokens[_next(tokens, i + 1)] == ")")
        ):
            # SQLite's empty list; PostgreSQL's is an empty subquery (NOT IN it is true).
            tokens.insert(i + 1, "SELECT NULL WHERE false")
        elif (
            tokens[i] == "("
            and _is_word(_previous(tokens, i), "FROM", "JOIN")
            and _is_word(tokens[_next(tokens, i + 1)], "SELECT")
        ):
            end, _ = _close(tokens, i)
            k = _next(tokens, end + 1)
            after = tokens[k] if k < len(tokens) else ""
            if not _WORD.fullmatch(after) or after.upper() in _CLAUSES:
                tokens.insert(end + 1, " AS _sub")
        i -= 1
    return tokens


_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
# What may follow a subquery in FROM that is not its alias.
_CLAUSES = frozenset(
    [
        "WHERE",
        "GROUP",
        "ORDER",
        "LIMIT",
        "OFFSET",
        "UNION",
        "EXCEPT",
        "INTERSECT",
        "JOIN",
        "LEFT",
        "INNER",
        "CROSS",
        "ON",
        "HAVING",
    ]
)


def _previous(tokens: list[str], i: int) -> str:
    j = i - 1
    while j >= 0 and tokens[j].isspace():
        j -= 1
    return tokens[j] if j >= 0 else ""


_CREATE = re.compile(r"^(\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?[A-Za-z_0-9]+\s*\()", re.I)


def to_postgres_ddl(sql: str) -> str:
    """A migration statement for PostgreSQL: :func:`to_postgres`, and a ``CREATE TABLE``
    of a table with a rowid in SQLite gets a ``rowid`` identity column."""
    rowid = bool(_CREATE.match(sql)) and not re.search(r"\bWITHOUT\s+ROWID\b", sql, re.I)
    text = to_postgres(sql)
    if rowid:
        text = _CREATE.sub(
            lambda m: m.group(1) + " rowid BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE,",
            text,
            count=1,
        )
    return text


# Words of an upsert's SET and WHERE that are not column names.
_KEYWORDS = frozenset(
    [
        "AND",
        "OR",
        "NOT",
        "NULL",
        "IS",
        "DISTINCT",
        "FROM",
        "CASE",
        "WHEN",
        "THEN",
        "ELSE",
        "END",
        "IN",
        "EXCLUDED",
        "WHERE",
        "TRUE",
        "FALSE",
        "LIKE",
        "BETWEEN",
        "CAST",
        "AS",
    ]
)


def _qualify_upsert(tokens: list[str]) -> list[str]:
    """In ``ON CONFLICT ... DO UPDATE SET a = a + excluded.a``, SQLite reads the bare ``a`` on
    the right as the stored row's; PostgreSQL calls it ambiguous: qualify it with the table."""
    words = [(k, t.upper()) for k, t in enumerate(tokens) if not t.isspace()]
    table = ""
    for n, (k, word) in enumerate(words):
        if word == "INTO" and n + 1 < len(words) and not table:
            table = tokens[words[n + 1][0]]
        if word == "SET" and n >= 2 and words[n - 1][1] == "UPDATE" and words[n - 2][1] == "DO":
            start = k + 1
            break
    else:
        return tokens
    out = tokens[:start]
    target = True  # at a SET item's column, left of its "="
    depth = 0
    for k in range(start, len(tokens)):
        tok = tokens[k]
        if tok.upper() == "RETURNING" and depth == 0:
            return out + tokens[k:]
        if tok == "(":
            depth += 1
        elif tok == ")":
            depth -= 1
        elif tok == "," and depth == 0:
            target = True
        elif (tok == "=" and target) or (tok.upper() == "WHERE" and depth == 0):
            target = False
        elif (
            not target
            and _WORD.fullmatch(tok)
            and tok.upper() not in _KEYWORDS
            and _previous(tokens, k) != "."
            and (tokens[_next(tokens, k + 1)] if _next(tokens, k + 1) < len(tokens) else "")
            not in {".", "("}
        ):
            out.append(f"{table}.{tok}")
            continue
        out.append(tok)
    return out

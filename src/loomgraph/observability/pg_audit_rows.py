"""The audit log's PostgreSQL rows: their columns, the append lock, what a row cannot
hold, and whether a row's query columns still say what its hashed line says."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from loomgraph.protocols.json_values import same_json

from .audit_chain import AuditEntry

__all__ = ["COLUMNS", "LOCK_SQL", "column_problem", "unstorable"]

# Columns besides `line` duplicate the entry so it can be queried; `line` is the exact
# canonical text that was hashed, so verification never depends on how PostgreSQL
# normalises jsonb or floats.
COLUMNS = ("seq", "time", "run_id", "user_id", "actor", "action", "payload", "prev_hash", "hash")

# Takes the append lock and says whether the table exists ($1: the quoted name, $2: its
# schema when given, $3: the table's own name). The lock is keyed on the table as the
# server resolves the name, schema included (for a table not made yet, where CREATE TABLE
# will put it: the given schema, else the first on the search path), so `audit` found on
# the search path and `schema.audit` share one lock. The key is the first 8 bytes of
# SHA-256("loomgraph.audit:schema.table"), as earlier versions derived it from a
# schema-qualified name.
LOCK_SQL = """
SELECT pg_advisory_xact_lock(
    ('x' || left(encode(sha256(convert_to('loomgraph.audit:' || name, 'UTF8')), 'hex'), 16))
    ::bit(64)::bigint
), present
FROM (
    SELECT coalesce(
        (SELECT n.nspname || '.' || c.relname
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.oid = to_regclass($1)),
        coalesce($2, current_schema()) || '.' || $3
    ) AS name,
    to_regclass($1) IS NOT NULL AS present
) AS resolved
"""


def unstorable(fields: Mapping[str, str | None], payload: dict[str, Any]) -> str | None:
    """What in an entry PostgreSQL cannot store (text holds no NUL, jsonb no NaN or
    Infinity), or None."""
    for name, value in fields.items():
        if value is not None and "\x00" in str(value):
            return f"{name} contains a NUL character (\\u0000), which text cannot hold"
    stack: list[tuple[str, Any]] = [("payload", payload)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str) and "\x00" in value:
            return f"{path} contains a NUL character (\\u0000), which jsonb cannot hold"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{path} is {value}, which jsonb cannot hold (store it as a string)"
        if isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    return f"a key in {path} contains a NUL character (\\u0000)"
                stack.append((f"{path}[{key!r}]", item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    return None


def column_problem(row: Any, entry: AuditEntry) -> str | None:
    """Which query column disagrees with the hashed line, if any."""
    for name in COLUMNS:
        if name == "payload":
            line = _exact(row["line"])
            same = isinstance(line, dict) and same_json(_exact(row["payload"]), line["payload"])
        else:
            same = row[name] == entry[name]  # type: ignore[literal-required]  # from COLUMNS
        if not same:
            return f"column {name!r} of entry {entry['seq']} differs from the hashed entry (edited)"
    return None


def _exact(text: str) -> Any:
    """JSON text with every number as the Decimal it spells. jsonb keeps a number as an
    exact decimal (the float 1e23 reads back as 100000000000000000000000): reading both the
    column and the hashed line this way compares numbers by value, however spelt."""
    try:
        return json.loads(text, parse_float=Decimal, parse_int=Decimal)
    except (ValueError, RecursionError):
        return None  # the line parsed already: a column that does not is not the same

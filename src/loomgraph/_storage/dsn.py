"""Postgres connection strings, as error messages show them: never with the password.

Shared by every Postgres backend (journal, memory, ledger, audit log), which must not import
one another.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit


def describe_dsn(dsn: str) -> str:
    """A DSN without its password, for error messages."""
    url = urlsplit(dsn)
    if not url.scheme:
        return "<not a postgres:// URL>"
    user, _, host = url.netloc.rpartition("@")  # host[:port] exactly as written
    user = user.partition(":")[0]
    socket = parse_qs(url.query).get("host", [""])[0]
    where = host or (f"localhost ({socket})" if socket else "localhost")
    return f"{url.scheme}://{user + '@' if user else ''}{where}{url.path}"


def database_of(dsn: str) -> str:
    """The database a DSN names ("" for the server's default: the user's)."""
    url = urlsplit(dsn)
    return url.path.lstrip("/") or parse_qs(url.query).get("dbname", [""])[0]


def describe_schema(dsn: str, schema: str) -> str:
    """A Postgres backend's tables as error messages name them: server (no password), schema."""
    return f"{describe_dsn(dsn)} (schema {schema!r})"

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


def describe_schema(dsn: str, schema: str) -> str:
    """A Postgres backend's tables as error messages name them: server (no password), schema."""
    return f"{describe_dsn(dsn)} (schema {schema!r})"


def dsn_problem(dsn: str) -> str | None:
    """Why `dsn` names no Postgres database to connect to, or None when it names one. A DSN
    that names nothing (`postgres:`, `postgres://`) would connect wherever libpq's defaults
    and the `PG*` variables point, which nobody chose: it is refused, not guessed."""
    scheme, _, rest = dsn.partition(":")
    url_form = "postgres://USER@HOST[:PORT]/DB"
    if scheme not in ("postgres", "postgresql") or not rest.startswith("//"):
        # Only the scheme is quoted back: the rest may hold a password.
        what = "names no database" if not rest.strip() else "is not a postgres:// URL"
        return f"{scheme}:{'…' if rest else ''} {what}: write {url_form}"
    url = urlsplit(dsn)
    if url.netloc or url.path.strip("/") or url.query:
        return None
    return (
        f"{dsn} names no database: write {url_form} (an empty one would connect wherever "
        "libpq's defaults point)"
    )


def backend_spec_problem(spec: str) -> str | None:
    """Why a backend's text spec (`--runtime`, `runtime=`, `memory=`) names nothing to open,
    or None: empty, `sqlite:` without a path, or a Postgres DSN naming no database."""
    if not spec.strip():
        return "empty: give sqlite:PATH, postgres://… or memory"
    if spec.strip() == "sqlite:":
        return "sqlite: names no file: give sqlite:PATH"
    if spec.startswith(("postgres:", "postgresql:")):
        return dsn_problem(spec)
    return None

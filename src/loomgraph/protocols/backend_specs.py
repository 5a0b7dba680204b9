"""Backend specs: the one grammar of `runtime=`, `memory=`, `--runtime` and an agent file's
`runtime:`/`memory:`, and the checks the SQL backends' constructors make of a DSN or a path.

Here, the lowest layer that both their readers (authoring, agent, cli) and the backends
(runtime, memory) may import, so every one of them refuses alike, with one message.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "SPEC_FORMS",
    "backend_scheme",
    "backend_spec_problem",
    "dsn_problem",
    "split_schema",
    "sqlite_path",
    "sqlite_path_problem",
]

# The forms a backend's text spec takes, as every refusal names them.
_POSTGRES_URL = "postgres://USER@HOST[:PORT]/DB[?schema=NAME]"
SPEC_FORMS = f"memory, sqlite:PATH or {_POSTGRES_URL}"
_POSTGRES = ("postgres", "postgresql")


def backend_scheme(spec: str) -> str | None:
    """The backend a text spec is written for, `memory`, `sqlite` or `postgres`, whether or
    not it names something to open (`sqlite`, `postgres:` too); None for any other form."""
    scheme = spec.partition(":")[0]
    if spec == "memory":
        return "memory"
    if scheme == "sqlite":
        return "sqlite"
    return "postgres" if scheme in _POSTGRES else None


def backend_spec_problem(spec: str) -> str | None:
    """Why a backend's text spec (`runtime=`, `memory=`, `--runtime`, an agent file's
    `runtime:` and `memory:`) names nothing loomgraph opens, or None: the one check of them
    all, made before anything connects or a file is made."""
    scheme = backend_scheme(spec)
    if not spec.strip():
        return f"is empty: write {SPEC_FORMS}"
    if scheme == "memory":
        return None
    if scheme == "sqlite":
        return _sqlite_problem(spec)
    if scheme == "postgres":
        if ":" not in spec:  # the bare word: libpq's defaults would pick the database
            return f"{spec!r} names no database: write {_POSTGRES_URL}"
        try:
            dsn, _ = split_schema(spec)
        except ValueError as err:
            return str(err)
        return dsn_problem(dsn)
    # Only a scheme is quoted back: the rest of an unknown URL may hold a password.
    shown = f"{spec.partition(':')[0]}:…" if ":" in spec else spec
    return f"{shown!r} is no backend spec: write {SPEC_FORMS}"


def sqlite_path(path: object, backend: str) -> str:
    """An SQLite backend's `path` as text: a str or a path object; a TypeError naming
    `backend`'s `path` for anything else (bytes included: the file would be named by its
    repr)."""
    if isinstance(path, str | os.PathLike):
        text = os.fspath(path)
        if isinstance(text, str):
            return text
    raise TypeError(f"{backend}(path) must be a str or a path, not {type(path).__name__}: {path!r}")


def sqlite_path_problem(path: str) -> str | None:
    """Why the path of an SQLite backend (`SqliteRuntime(path)`, `sqlite:PATH`'s) names no
    file, or None: empty, blank, or only slashes (`/` is a folder)."""
    return None if path.strip().strip("/") else _no_file(f"sqlite:{path}")


def _no_file(spec: str) -> str:
    return f"{spec!r} names no file: write sqlite:PATH (e.g. sqlite:./journal.db)"


def _sqlite_problem(spec: str) -> str | None:
    """Why an `sqlite…` spec names no file, or None: `sqlite`, `sqlite:` (no path) and a URL's
    `sqlite://…`, which `sqlite:PATH` would open at the filesystem's root."""
    path = spec.partition(":")[2]
    if sqlite_path_problem(path) is not None:
        return _no_file(spec)  # `sqlite` as written, not as `sqlite:`
    if path.startswith("//"):
        # `sqlite:PATH` takes a path, never a URL: `//name` is `/name`, where nobody meant
        # it, and SQLAlchemy's `sqlite:///name` is the relative `name`. Both readings are
        # named; neither is guessed.
        name = path.lstrip("/")
        return (
            f"{spec!r} is a URL, not sqlite:PATH: its path would be read as /{name}, from the "
            f"filesystem's root; write sqlite:./{name} (relative to the current folder) or "
            f"sqlite:/{name} (an absolute path, one slash)"
        )
    return None


def dsn_problem(dsn: str) -> str | None:
    """Why `dsn` names no Postgres database to connect to, or None when it names one. A DSN
    that names nothing (``, `postgres:`, `postgres://`) would connect wherever libpq's
    defaults and the `PG*` variables point, which nobody chose: it is refused, not guessed."""
    if not dsn.strip():
        return f"is empty: write {_POSTGRES_URL}"
    scheme, _, rest = dsn.partition(":")
    if scheme not in _POSTGRES or not rest.startswith("//"):
        # Only the scheme is quoted back: the rest may hold a password.
        what = "names no database" if not rest.strip() else "is not a postgres:// URL"
        return f"{scheme}:{'…' if rest else ''} {what}: write {_POSTGRES_URL}"
    url = urlsplit(dsn)
    if url.netloc or url.path.strip("/") or url.query:
        return None
    return (
        f"{dsn} names no database: write {_POSTGRES_URL} (an empty one would connect wherever "
        "libpq's defaults point)"
    )


def split_schema(spec: str) -> tuple[str, str | None]:
    """A Postgres spec's DSN without its `schema` parameter, and the schema it names (None:
    not given, the backend's default `public`). The parameter is loomgraph's, not libpq's:
    the server would refuse it as a setting, so it never reaches the connection. ValueError
    for a schema given empty, twice, or holding NUL."""
    url = urlsplit(spec)
    if "schema" not in url.query:  # the common case: nothing to take apart
        return spec, None
    params = parse_qsl(url.query, keep_blank_values=True)
    named = [value for key, value in params if key == "schema"]
    if not named:
        return spec, None
    if len(named) > 1:
        raise ValueError(f"names its schema {len(named)} times (?schema=…): give it once")
    if not named[0].strip() or "\x00" in named[0]:
        raise ValueError("names an empty schema (?schema=): write ?schema=NAME, or leave it out")
    rest = urlencode([(key, value) for key, value in params if key != "schema"])
    return urlunsplit(url._replace(query=rest)), named[0]

"""Backend specs a user writes (`runtime=`, `memory=`, `--runtime`): one naming no database
is refused, never taken as libpq's defaults or the filesystem's root (found by a probe;
each test failed before its fix). libpq's defaults point at a closed loopback port."""

from __future__ import annotations

from pathlib import Path

import pytest

from loomgraph import Agent
from loomgraph.agent.config_errors import ConfigError
from loomgraph.errors import LoomgraphError

# --- 1. A backend spec naming no database is taken as libpq's defaults ------------------
from shell_command import closed_port, loomgraph


def test_runtime_postgres_without_a_dsn_is_refused_by_the_agent() -> None:
    """A user writes `Agent(..., runtime="postgres")`, as the agent file's error message
    (`use memory, sqlite:PATH or postgres://…`) suggests the scheme. docs/runtime.md says a
    spec naming no database is a `ConfigError` where the Agent is built, because libpq would
    connect wherever its defaults point; an agent file refuses `runtime: postgres`. The Agent
    accepts "postgres" and builds a `PostgresRuntime("")` that journals every run into the
    default database of the OS user (`_split_spec` in agent/deps.py only checks specs that
    start with `postgres:`). It should be the ConfigError naming the
    `postgres://USER@HOST[:PORT]/DB` form."""
    with pytest.raises(LoomgraphError, match=r"postgres://USER@HOST"):
        Agent("x", model="echo", runtime="postgres")


def test_memory_postgres_without_a_dsn_is_refused_by_the_agent() -> None:
    """`Agent(..., memory="postgres")`: every user's facts and episodes would be written to
    the default database of the OS user through libpq's defaults. docs/runtime.md says the
    same rule holds for `memory=` as for `runtime=`: a ConfigError naming the DSN form."""
    with pytest.raises(LoomgraphError, match=r"postgres://USER@HOST"):
        Agent("x", model="echo", memory="postgres")


def test_cli_runtime_postgres_without_a_dsn_is_a_usage_error(tmp_path: Path) -> None:
    """`loomgraph runs list --runtime postgres`: docs/cli.md says a DSN that names nothing is
    a usage error naming the option, exit 2, *before anything connects*. The command
    connects to libpq's defaults instead (here pointed at a closed loopback port, so it ends
    with `journal '' is unavailable`, which names neither the option nor the fix; with a
    local server it lists, or writes, the runs of whatever database libpq picks)."""
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(closed_port()), "PGCONNECT_TIMEOUT": "2"}
    proc = loomgraph("runs", "list", "--runtime", "postgres", cwd=tmp_path, env=env)
    assert proc.returncode == 2
    assert "--runtime" in proc.stderr and "postgres://USER@HOST" in proc.stderr, proc.stderr


def test_runtime_sqlite_without_a_path_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Agent(..., runtime="sqlite")` (or `--runtime sqlite`): the user forgot `:PATH`. The
    agent file says `use memory, sqlite:PATH or postgres://…`; the Agent builds a
    `SqliteRuntime("")` and the first run raises `journal '' is unavailable: cannot switch to
    WAL mode (delete)`, which says nothing of the missing path. `sqlite:` is refused with
    `give sqlite:PATH` (dsn.backend_spec_problem); `sqlite` should be too, at construction."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LoomgraphError, match=r"sqlite:PATH"):
        Agent("x", model="echo", runtime="sqlite")


def test_sqlite_url_with_slashes_does_not_write_at_the_filesystem_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user used to SQLAlchemy URLs writes `runtime="sqlite://journal.db"`. loomgraph reads
    the path as `//journal.db`, i.e. `/journal.db`: the journal goes to the root of the
    filesystem (as root, silently; as anyone else, a permission error about `/`), never to
    the file the user meant. A spec with `//` after `sqlite:` has no meaning in loomgraph's
    `sqlite:PATH` form and should be refused naming it, not opened at `/`."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LoomgraphError, match=r"sqlite:PATH|sqlite:\./"):
        Agent("x", model="echo", runtime="sqlite://journal.db")


# --- One rule for every spec, wherever it is read -----------------------------------------

NAMING_NOTHING = [
    "",
    "  ",
    "sqlite",
    "sqlite:",
    "sqlite:/",
    "sqlite:///",
    "postgres",
    "postgresql",
    "postgres:",
    "postgres://",
    "postgresql:///",
]
# A URL after `sqlite:`: `sqlite:PATH` would read `//x` as `/x`, SQLAlchemy `sqlite:///x` as `x`.
SQLITE_URLS = ["sqlite://journal.db", "sqlite:///journal.db", "sqlite:////srv/journal.db"]


@pytest.mark.parametrize("spec", NAMING_NOTHING + SQLITE_URLS + ["bogus", "mysql://u:pw@h/db"])
@pytest.mark.parametrize("what", ["runtime", "memory"])
def test_every_spec_naming_nothing_is_refused_alike_by_runtime_and_memory(
    spec: str, what: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`runtime=` and `memory=` share one check: a ConfigError that names the keyword and
    says what to write, before any backend is made."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.setenv("PGPORT", str(closed_port()))
    with pytest.raises(ConfigError) as refused:
        Agent("x", model="echo", **{what: spec})  # type: ignore[arg-type]
    said = str(refused.value)
    assert said.startswith(what) and "write" in said, said
    assert ":pw@" not in said  # an unknown URL's password is never quoted back


@pytest.mark.parametrize("spec", SQLITE_URLS)
def test_a_sqlite_url_is_refused_naming_both_readings_of_its_path(spec: str) -> None:
    """The refusal says what `sqlite:PATH` would have made of the URL (a path from the
    filesystem's root) and gives both spellings, relative and absolute: the user picks, the
    spec is never guessed."""
    with pytest.raises(ConfigError) as refused:
        Agent("x", model="echo", runtime=spec)
    said, name = str(refused.value), spec.partition(":")[2].lstrip("/")
    assert f"/{name}" in said and f"sqlite:./{name}" in said and f"sqlite:/{name} " in said


async def test_sqlite_paths_relative_and_absolute_open_where_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the grammar keeps: `sqlite:./x` and `sqlite:x` are relative to the current
    folder, `sqlite:/abs/x` (one slash) is the absolute path; a run journals there."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    absolute = tmp_path / "abs.db"
    for spec, where in [
        ("sqlite:./dot.db", tmp_path / "cwd" / "dot.db"),
        ("sqlite:bare.db", tmp_path / "cwd" / "bare.db"),
        (f"sqlite:{absolute}", absolute),
    ]:
        agent = Agent("x", model="echo", runtime=spec)
        try:
            await agent.run("hi")
        finally:
            await agent.aclose()
        assert where.is_file(), spec


@pytest.mark.parametrize("spec", ["postgres://postgres@127.0.0.1/test", "postgresql:///test"])
def test_a_dsn_naming_a_database_is_taken(spec: str) -> None:
    """A DSN that names a server or a database is taken (it connects at first use)."""
    agent = Agent("x", model="echo", runtime=spec)
    assert type(agent.deps.runtime).__name__ == "PostgresRuntime"


def test_cli_runtime_sqlite_url_and_unknown_url_are_usage_errors(tmp_path: Path) -> None:
    """`--runtime` uses the same check: a SQLite URL and an unknown URL are exit 2 naming
    the option, with the fix and without the password."""
    proc = loomgraph("runs", "list", "--runtime", "sqlite://journal.db", cwd=tmp_path)
    assert proc.returncode == 2 and "argument --runtime" in proc.stderr, proc.stderr
    assert "sqlite:./journal.db" in proc.stderr
    proc = loomgraph("runs", "list", "--runtime", "mysql://u:hunter2@h/db", cwd=tmp_path)
    assert proc.returncode == 2 and "argument --runtime" in proc.stderr, proc.stderr
    assert "hunter2" not in proc.stderr and "sqlite:PATH" in proc.stderr


AGENT_FILE = """\
schema_version: 1
name: a
model: echo
runtime: {runtime}
memory: postgres
"""


@pytest.mark.parametrize(
    ("runtime", "said"),
    [('"sqlite:"', "sqlite:PATH"), ("sqlite://j.db", "sqlite:./j.db"), ("postgres", "USER@HOST")],
)
def test_an_agent_file_refuses_a_spec_naming_nothing_at_its_line(
    tmp_path: Path, runtime: str, said: str
) -> None:
    """An agent file's `runtime:` and `memory:` get the same check, at load, at their lines:
    `sqlite:` was joined to the file's folder (a journal opened on a directory), `sqlite://x`
    kept as `/x`, and `memory: postgres` was refused without the DSN form to write."""
    (tmp_path / "a.yaml").write_text(AGENT_FILE.format(runtime=runtime), encoding="utf-8")
    proc = loomgraph("validate", "a.yaml", cwd=tmp_path)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "a.yaml:4: [schema] runtime: " in out and said in out, out
    assert "a.yaml:5: [schema] memory: 'postgres' names no database" in out, out
    assert "postgres://USER@HOST" in out
    proc = loomgraph("runs", "list", "-a", "a.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and said in proc.stderr, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["a.yaml"]  # no journal made anywhere


def test_open_journal_checks_the_spec_before_looking_for_its_file() -> None:
    """The CLI's `open_journal` (what `--runtime` and an agent file's journal reach) says
    what is wrong with the spec, not `no journal at '//journal.db'`."""
    from loomgraph.cli.journal import UsageError, open_journal

    with pytest.raises(UsageError, match=r"sqlite:\./journal\.db"):
        open_journal("sqlite://journal.db")


@pytest.mark.parametrize("path", [5, None, b"journal.db", ["j.db"]])
def test_an_sqlite_backend_of_a_path_of_another_type_is_a_type_error_naming_path(
    path: object,
) -> None:
    # "expected str, bytes or os.PathLike object, not int" named no argument.
    from loomgraph.memory.sqlite import SqliteMemory
    from loomgraph.runtime.sqlite import SqliteRuntime

    for backend in (SqliteRuntime, SqliteMemory):
        with pytest.raises(
            TypeError, match=rf"{backend.__name__}\(path\) must be .*{type(path).__name__}"
        ):
            backend(path)  # type: ignore[arg-type]

"""`serve` says the address it really listens on, and a command that needs a journal finds
one there before anything is written: SQLite and Postgres alike (docs/cli.md)."""

from __future__ import annotations

import re
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import test_cli_s32
from loomgraph.cli.main import build_parser
from pipe_output import Output
from serve_process import free_port
from test_cli_terminal import environ

database = test_cli_s32.database  # a fresh Postgres database, dropped afterwards
CLI = [sys.executable, "-m", "loomgraph.cli.main"]
AGENT_FILE = "schema_version: 1\nname: ok\nmodel: echo\nruntime: sqlite:./j.db\n"


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=60)


def _listens(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=10):
            return True
    except OSError:
        return False


def _loomgraph(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, cwd=cwd, env=environ(), timeout=120
    )


# --------------------------------------------------------------------------- serve --port


def test_serve_on_port_0_says_the_port_the_system_chose(tmp_path: Path) -> None:
    """`--port 0` lets the OS choose; "serving on" names that port, which answers."""
    (tmp_path / "ok.yaml").write_text(AGENT_FILE)
    proc = subprocess.Popen(
        [*CLI, "serve", "--agent", "ok.yaml", "--port", "0", "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=environ(),
    )
    try:
        assert proc.stderr is not None
        said = Output(proc.stderr).wait_for("(viewer at /ui)", 120)
        found = re.search(r"serving on http://([\d.]+):(\d+) \(viewer at /ui\)", said)
        assert found is not None, said
        host, port = found.group(1), int(found.group(2))
        assert host == "127.0.0.1" and 0 < port < 65536, said
        assert _listens(host, port), f"nothing listens on the port said: {said}"
    finally:
        _stop(proc)


@pytest.mark.parametrize("port", ["beyond 65535", "65536", "-1", "99999999999", "eighty"])
def test_serve_refuses_a_port_outside_0_to_65535(tmp_path: Path, port: str) -> None:
    """A port no socket can have is a usage error naming it (exit 2), before anything
    starts; it is never taken modulo 65536."""
    (tmp_path / "ok.yaml").write_text(AGENT_FILE)
    given_port = str(free_port() + 65536) if port == "beyond 65535" else port
    done = _loomgraph(tmp_path, "serve", "--agent", "ok.yaml", "--port", given_port)
    assert done.returncode == 2, done.stderr
    assert "--port" in done.stderr and repr(given_port) in done.stderr, done.stderr
    assert "0 to 65535" in done.stderr or "not a number" in done.stderr, done.stderr
    assert "serving on" not in done.stderr
    assert not (tmp_path / "j.db").exists(), "the agent's journal was opened"


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(2**40), max_value=2**40))
def test_serve_accepts_exactly_the_ports_a_socket_can_have(port: int) -> None:
    """Invariant: `serve --port N` parses iff 0 <= N <= 65535, and then as N itself."""
    parser = build_parser()
    argv = ["serve", "--agent", "ok.yaml", "--port", str(port)]
    if 0 <= port <= 65535:
        assert parser.parse_args(argv).port == port
    else:
        with pytest.raises(SystemExit) as refused:
            parser.parse_args(argv)
        assert refused.value.code == 2


# --------------------------------------------------------------------------- no journal there


def _tables(dsn: str) -> list[str]:
    rows = test_cli_s32._sql(
        dsn,
        "SELECT table_schema || '.' || table_name AS name FROM information_schema.tables "
        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    return sorted(str(row["name"]) for row in rows)


READERS = [
    ["runs", "list"],
    ["runs", "pending"],
    ["runs", "show", "r-1"],
    ["runs", "diff", "r-1", "0", "1"],
    ["render", "--run", "r-1", "-o", "out.dot"],
]


@pytest.mark.postgres
@pytest.mark.parametrize("command", READERS, ids=" ".join)
def test_a_command_on_a_postgres_database_without_a_journal_creates_nothing(
    tmp_path: Path, database: str, command: list[str]
) -> None:
    """A database that holds no journal (a typo naming the application's own database) is
    refused as a missing SQLite file is: exit 2, "no journal in …", and no table made."""
    test_cli_s32._sql(database, "CREATE TABLE app_users (id int)")  # the application's own
    done = _loomgraph(tmp_path, *command, "--runtime", database)
    assert _tables(database) == ["public.app_users"], done.stderr
    assert done.returncode == 2, done.stderr
    assert "no journal in" in done.stderr and "schema 'public'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.postgres
def test_runs_list_on_postgres_reads_a_journal_once_there_is_one(
    tmp_path: Path, database: str
) -> None:
    """Refused while the database holds no journal; once `run` made one, listed as before."""
    refused = _loomgraph(tmp_path, "runs", "list", "--runtime", database)
    assert refused.returncode == 2 and "no journal in" in refused.stderr, refused.stderr
    made = _loomgraph(tmp_path, "run", "hi", "--model", "echo", "--runtime", database, "--json")
    assert made.returncode == 0, made.stderr
    listed = _loomgraph(tmp_path, "runs", "list", "--runtime", database, "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 1, listed.stdout


def _sqlite_tables(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return sorted(str(name) for (name,) in rows)


@pytest.mark.parametrize("command", READERS, ids=" ".join)
def test_a_command_on_an_sqlite_file_without_a_journal_creates_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    """An SQLite file that is another database (or empty) holds no journal: refused, and
    the file is left as it was."""
    app = tmp_path / "app.db"
    with sqlite3.connect(app) as conn:
        conn.execute("CREATE TABLE app_users (id INTEGER)")
    conn.close()
    before = app.read_bytes()
    done = _loomgraph(tmp_path, *command, "--runtime", f"sqlite:{app}")
    assert _sqlite_tables(app) == ["app_users"], done.stderr
    assert app.read_bytes() == before
    assert done.returncode == 2, done.stderr
    assert f"no journal in {str(app)!r}" in done.stderr, done.stderr


def test_an_empty_file_is_no_journal_and_a_damaged_one_still_damaged(tmp_path: Path) -> None:
    """A file of no bytes (`touch journal.db`) is refused and stays empty; the check leaves
    a file that is no database to the journal's own error ("damaged")."""
    empty = tmp_path / "journal.db"
    empty.touch()
    done = _loomgraph(tmp_path, "runs", "list", "--runtime", "sqlite:journal.db")
    assert done.returncode == 2 and "no journal in 'journal.db'" in done.stderr, done.stderr
    assert empty.stat().st_size == 0
    (tmp_path / "notes.db").write_text("not a database, but text " * 10)
    damaged = _loomgraph(tmp_path, "runs", "list", "--runtime", "sqlite:notes.db")
    assert damaged.returncode == 2 and "is damaged" in damaged.stderr, damaged.stderr


@pytest.mark.postgres
def test_runs_cancel_on_an_agent_whose_postgres_database_holds_no_journal_creates_nothing(
    tmp_path: Path, database: str
) -> None:
    """`runs cancel` needs the run's journal: an agent file naming a database without one
    is refused (exit 2, "no journal in …") before any table is made there."""
    (tmp_path / "pg.yaml").write_text(
        f"schema_version: 1\nname: ok\nmodel: echo\nruntime: {database}\n"
    )
    done = _loomgraph(tmp_path, "runs", "cancel", "r-1", "-a", "pg.yaml")
    assert _tables(database) == [], done.stderr
    assert done.returncode == 2 and "no journal in" in done.stderr, done.stderr


def test_mcp_serve_refuses_an_http_port_outside_0_to_65535(tmp_path: Path) -> None:
    """`mcp-serve --http` takes the same ports as `serve --port`: one over 65535 is a usage
    error naming it, not a socket on the port modulo 65536."""
    (tmp_path / "ok.yaml").write_text(AGENT_FILE)
    given_port = str(free_port() + 65536)
    done = _loomgraph(tmp_path, "mcp-serve", "--agent", "ok.yaml", "--http", given_port)
    assert done.returncode == 2, done.stderr
    assert "--http" in done.stderr and repr(given_port) in done.stderr, done.stderr

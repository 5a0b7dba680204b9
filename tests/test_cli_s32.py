"""Three things an operator met on the command line:

- `runs show` of a run still queued in the fleet showed `"input": ""`: the prompt is in the
  queue's job, not in the journal yet. It now shows no state, and says the run is queued and
  its input held by the queue (with the run's job).
- `--runtime postgres:` (a DSN that names nothing) connected wherever libpq's defaults and
  `PG*` variables point. It is a usage error naming the option, before anything connects.
- `runs show --graph FILE` (and `runs diff`) of a run of another graph rebuilt its state with
  that graph's fields, with only a warning. It is refused, naming both graphs, unless
  `--any-graph` asks for it.

The command's `main` in this process, or a real subprocess; real SQLite files and a real
Postgres server (a database of the test's own: the command line reaches a journal's default
schema only)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

import pg
from loomgraph.cli.main import main

ROOT = Path(__file__).parent.parent
OTHER = """
name: other
state:
  note: {type: str, default: ""}
entry: jot
nodes:
  jot: {kind: function, call: "other_fns:jot", writes: [note]}
edges:
  - {from: jot, to: END}
"""


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """`loomgraph ARGS…` in this process, in tmp_path: (exit code, stdout, stderr); a usage
    error argparse reports is exit code 2 too."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NO_COLOR", "1")

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main(list(args))
        except SystemExit as stop:
            code = int(stop.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def _sql(dsn: str, statement: str) -> Any:
    import asyncpg

    async def run() -> Any:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return await conn.fetch(statement)
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database of this test's own: its DSN (dropped afterwards)."""
    base = pg.require_postgres()
    name = pg.unique_name("loomcli")
    _sql(base, f"CREATE DATABASE {name}")
    url = urlsplit(base)
    try:
        yield urlunsplit((url.scheme, url.netloc, f"/{name}", "", ""))
    finally:
        _sql(base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# --------------------------------------------------------------------------- a queued run


@pytest.mark.postgres
def test_runs_show_of_a_queued_run_says_its_input_is_held_by_the_queue(
    cli: Any, database: str
) -> None:
    from loomgraph import Agent

    async def submit() -> str:
        agent = Agent("Be brief.", model="echo", runtime=database, name="queued")
        try:
            return await agent.submit("the prompt only the job holds", user_id="alice")
        finally:
            await agent.aclose()

    run_id = asyncio.run(submit())  # no worker runs: it stays queued
    code, out, err = cli("runs", "show", run_id, "--runtime", database, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["run"]["status"] == "queued"
    assert shown["state"] is None  # no first state yet: not one with an empty input
    assert isinstance(shown["queued"]["job_id"], int)
    assert "input" not in shown["queued"]
    assert '"input": ""' not in out
    code, out, err = cli("runs", "show", run_id, "--runtime", database)
    assert code == 0, err
    assert '"input": ""' not in out
    assert f"state: none yet: run {run_id} is queued" in out
    assert f"its input is held by the fleet's queue (job {shown['queued']['job_id']})" in out


# --------------------------------------------------------------------------- empty DSNs


@pytest.mark.parametrize("given", ["postgres:", "postgresql:", "postgres://", "postgres:///"])
def test_a_runtime_dsn_that_names_nothing_is_a_usage_error(cli: Any, given: str) -> None:
    code, _, err = cli("runs", "list", "--runtime", given)
    assert code == 2
    assert "argument --runtime:" in err and "names no database" in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("given", ["", "sqlite:", "  "])
def test_an_empty_runtime_or_sqlite_path_is_a_usage_error(cli: Any, given: str) -> None:
    code, _, err = cli("runs", "list", "--runtime", given)
    assert code == 2 and "argument --runtime:" in err, err


@pytest.mark.postgres
def test_an_empty_dsn_never_reaches_the_database_libpq_defaults_point_at(
    database: str, tmp_path: Path
) -> None:
    """With `PG*` variables naming a real database, `postgres:` used to connect to it (and
    make a journal there); now the command stops before connecting."""
    url = urlsplit(database)
    env = {
        **os.environ,
        "PGHOST": url.hostname or "127.0.0.1",
        "PGPORT": str(url.port or 5432),
        "PGUSER": url.username or "postgres",
        "PGDATABASE": url.path.lstrip("/"),
        "NO_COLOR": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "loomgraph.cli.main", "runs", "list", "--runtime", "postgres:"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "argument --runtime:" in done.stderr
    tables = _sql(database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert tables == []  # nothing connected, nothing made


# --------------------------------------------------------------------------- another graph


@pytest.fixture
def react_run(cli: Any, tmp_path: Path) -> str:
    """A completed run of the built-in react graph in tmp_path/j.db, and a graph file of
    another graph, other.yaml: the run's id."""
    (tmp_path / "other_fns.py").write_text("def jot(state):\n    return {'note': 'x'}\n")
    (tmp_path / "other.yaml").write_text(OTHER)
    code, out, err = cli("run", "hello", "--runtime", "sqlite:j.db", "--json")
    assert code == 0, err
    return str(json.loads(out.splitlines()[-1])["run_id"])


def test_runs_show_with_another_graph_is_refused_naming_both(cli: Any, react_run: str) -> None:
    code, out, _ = cli("runs", "show", react_run, "--runtime", "sqlite:j.db", "--json")
    assert code == 0
    run_hash = json.loads(out)["run"]["graph_hash"]
    for command in (("show", react_run), ("diff", react_run, "0", "1")):
        code, out, err = cli("runs", *command, "--runtime", "sqlite:j.db", "--graph", "other.yaml")
        assert code == 2, out + err
        assert out == ""  # no state rebuilt with the wrong fields
        assert f"graph 'react' ({run_hash})" in err, err
        assert "graph 'other' (" in err and "--graph other.yaml" in err
        assert "leave --graph out" in err and "--any-graph" in err


def test_any_graph_rebuilds_with_another_graph_when_asked(cli: Any, react_run: str) -> None:
    code, out, err = cli(
        "runs", "show", react_run, "--runtime", "sqlite:j.db", "--graph", "other.yaml",
        "--any-graph", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert "warning" in err and "'other'" in err
    assert json.loads(out)["state"]["note"] == ""  # the other graph's field, as asked


def test_runs_show_with_the_runs_own_graph_needs_nothing_more(cli: Any, react_run: str) -> None:
    code, _, err = cli("runs", "show", react_run, "--runtime", "sqlite:j.db", "--graph", "react")
    assert code == 0, err
    assert err == ""
    code, _, err = cli("runs", "show", react_run, "--runtime", "sqlite:j.db")
    assert code == 0 and err == ""

"""The command line as an operator meets it, against stored text and secrets it did not write:
a Postgres password is never printed (Ctrl-C's resume hint), terminal escape sequences in
what an API user stored (a session id, a reason, a user id) never reach the terminal, and the
`runs` subcommands spell their options alike. Real subprocesses, real signals."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

import pg
from loomgraph.cli.main import build_parser
from test_cli_terminal import HELPERS, environ, in_terminal, piped

TESTS = Path(__file__).parent
ROOT = TESTS.parent

PASSWORD = "S3cretPW-9f2"
# What an API user may put in a session id: a window title (OSC 0), a clipboard write
# (OSC 52), a screen clear and colours (CSI), and a C1 CSI (0x9b) and a bidi override.
EVIL = (
    "\x1b]0;pwned-title\x07\x1b[2J\x1b[31mFAKE: all runs completed\x1b[0m"
    "\x1b]52;c;Y3VybCBldmlsfHNo\x07\x9b31m\u202eevil"
)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "h.py").write_text(HELPERS)
    (tmp_path / "ok.yaml").write_text(
        "schema_version: 1\nname: ok\ninstructions: Be brief.\nruntime: sqlite:./j.db\n"
    )
    return tmp_path


# --------------------------------------------------------------------------- Ctrl-C and DSNs


def _sql(dsn: str, statement: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture
def secret_dsn() -> Iterator[str]:
    """A fresh database, and a DSN naming it with a password (trust auth ignores it)."""
    base = pg.require_postgres()
    name = pg.unique_name("loomcli")
    _sql(base, f"CREATE DATABASE {name}")
    url = urlsplit(base)
    user = url.username or "postgres"
    where = url.hostname or "127.0.0.1"
    port = f":{url.port}" if url.port else ""
    try:
        yield urlunsplit((url.scheme, f"{user}:{PASSWORD}@{where}{port}", f"/{name}", "", ""))
    finally:
        _sql(base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _interrupted(work: Path, *args: str) -> str:
    """`loomgraph run` with a model that never answers, stopped by a real SIGINT: stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "loomgraph.cli.main", "run", "hi", "--model", "h:stuck", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=work,
        env=environ(),
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()  # blocks until the model is waiting (or the process ends)
    assert "MODEL-WAITING" in line, line + proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err, err
    return out + err


def test_ctrl_c_never_prints_the_password_of_a_runtime_given_on_the_command_line(
    work: Path, secret_dsn: str
) -> None:
    said = _interrupted(work, "--runtime", secret_dsn)
    assert PASSWORD not in said
    masked = secret_dsn.replace(PASSWORD, "***")
    line = next(x for x in said.splitlines() if "resume with" in x)
    assert f"--runtime '{masked}'" in line, line  # quoted: `*` is a shell pattern
    assert "password" in line  # it says the password is left out, to be given again


def test_ctrl_c_names_the_agent_file_that_gives_the_journal_not_its_dsn(
    work: Path, secret_dsn: str
) -> None:
    (work / "pg.yaml").write_text(
        f"schema_version: 1\nname: pgagent\nmodel: h:stuck\nruntime: {secret_dsn}\n"
    )
    said = _interrupted(work, "-a", "pg.yaml")
    assert PASSWORD not in said
    line = next(x for x in said.splitlines() if "resume with" in x)
    assert line.endswith(" -a pg.yaml --model h:stuck"), line  # as the command line gave it
    assert "postgres" not in line


# --------------------------------------------------------------------------- stored text


def _evil_run(work: Path) -> str:
    """A run whose session id, user id and reason hold terminal escape sequences (what an
    API user may set); its id."""
    made = piped(work, "run", "hello " + EVIL, "-a", "ok.yaml", "--json", "--session", EVIL)
    assert made.returncode == 0, made.stderr
    run_id = str(json.loads(made.stdout.splitlines()[-1])["run_id"])
    with sqlite3.connect(work / "j.db") as db:
        db.execute("UPDATE runs SET reason = ?, user_id = ? WHERE run_id = ?", (EVIL, EVIL, run_id))
    return run_id


COMMANDS = {
    "show": ("runs", "show", "RUN", "-a", "ok.yaml"),
    "list": ("runs", "list", "-a", "ok.yaml"),
    "diff": ("runs", "diff", "RUN", "0", "1", "-a", "ok.yaml"),
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_stored_text_cannot_drive_the_operators_terminal(work: Path, name: str) -> None:
    run_id = _evil_run(work)
    command = tuple(run_id if a == "RUN" else a for a in COMMANDS[name])
    done = piped(work, *command)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout + done.stderr and "\x07" not in done.stdout
    assert "\x9b" not in done.stdout and "\u202e" not in done.stdout
    if name == "show":
        assert "session=\\x1b]0;pwned-title\\x07" in done.stdout  # shown, harmlessly
        assert "reason: \\x1b]0;pwned-title" in done.stdout
    code, shown = in_terminal(work, *command)
    assert code == 0, shown
    # rich colours the output (ESC [ ... m), but none of the stored sequences gets through.
    for raw in ("\x1b]", "\x07", "\x1b[2J", "\x1b[31mFAKE", "\x9b", "\u202e"):
        assert raw not in shown, (raw, shown)


def test_safe_escapes_control_characters_and_keeps_text() -> None:
    from loomgraph.cli.console import safe

    assert safe(EVIL).isprintable()
    assert safe("two\nlines\tand a tab") == "two\nlines\tand a tab"
    assert safe("one cell\nonly", newlines=False) == "one cell\\nonly"
    assert safe("caf\u00e9 \u2014 ok") == "caf\u00e9 \u2014 ok"  # text stays text


# --------------------------------------------------------------------------- option spelling


def test_runs_cancel_takes_dash_a_like_the_other_runs_subcommands() -> None:
    args = build_parser().parse_args(["runs", "cancel", "r1", "-a", "agent.yaml"])
    assert args.agent == "agent.yaml"
    args = build_parser().parse_args(["runs", "cancel", "r1", "--agent", "agent.yaml"])
    assert args.agent == "agent.yaml"


def test_fork_at_a_checkpoint_it_does_not_have_names_the_ones_it_has(work: Path) -> None:
    made = piped(work, "run", "hello", "-a", "ok.yaml", "--json")
    run_id = json.loads(made.stdout.splitlines()[-1])["run_id"]
    with sqlite3.connect(work / "j.db") as db:
        (last,) = db.execute(
            "SELECT max(t.seq) FROM transitions t JOIN runs r ON t.run = r.n WHERE r.run_id = ?",
            (run_id,),
        ).fetchone()
    for at in ("-5", str(last + 7)):
        done = piped(work, "runs", "fork", run_id, "--at", at, "-a", "ok.yaml")
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"has no checkpoint {at}; it has 0..{last} (0 is the first state)" in done.stderr
    ok = piped(work, "runs", "fork", run_id, "--at", "0", "-a", "ok.yaml")
    assert ok.returncode == 0, ok.stderr
    last_line = ok.stdout.strip().splitlines()[-1]  # `run ID: status=...`
    assert str(uuid.UUID(last_line.split()[1].rstrip(":")))


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://app:s3cr@t-Pa55@db.internal:5432/prod",  # an `@` inside the password
        "postgres://app:plain@db:5432/x?sslmode=require",
        "postgres://app@db/x?password=s3cr@t-Pa55&sslmode=require",
    ],
)
def test_a_masked_connection_string_shows_no_part_of_its_password(dsn: str) -> None:
    from loomgraph.cli.console import mask_passwords

    shown = mask_passwords(f"resume with: --runtime {dsn} (then Ctrl-C)")
    assert "***" in shown
    for secret in ("s3cr", "Pa55", "plain"):
        assert secret not in shown, shown
    assert "db" in shown and "(then Ctrl-C)" in shown

"""The command line against what it did not write: API keys' user ids and labels, audit logs
and journal rows damaged by hand, and a reader that closes the pipe early."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from loomgraph.cli import output
from loomgraph.cli.main import main
from loomgraph.cli.output import when

EVIL_USER = "ev\x1b]0;pwn\x07il"
EVIL_LABEL = "lab\x1b[2Jel\nnext"
KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUDKEY", KEY)
    path = tmp_path / "agent.yaml"
    path.write_text(
        "schema_version: 1\nname: k\nmodel: echo\nruntime: sqlite:./j.db\n"
        "audit_log: {file: ./audit.jsonl, key_env: AUDKEY}\n"
    )
    return path


# --------------------------------------------------------------------------- keys


def test_keys_print_user_ids_and_labels_terminal_safe(
    agent: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "add", EVIL_USER, "--agent", str(agent), "--label", EVIL_LABEL]) == 0
    added = capsys.readouterr()
    assert main(["keys", "list", "--agent", str(agent)]) == 0
    listed = capsys.readouterr().out
    (row,) = listed.splitlines()  # one key, one line: the label's newline is escaped
    key_id = row.split()[0]
    assert main(["keys", "revoke", key_id, "--agent", str(agent)]) == 0
    revoked = capsys.readouterr()
    for text in (added.out, added.err, listed, revoked.out, revoked.err):
        assert "\x1b" not in text and "\x07" not in text
    assert "ev\\x1b]0;pwn\\x07il" in listed and "lab\\x1b[2Jel\\nnext" in listed
    assert "ev\\x1b]0;pwn\\x07il" in added.err and "ev\\x1b]0;pwn\\x07il" in revoked.err


@pytest.mark.parametrize("user", ["", "   "])
def test_keys_add_refuses_an_empty_user_id(
    agent: Path, user: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "add", user, "--agent", str(agent)]) == 2
    assert "user id" in capsys.readouterr().err
    assert main(["keys", "list", "--agent", str(agent)]) == 0
    assert capsys.readouterr().out == ""


# --------------------------------------------------------------------------- audit logs


@pytest.fixture
def audit_log(agent: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["run", "--agent", str(agent), "hello"]) == 0
    capsys.readouterr()
    log = agent.parent / "audit.jsonl"
    assert log.stat().st_size > 0
    return log


def test_audit_verify_of_a_deeply_nested_line_fails_without_a_traceback(
    audit_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with audit_log.open("a") as f:
        f.write("[" * 100_000 + "]" * 100_000 + "\n")
    assert main(["audit", "verify", str(audit_log), "--key-env", "AUDKEY"]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert main(["audit", "head", str(audit_log), "--key-env", "AUDKEY"]) == 2
    assert "too deeply" in capsys.readouterr().err


def test_audit_verify_names_the_seq_of_a_deeply_nested_line(
    audit_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = len(audit_log.read_text().splitlines())
    with audit_log.open("a") as f:
        f.write("[" * 100_000 + "]" * 100_000 + "\n")
    assert main(["audit", "verify", str(audit_log), "--key-env", "AUDKEY"]) == 1
    assert f"FAILED at seq {entries + 1}: malformed entry" in capsys.readouterr().out


@pytest.mark.parametrize("head", ["1:" + "z" * 64, "x:" + "0" * 64, "1:abc", "nothing"])
def test_audit_verify_head_in_another_form_is_a_usage_error_naming_the_form(
    audit_log: Path, head: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", str(audit_log), "--key-env", "AUDKEY", "--head", head]) == 2
    err = capsys.readouterr().err
    assert "SEQ:HEX64" in err and "invalid literal" not in err


# --------------------------------------------------------------------------- journal rows


@pytest.fixture
def journal(agent: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, str]:
    assert main(["run", "--agent", str(agent), "hello"]) == 0
    capsys.readouterr()
    db = agent.parent / "j.db"
    with sqlite3.connect(db) as conn:
        (run_id,) = conn.execute("select run_id from runs").fetchone()
    return db, run_id


@pytest.mark.parametrize(
    "damage",
    [
        "update runs set created_at=1e300",
        "update runs set created_at='abc'",
        "update runs set updated_at=-1e300",
        "update runs set created_at=9e999",
        """update runs set result='"str"'""",
        "update runs set result='[1, 2]'",
    ],
)
def test_runs_list_and_show_survive_damaged_rows(
    journal: tuple[Path, str], damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db, run_id = journal
    with sqlite3.connect(db) as conn:
        conn.execute(damage)
    for command in (["runs", "list"], ["runs", "show", run_id]):
        # 0 shown as far as it can be; 2 once the journal reads such rows as damaged
        assert main([*command, "--runtime", f"sqlite:{db}"]) in (0, 2)
        capsys.readouterr()


def test_when_shows_a_time_it_cannot_convert_as_it_is() -> None:
    assert when(0) == "-"
    assert when(1e300) == "?1e+300"
    assert when(float("nan")) == "?nan"
    assert when("abc") == "?'abc'"  # type: ignore[arg-type]


def test_runs_list_json_is_json_with_a_deadline_of_infinity(
    journal: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = journal
    with sqlite3.connect(db) as conn:
        conn.execute("update runs set deadline=9e999")
    code = main(["runs", "list", "--json", "--runtime", f"sqlite:{db}"])
    said = capsys.readouterr()
    if code == 2:  # the journal reads such a row as damaged: nothing printed
        assert "corrupted" in said.err and said.out == ""
        return
    assert code == 0 and "Infinity" not in said.out
    (record,) = [json.loads(line) for line in said.out.splitlines()]
    assert record["deadline"] is None


# --------------------------------------------------------------------------- closed pipes


@pytest.mark.parametrize("command", [["graphs"], ["schema"]])
def test_a_reader_closing_the_pipe_ends_the_command_quietly(command: list[str]) -> None:
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "loomgraph.cli.main", *command],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (output.EXIT_PIPE_CLOSED, "")


def test_runs_show_to_a_closed_pipe_ends_quietly(journal: tuple[Path, str]) -> None:
    db, run_id = journal
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "loomgraph.cli.main",
                "runs",
                "show",
                run_id,
                "--runtime",
                f"sqlite:{db}",
            ],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (output.EXIT_PIPE_CLOSED, "")


def test_a_run_with_stdout_closed_is_refused_before_it_starts(tmp_path: Path) -> None:
    """`loomgraph run "hi" >&-`: with no stdout the run's events and result had nowhere to
    go, and the command died with a traceback (an AttributeError) after journaling the run.
    It is refused at once, on stderr, and nothing is journaled."""
    db = tmp_path / "journal.db"
    done = subprocess.run(
        [sys.executable, "-m", "loomgraph.cli.main", "run", "hi", "--runtime", f"sqlite:{db}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.close(1),
    )
    assert done.returncode == output.EXIT_USAGE
    assert "Traceback" not in done.stderr
    assert "standard output is closed" in done.stderr
    assert not db.exists()  # nothing journaled, not even a journal made


def test_json_lines_hold_no_float_json_cannot() -> None:
    value = {"a": float("inf"), "b": [float("nan"), 1.5], "c": (float("-inf"),)}
    assert output.json_line(value) == '{"a": null, "b": [null, 1.5], "c": [null]}'


@pytest.mark.parametrize("command", [["runs", "list"], ["runs", "pending"]])
def test_an_agent_file_option_given_module_attr_says_what_it_takes(
    command: list[str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`-a probe_agent:agent` was read as a file: "[unreadable-file] No such file or
    directory: '/…/probe_agent:agent'"; these commands read an agent file's settings."""
    monkeypatch.chdir(tmp_path)
    assert main([*command, "-a", "probe_agent:agent"]) == 2
    said = capsys.readouterr().err
    assert "reads an agent file (.yaml), not MODULE:ATTR" in said and "Errno" not in said, said


@pytest.mark.parametrize("command", [["worker"], ["runs", "cancel", "r1"]])
def test_an_agent_naming_a_function_that_is_no_factory_is_said_so(
    command: list[str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--agent pagent:work` (a tool of the module, not a factory) was called with no
    arguments: a TypeError traceback, exit 1."""
    (tmp_path / "pagent.py").write_text("def work(item):\n    raise AssertionError('called')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main([*command, "--agent", "pagent:work"]) == 2
    said = capsys.readouterr().err
    assert "cannot be called as an Agent factory" in said and "'item'" in said, said

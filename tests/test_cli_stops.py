"""How the `loomgraph` command stops (docs/cli.md, Ctrl-C and Output): Ctrl-C at an
`--approve` prompt in a pipe, Ctrl-C of every command that drives a run (the line that says
how to go on), a reader that closes the pipe, and `runs pending --json`. Through the real
command in a subprocess, against real SQLite files."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import test_cli_approvals
import test_cli_terminal
from pipe_output import Output
from test_cli_approvals import AGENT, journal, loomgraph, paid
from test_cli_terminal import environ

env = test_cli_approvals.env  # a folder with `approval_helpers` (a destructive `pay`)
CLI = [sys.executable, "-m", "loomgraph.cli.main"]
BOUND = 15.0  # seconds a command gets to react to a signal

# The terminal tests' helpers (`search`, the `Stuck` model), and two models of this file's own.
HELPERS = (
    test_cli_terminal.HELPERS
    + '''

import os


def searcher(**kw):
    """Calls `search`; stuck instead once H_STUCK is set (the command that approves it)."""
    return Stuck() if os.environ.get("H_STUCK") else ScriptedModel([CALL, "done"])


class Held:
    """A model that answers once a line arrives on stdin (the test's cue)."""

    name = "held"

    async def stream(self, request):
        print("MODEL-WAITING", file=sys.stderr, flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        yield {"text": "an answer the reader no longer wants"}


held = Held()
'''
)


def _stop(proc: subprocess.Popen[str]) -> None:
    """End a process this test started (if it is still running)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=60)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A folder with the helpers above (`h:stuck`, a model that never answers)."""
    (tmp_path / "h.py").write_text(HELPERS)
    (tmp_path / "ask.yaml").write_text("ask: [search]\n")
    return tmp_path


def _status(db: Path) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT run_id, status, parent_run_id FROM runs"))


# --------------------------------------------------------------------------- --approve


def test_ctrl_c_at_the_approve_prompt_of_a_pipe_stops_the_command(
    env: dict[str, Any],
) -> None:
    """`run --approve` in a pipe asks on stderr and reads stdin; Ctrl-C there stops the
    command at once (exit 130), the run journaled cancelled, and says how to resume it."""
    proc = subprocess.Popen(
        [*CLI, "run", "pay", *AGENT, *journal(env), "--approve"],
        stdin=subprocess.PIPE,  # kept open: a script, or `... --approve | tee log` at a terminal
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=env["dir"],
        env=env["env"],
    )
    try:
        assert proc.stderr is not None and proc.stdin is not None and proc.stdout is not None
        Output(proc.stdout)  # read, so a full pipe never holds the command up
        err = Output(proc.stderr)
        err.wait_for("Allow? [y/N]")
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=BOUND)
        except subprocess.TimeoutExpired:
            proc.stdin.close()  # let it read end of input, to see what the run did then
            proc.wait(timeout=120)
            statuses = [s for _, s, _ in _status(env["db"])]
            raise AssertionError(
                f"Ctrl-C at the --approve prompt was ignored for {BOUND:.0f} s: the command "
                "waits for a line on stdin; once stdin ended it denied the call and the run "
                f"went on (journaled {statuses}), exit {proc.returncode}"
            ) from None
        assert code == 130, f"exit {code} after Ctrl-C, not 130"
        ((run_id, status, _),) = _status(env["db"])
        assert status == "cancelled", "the run went on after Ctrl-C"
        assert paid(env) == []
        assert f"stopped; resume with: loomgraph runs resume {run_id}" in err.ended_text()
    finally:
        _stop(proc)


def test_approve_in_a_pipe_reads_answers_given_ahead_and_from_a_file(env: dict[str, Any]) -> None:
    """The answers of `--approve` in a pipe are read as they were given, before the prompt
    (`printf 'y\\n' | loomgraph run … --approve`) or from a file (`< answers`, which an
    event loop cannot wait on); the end of input is no."""
    answers = env["dir"] / "answers.txt"
    answers.write_text("y\n")
    with answers.open() as given:
        done = subprocess.run(
            [*CLI, "run", "pay", *AGENT, "--approve"],
            stdin=given,
            capture_output=True,
            text=True,
            cwd=env["dir"],
            env=env["env"],
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    assert paid(env) == ["acme\t5"]
    nothing = subprocess.run(
        [*CLI, "run", "pay", *AGENT, "--approve"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=env["dir"],
        env=env["env"],
        timeout=120,
    )
    assert nothing.returncode == 0 and "Allow? [y/N]" in nothing.stderr, nothing.stderr
    assert paid(env) == ["acme\t5"]  # not paid again


def test_the_pipe_prompt_escapes_a_policys_reason_and_reads_without_a_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The `--approve` handler is a coroutine now (it waits on the event loop): its prompt
    still shows a policy's reason escaped, and a stdin with no file behind it is read."""
    from loomgraph.cli.approvals import ask_on_terminal
    from loomgraph.protocols import Decision

    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    decision = Decision("ask", rule="policy", reason="check \x1b]52;c;cm0gLXJmIC8=\x07 this")
    call = {"id": "c1", "tool": "pay", "args": {"to": "acme"}}
    assert asyncio.run(ask_on_terminal(call, decision)) is True  # type: ignore[arg-type]
    shown = capsys.readouterr().err
    assert "\x1b" not in shown and "\x07" not in shown
    assert "check \\x1b]52;c;cm0gLXJmIC8=\\x07 this" in shown


# --------------------------------------------------------------------------- Ctrl-C


def _interrupted(work: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run the command until its model waits (`h:stuck`), then Ctrl-C it; what it did."""
    proc = subprocess.Popen(
        [*CLI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=work,
        env=environ(**extra),
    )
    try:
        assert proc.stderr is not None and proc.stdout is not None
        out, err = Output(proc.stdout), Output(proc.stderr)
        err.wait_for("MODEL-WAITING\n")
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=BOUND)
        said = err.ended_text().replace("MODEL-WAITING\n", "", 1)
        return subprocess.CompletedProcess(proc.args, code, out.ended_text(), said)
    finally:
        _stop(proc)


@pytest.mark.parametrize("command", ["resume", "retry", "fork --json", "fork"])
def test_ctrl_c_of_a_command_going_on_with_a_run_says_how_to_resume_it(
    work: Path, command: str
) -> None:
    """docs/cli.md, Ctrl-C: the run is journaled as cancelled "and one line says how to go
    on", for `runs resume`, `retry` and `fork` (the new run's id: `fork --json` prints
    nothing else of it) as for `run`."""
    stuck = ["--model", "h:stuck", "--runtime", "sqlite:j.db"]
    first = _interrupted(work, "run", "hi", *stuck)
    assert first.returncode == 130 and "resume with:" in first.stderr, first.stderr
    ((run_id, _, _),) = _status(work / "j.db")
    verb, *options = command.split()
    at = ["--at", "0"] if verb == "fork" else []
    again = _interrupted(work, "runs", verb, run_id, *at, *stuck, *options)
    assert again.returncode == 130, again.stderr
    went_on = run_id
    if verb == "fork":
        (went_on,) = [r for r, _, parent in _status(work / "j.db") if parent == run_id]
    status = {r: s for r, s, _ in _status(work / "j.db")}[went_on]
    assert status == "cancelled"
    expected = (
        f"loomgraph: stopped; resume with: loomgraph runs resume {went_on} --model h:stuck "
        "--runtime sqlite:j.db"
    )
    assert again.stderr.strip() == expected, again.stderr


def test_ctrl_c_of_runs_approve_says_how_to_resume_the_run(work: Path) -> None:
    """`runs approve` drives the run on from the approved call: Ctrl-C there says how to go
    on, with the tools and permissions it was given."""
    given = ["--model", "h:searcher", "--tools", "h:search", "--permissions", "ask.yaml"]
    given += ["--runtime", "sqlite:j.db"]
    waiting = subprocess.run(
        [*CLI, "run", "find x", *given],
        capture_output=True,
        text=True,
        cwd=work,
        env=environ(),
        timeout=120,
    )
    assert waiting.returncode == 3, waiting.stderr
    pending = subprocess.run(
        [*CLI, "runs", "pending", "--json", "--runtime", "sqlite:j.db"],
        capture_output=True,
        text=True,
        cwd=work,
        env=environ(),
        timeout=120,
    )
    row = json.loads(pending.stdout)
    request = ["--request", row["key"]]
    approving = ["runs", "approve", row["run_id"], row["call_id"], *request, *given]
    again = _interrupted(work, *approving, H_STUCK="1")
    assert again.returncode == 130, again.stderr
    assert again.stderr.strip() == (
        f"loomgraph: stopped; resume with: loomgraph runs resume {row['run_id']} --model "
        "h:searcher --permissions ask.yaml --tools h:search --runtime sqlite:j.db"
    ), again.stderr


# --------------------------------------------------------------------------- JSON


def _strict_json(line: str) -> Any:
    """`line` as JSON as the standard reads it: no `Infinity`, `-Infinity` or `NaN`."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(line, parse_constant=refuse)


def test_runs_pending_json_holds_no_float_json_cannot(env: dict[str, Any]) -> None:
    """docs/cli.md, Output: `--json` is JSON Lines everywhere, and a float JSON cannot hold
    (as a damaged journal row may have) is printed as null, never the invalid `Infinity`."""
    waiting = loomgraph(env, "run", "pay", *AGENT, *journal(env))
    assert waiting.returncode == 3, waiting.stderr
    with sqlite3.connect(env["db"]) as conn:
        (result,) = conn.execute("SELECT result FROM runs").fetchone()
        damaged = result.replace('"pending":{', '"pending":{"deadline":9e999,', 1)
        assert damaged != result
        conn.execute("UPDATE runs SET result = ?", (damaged,))
    listed = loomgraph(env, "runs", "list", "--json", *journal(env))
    assert listed.returncode == 0, listed.stderr
    _strict_json(listed.stdout)  # `runs list` prints the same row as JSON
    pending = loomgraph(env, "runs", "pending", "--json", *journal(env))
    assert pending.returncode == 0, pending.stderr
    (row,) = [_strict_json(line) for line in pending.stdout.splitlines()]
    assert row["deadline"] is None


# --------------------------------------------------------------------------- closed pipes


def test_a_reader_closing_the_pipe_leaves_the_run_journaled_as_running(work: Path) -> None:
    """docs/cli.md, Output: a reader that closes the pipe early ends the command quietly
    (141) "as if killed": the run stays journaled as running, and `runs resume` goes on."""
    proc = subprocess.Popen(
        [*CLI, "run", "hi", "--model", "h:held", "--runtime", "sqlite:j.db"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=work,
        env=environ(),
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        err = Output(proc.stderr)
        first = proc.stdout.readline()  # `| head -1`: one line, then the pipe is closed
        assert "run_started" in first, first
        err.wait_for("MODEL-WAITING\n")
        proc.stdout.close()
        proc.stdin.write("\n")  # the model answers; its events go to a closed pipe
        proc.stdin.close()
        code = proc.wait(timeout=120)
        assert code == 141, err.text
        assert err.ended_text() == "MODEL-WAITING\n"  # quietly: nothing else on stderr
    finally:
        _stop(proc)
    ((run_id, status, _),) = _status(work / "j.db")
    assert status == "running"
    resumed = subprocess.run(
        [*CLI, "runs", "resume", run_id, "--model", "echo", "--runtime", "sqlite:j.db"],
        capture_output=True,
        text=True,
        cwd=work,
        env=environ(),
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert _status(work / "j.db")[0][1] == "completed"

"""The `loomgraph runs …` commands as a new user ran them (docs/cli.md), through the real
command in a subprocess, with agent files and an SQLite journal in a folder whose path has a
space in it: a fork that stopped to wait said nothing of how to answer; an approval given
without the run's tools, or with edited arguments the tool cannot take, was used up and
wasted. Each test's docstring says what went wrong before; one pins how a locked journal
refuses an answer."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from test_cli_approvals import HELPERS

# The pay tool and its scripted model, as tests/test_cli_approvals.py writes them.


REVIEW = """\
name: review
state:
  approved: {type: bool, default: false}
entry: ask
nodes:
  ask: {kind: interrupt, request: bool, output: approved, message: "Send {{ input }}?"}
  send: {kind: llm, prompt: "Send {{ input }}", output: output}
edges:
  - {from: ask, to: send, when: approved}
  - {from: ask, to: END}
"""

PAYER = """\
schema_version: 1
name: payer
model: probe_helpers:PAY
tools: [probe_helpers:TOOLS]
runtime: sqlite:./pay journal.db
"""

REVIEWER = """\
schema_version: 1
name: reviewer
model: echo
architecture: review graph.yaml
runtime: sqlite:./review journal.db
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    """A folder with a space in its path: helpers, agent files, a ledger of tool calls."""
    where = tmp_path / "my work"
    where.mkdir()
    (where / "probe_helpers.py").write_text(HELPERS)
    (where / "review graph.yaml").write_text(REVIEW)
    (where / "payer.yaml").write_text(PAYER)
    (where / "reviewer.yaml").write_text(REVIEWER)
    variables = dict(os.environ, CLI_LEDGER=str(where / "ledger.tsv"), NO_COLOR="1")
    return {"dir": where, "env": variables}


def loomgraph(env: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real command, stdin empty (a pipe: nothing is asked at a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "loomgraph.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=env["dir"],
        env=env["env"],
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def paid(env: dict[str, Any]) -> list[str]:
    """The calls the `pay` tool really made."""
    ledger: Path = env["dir"] / "ledger.tsv"
    return ledger.read_text().splitlines() if ledger.exists() else []


def dump(env: dict[str, Any], name: str) -> list[str]:
    """Every row of the journal file, to compare before and after a refused command."""
    with sqlite3.connect(env["dir"] / name) as conn:
        return list(conn.iterdump())


def waiting_payment(env: dict[str, Any], *how: str) -> dict[str, Any]:
    """Start a payment run that waits for approval; its `runs pending --json` row."""
    started = loomgraph(env, "run", "pay acme", *how)
    assert started.returncode == 3, started.stdout + started.stderr
    listed = loomgraph(env, "runs", "pending", *how[-2:], "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    row: dict[str, Any] = rows[-1]
    return row


def question(env: dict[str, Any]) -> dict[str, Any]:
    """Start a review run that waits at its question; the result's pending request."""
    started = loomgraph(env, "run", "the report", "-a", "reviewer.yaml", "--json")
    assert started.returncode == 3, started.stderr
    last = json.loads(started.stdout.splitlines()[-1])
    result: dict[str, Any] = last["payload"]["result"]
    return result


# --------------------------------------------------------------------- finding: fork


def test_fork_that_stops_at_a_question_says_how_to_answer_it(env: dict[str, Any]) -> None:
    """A user forks a review run at its first state (`runs fork RUN --at 0 -a
    reviewer.yaml`); the fork stops at the `interrupt` node, exit 3. Expected, as after `run`,
    `runs resume` and `runs retry` (docs/cli.md, *Interrupts*: the stopped run prints on
    stderr the command that answers it): `loomgraph: answer with: loomgraph runs resume NEW
    … --value JSON --request NEW:ask:1:answer`. Happened: nothing on stderr, so the user has
    a waiting run, exit 3, and no key to answer it with (only `runs show --json` has it)."""
    first = question(env)
    forked = loomgraph(env, "runs", "fork", first["run_id"], "--at", "0", "-a", "reviewer.yaml")
    assert forked.returncode == 3, forked.stderr
    new = forked.stdout.split("run=", 1)[1].split()[0]
    assert new != first["run_id"]
    assert f"--request {new}:ask:1:answer" in forked.stderr, forked.stderr


def test_fork_that_stops_for_an_approval_says_how_to_approve_it(env: dict[str, Any]) -> None:
    """A user forks a payment run at the checkpoint where the model asked to pay
    (`runs fork RUN --at 1 -a payer.yaml`); the fork asks for approval again and stops, exit 3
    ("a call awaits approval (`loomgraph runs approve`)"). Expected the `approve with:
    loomgraph runs approve NEW call_0_0 -a payer.yaml --request KEY` line `run`, `resume` and
    `retry` print for a stopped run. Happened: no line; the user must find the key with
    `runs pending --json`."""
    row = waiting_payment(env, "-a", "payer.yaml")
    forked = loomgraph(env, "runs", "fork", row["run_id"], "--at", "1", "-a", "payer.yaml")
    assert forked.returncode == 3, forked.stderr
    new = forked.stdout.split("run=", 1)[1].split()[0]
    assert f"runs approve {new} call_0_0" in forked.stderr, forked.stderr
    assert paid(env) == []


# ----------------------------------------------------------------- finding: approvals

JOURNAL = ["--runtime", "sqlite:./pay journal.db"]
BY_HAND = ["--model", "probe_helpers:PAY", "--tools", "probe_helpers:TOOLS", *JOURNAL]


def test_approve_without_the_runs_tools_is_refused_and_the_call_still_waits(
    env: dict[str, Any],
) -> None:
    """A run started from the command line (`run … --model M --tools T --runtime J`)
    waits for approval of `pay`. The approver types `runs approve RUN call_0_0 --request KEY
    --model M --runtime J`, forgetting `--tools` (docs/cli.md: approve answers "with the same
    `--model`, `--tools` and `--permissions` it started with"). Expected: refused before
    anything is answered (exit 2, naming the tool the request is for and `--tools`), the
    request still pending — as other permissions are refused. Happened: exit 0; the approval
    is journaled as given (and used up), the call is denied as `unknown tool 'pay'`, the run
    completes without paying, and the request can never be approved again."""
    row = waiting_payment(env, *BY_HAND)
    before = dump(env, "pay journal.db")
    approve = ["runs", "approve", row["run_id"], row["call_id"], "--request", row["key"]]
    answered = loomgraph(env, *approve, "--model", "probe_helpers:PAY", *JOURNAL)
    assert answered.returncode == 2, answered.stdout
    assert "--tools" in answered.stderr, answered.stderr
    assert dump(env, "pay journal.db") == before
    assert paid(env) == []


def test_approve_with_args_the_tool_cannot_take_is_refused_before_answering(
    env: dict[str, Any],
) -> None:
    """The approver edits the call with a typo, `runs approve RUN call_0_0 --request
    KEY -a payer.yaml --args '{"to": "acme", "amount": "five"}'` (`amount` is an int).
    Expected, as `runs resume --value` checks a value against the type asked for "before
    anything runs" (exit 2, the run still waits): a usage error naming the argument, the
    request still pending, so the approver can correct it. Happened: exit 0; the approval is
    journaled and used up, the tool gets "Invalid arguments for tool 'pay'", the run
    completes without paying, and `runs approve` with the right arguments is refused
    ("an approval is used once")."""
    row = waiting_payment(env, "-a", "payer.yaml")
    before = dump(env, "pay journal.db")
    approve = ["runs", "approve", row["run_id"], row["call_id"], "--request", row["key"]]
    edited = loomgraph(
        env, *approve, "-a", "payer.yaml", "--args", '{"to": "acme", "amount": "five"}'
    )
    assert edited.returncode == 2, edited.stdout
    assert "amount" in edited.stderr, edited.stderr
    assert dump(env, "pay journal.db") == before
    fixed = loomgraph(env, *approve, "-a", "payer.yaml", "--args", '{"to": "acme", "amount": 4}')
    assert fixed.returncode == 0, fixed.stderr
    assert paid(env) == ["acme\t4"]


# ------------------------------------------------------------------ passing: pinned

LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()  # held until the test closes our stdin
"""


def test_approve_against_a_journal_another_process_locks_answers_nothing(
    env: dict[str, Any],
) -> None:
    """Passing (pins behaviour no CLI test covers). Another process holds the journal's write
    lock (`BEGIN EXCLUSIVE`) while the approver runs `runs approve`: after the journal's
    busy timeout (30 s) the command exits 2 saying the journal is unavailable, and neither
    the journal nor the tool's ledger changed: the request still waits."""
    row = waiting_payment(env, "-a", "payer.yaml")
    before = dump(env, "pay journal.db")
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(env["dir"] / "pay journal.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
        approve = ["runs", "approve", row["run_id"], row["call_id"], "--request", row["key"]]
        answered = loomgraph(env, *approve, "-a", "payer.yaml")
    finally:
        assert locker.stdin is not None
        locker.stdin.close()
        locker.wait(timeout=30)
    assert answered.returncode == 2, answered.stdout
    assert "unavailable" in answered.stderr and "locked" in answered.stderr
    assert dump(env, "pay journal.db") == before and paid(env) == []
    pending = loomgraph(env, "runs", "pending", "-a", "payer.yaml", "--json")
    assert json.loads(pending.stdout)["key"] == row["key"]

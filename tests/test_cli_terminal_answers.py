"""Answering from the terminal: `loomgraph run` (and `runs resume`) at a terminal asks an
`interrupt` node's question there and goes on with the answer, and asks approve / deny /
edit for a call a rule asks about; Ctrl-D leaves the run waiting with the command that
answers it; a pipe is never asked. The real command on a real pseudo-terminal (stdin,
stdout and stderr), read with bounded `select` waits; `runs retry` in this process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import pty_terminal
from loomgraph.cli.main import main
from loomgraph.protocols import RunStatus
from loomgraph.runtime.sqlite import SqliteRuntime
from pty_terminal import WAIT_S, terminal_env

THREE = """
name: ask
state:
  count: {type: int, default: 0}
  note: {type: str, default: ""}
  tags: {type: "list[str]", default: []}
entry: how_many
nodes:
  how_many: {kind: interrupt, request: int, output: count, message: "How many for {{ input }}?"}
  why: {kind: interrupt, request: str, output: note, message: "Why {{ count }}?"}
  tag: {kind: interrupt, request: "list[str]", output: tags, message: "Tags?"}
edges:
  - {from: how_many, to: why}
  - {from: why, to: tag}
  - {from: tag, to: END}
"""

ONE = """
name: one
state:
  count: {type: int, default: 0}
entry: how_many
nodes:
  how_many: {kind: interrupt, request: int, output: count, message: "How many?"}
edges:
  - {from: how_many, to: END}
"""

# A model turn first (a failing model makes a dead letter), then a question.
THINK = """
name: think
state:
  count: {type: int, default: 0}
entry: think
nodes:
  think: {kind: model}
  how_many: {kind: interrupt, request: int, output: count, message: "How many?"}
edges:
  - {from: think, to: how_many}
  - {from: how_many, to: END}
"""

HELPERS = '''
import os
from loomgraph import tool
from loomgraph.models import ScriptedModel


@tool(destructive=True)
def pay(to: str, amount: int) -> str:
    """Pay someone."""
    with open(os.environ["ANSWERS_LEDGER"], "a") as f:
        f.write(f"{to} {amount}\\n")
    return f"paid {amount} to {to}"


TOOLS = [pay]


def pay_model(**kw):
    return ScriptedModel(
        [{"tool_calls": [{"tool": "pay", "args": {"to": "acme", "amount": 5}}]}, "done"]
    )


FAIL = ScriptedModel([RuntimeError("provider down")])
'''

PAY = ["--model", "answers_helpers:pay_model", "--tools", "answers_helpers:TOOLS"]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A folder with the graphs and helpers; the command runs there, on journal j.db."""
    for name, text in (("three.yaml", THREE), ("one.yaml", ONE), ("think.yaml", THINK)):
        (tmp_path / name).write_text(text)
    (tmp_path / "answers_helpers.py").write_text(HELPERS)
    return tmp_path


def environ(work: Path, **extra: str) -> dict[str, str]:
    return terminal_env(work, ANSWERS_LEDGER=str(work / "ledger.txt"), **extra)


JOURNAL = ["--runtime", "sqlite:j.db"]


class Terminal(pty_terminal.Terminal):
    """`loomgraph ARGS…` on a pseudo-terminal, in `work`, its ledger there."""

    def __init__(self, work: Path, *args: str, **extra: str) -> None:
        super().__init__(work, args, environ(work, **extra))


def piped(work: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loomgraph.cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=work,
        env=environ(work, NO_COLOR="1"),
        timeout=WAIT_S,
    )


def journaled(work: Path, run_id: str) -> tuple[RunStatus, dict[str, Any]]:
    """The run's status and its state fields as its transitions patched them."""

    async def read() -> tuple[RunStatus, dict[str, Any]]:
        runtime = SqliteRuntime(work / "j.db")
        try:
            record = await runtime.load_run(run_id)
            assert record is not None
            patches: dict[str, Any] = {}
            for transition in await runtime.transitions(run_id):
                patches.update(transition.patch)
            return record.status, patches
        finally:
            await runtime.close()

    return asyncio.run(read())


def run_id_in(shown: str) -> str:
    return shown.split("run=")[1].split()[0]


def paid(work: Path) -> list[str]:
    ledger = work / "ledger.txt"
    return ledger.read_text().splitlines() if ledger.exists() else []


# --------------------------------------------------------------------------- questions


def test_the_run_asks_its_questions_on_the_terminal(work: Path) -> None:
    term = Terminal(work, "run", "apples", "--graph", "three.yaml", *JOURNAL)
    term.expect("How many for apples?")
    term.expect("answer (int")
    term.type("3\n")
    term.expect("Why 3?")
    term.expect("answer (str")
    term.type("not JSON: taken as text\n")
    term.expect("Tags?")
    term.expect('"items": {"type": "string"}')  # a list: its schema shown
    term.expect("answer (list")  # (a line typed before the prompt would be dropped)
    term.type('["a", "b"]\n')
    code, shown = term.end()
    assert code == 0, shown
    assert "status=completed" in shown and "--value" not in shown
    status, state = journaled(work, run_id_in(shown))
    assert status == RunStatus.COMPLETED
    assert (state["count"], state["note"], state["tags"]) == (
        3,
        "not JSON: taken as text",
        ["a", "b"],
    )


def test_a_wrong_value_is_refused_with_the_reason_and_asked_again(work: Path) -> None:
    term = Terminal(work, "run", "pears", "--graph", "one.yaml", *JOURNAL)
    term.expect("answer (int")
    term.type("many\n")
    refused = term.expect("answer (int")  # asked again, after the reason
    assert "waits at 'how_many' for a value of type int; the value does not fit" in refused
    term.type("4\n")
    code, shown = term.end()
    assert code == 0, shown
    assert journaled(work, run_id_in(shown)) == (RunStatus.COMPLETED, {"count": 4})


def test_three_wrong_values_leave_the_run_waiting(work: Path) -> None:
    term = Terminal(work, "run", "pears", "--graph", "one.yaml", *JOURNAL)
    for _ in range(3):
        term.expect("answer (int")
        term.type("many\n")
    code, shown = term.end()
    assert code == 3, shown
    assert "no answer after 3 tries" in shown and "--value JSON" in shown
    assert journaled(work, run_id_in(shown)) == (RunStatus.INTERRUPTED, {})


def test_ctrl_d_leaves_the_run_waiting_and_the_printed_command_answers_it(work: Path) -> None:
    term = Terminal(work, "run", "plums", "--graph", "one.yaml", *JOURNAL)
    term.expect("answer (int")
    term.type("\x04")
    code, shown = term.end()
    assert code == 3, shown
    run_id = run_id_in(shown)
    key = f"{run_id}:how_many:1:answer"
    said = f"loomgraph runs resume {run_id} --runtime sqlite:j.db --value JSON --request {key}"
    assert f"answer with: {said}" in shown
    assert journaled(work, run_id) == (RunStatus.INTERRUPTED, {})
    done = piped(work, "runs", "resume", run_id, *JOURNAL, "--value", "5", "--request", key)
    assert done.returncode == 0, done.stderr
    assert journaled(work, run_id) == (RunStatus.COMPLETED, {"count": 5})


def test_a_pipe_is_never_asked(work: Path) -> None:
    # The answer is there to be read: it is not, and the run waits as before.
    done = piped(work, "run", "figs", "--graph", "one.yaml", *JOURNAL, stdin="5\n")
    assert done.returncode == 3, done.stderr
    assert "answer (" not in done.stdout + done.stderr
    assert "answer with: loomgraph runs resume" in done.stderr
    assert journaled(work, run_id_in(done.stdout)) == (RunStatus.INTERRUPTED, {})


def test_no_input_at_a_terminal_is_never_asked(work: Path) -> None:
    term = Terminal(work, "run", "figs", "--graph", "one.yaml", *JOURNAL, "--no-input")
    code, shown = term.end()
    assert code == 3, shown
    assert "answer (" not in shown and "answer with: loomgraph runs resume" in shown


def test_runs_resume_at_a_terminal_asks_too(work: Path) -> None:
    started = piped(work, "run", "kiwis", "--graph", "three.yaml", *JOURNAL)
    assert started.returncode == 3, started.stderr
    run_id = run_id_in(started.stdout)
    term = Terminal(work, "runs", "resume", run_id, *JOURNAL)
    term.expect("How many for kiwis?")
    term.expect("answer (int")
    term.type("2\n")
    term.expect("Why 2?")
    term.expect("answer (str")
    term.type("\x04")
    code, shown = term.end()
    assert code == 3, shown
    assert f"--request {run_id}:why:1:answer" in shown
    assert journaled(work, run_id) == (RunStatus.INTERRUPTED, {"count": 2})


# --------------------------------------------------------------------------- approvals


def test_an_approval_is_asked_on_the_terminal(work: Path) -> None:
    term = Terminal(work, "run", "pay acme", *PAY, *JOURNAL)
    asked = term.expect("allow? [y]es, [n]o, [e]dit the arguments")
    assert 'pay({"to": "acme", "amount": 5}) needs approval' in asked
    term.type("e\n")
    term.expect("(a JSON object)>")
    term.type("[1]\n")  # not an object: asked again
    term.expect("must be a JSON object")
    # Typed once the prompt is back: what is typed before it is typeahead, dropped.
    term.expect("(a JSON object)>")
    term.type('{"to": "acme", "amount": 1}\n')
    code, shown = term.end()
    assert code == 0, shown
    assert paid(work) == ["acme 1"]


def test_ctrl_d_leaves_an_approval_waiting_and_says_how_to_answer_it(work: Path) -> None:
    term = Terminal(work, "run", "pay acme", *PAY, *JOURNAL)
    term.expect("empty or Ctrl-D: leave it waiting>")
    term.type("\x04")
    code, shown = term.end()
    assert code == 3, shown
    assert paid(work) == []
    command = shown.split("approve with: ")[1].split("  (or")[0]
    assert command.startswith(f"loomgraph runs approve {run_id_in(shown)} ")
    assert "--request " in command
    done = piped(work, *command.split()[1:])
    assert done.returncode == 0, done.stderr
    assert paid(work) == ["acme 5"]


def test_without_a_journal_an_unanswered_approval_is_denied(work: Path) -> None:
    term = Terminal(work, "run", "pay acme", *PAY)
    term.expect("empty or Ctrl-D: no>")
    term.type("\n")
    code, shown = term.end()
    assert code == 0, shown
    assert "not approved on the terminal" in shown and paid(work) == []


# --------------------------------------------------------------------------- runs retry


def test_a_retried_run_that_stops_at_a_question_says_how_to_answer_it(
    work: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(work)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.syspath_prepend(str(work))
    fail = ["--graph", "think.yaml", "--model", "answers_helpers:FAIL", *JOURNAL]
    assert main(["run", "go", *fail]) == 1
    run_id = run_id_in(capsys.readouterr().out)
    for _ in range(4):  # three failed recoveries, then the resume that gives up
        main(["runs", "resume", run_id, "--model", "answers_helpers:FAIL", *JOURNAL])
    assert journaled(work, run_id)[0] == RunStatus.DEAD_LETTER
    capsys.readouterr()
    assert main(["runs", "retry", run_id, "--model", "echo", *JOURNAL]) == 3
    err = capsys.readouterr().err
    key = f"{run_id}:how_many:1:answer"
    assert (
        f"answer with: loomgraph runs resume {run_id} --model echo --runtime sqlite:j.db "
        f"--value JSON --request {key}"
    ) in err
    resume = ["runs", "resume", run_id, "--model", "echo", *JOURNAL]
    assert main([*resume, "--value", "6", "--request", key]) == 0
    assert journaled(work, run_id)[1]["count"] == 6

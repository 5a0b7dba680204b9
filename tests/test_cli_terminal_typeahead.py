"""Answers at the terminal are typed after their question: the rest of a pasted block never
answers the next question, and text that is not UTF-8 is refused, not mangled. Real parts:
the real `loomgraph` command on a real pseudo-terminal (read with bounded `select` waits),
real SQLite journals in files."""

from __future__ import annotations

from pathlib import Path

import pytest

import pty_terminal
from pty_terminal import terminal_env

HELPERS = '''
import os
from loomgraph import tool
from loomgraph.models import ScriptedModel


@tool(destructive=True)
def pay(to: str, amount: int) -> str:
    """Pay someone."""
    with open(os.environ["PROBE_LEDGER"], "a") as f:
        f.write(f"{to} {amount}\\n")
    return f"paid {amount} to {to}"


TOOLS = [pay]


def two_payments(**kw):
    return ScriptedModel(
        [
            {
                "tool_calls": [
                    {"tool": "pay", "args": {"to": "acme", "amount": 5}},
                    {"tool": "pay", "args": {"to": "mallory", "amount": 500}},
                ]
            },
            "done",
        ]
    )

'''

WHY = """
name: why
state:
  note: {type: str, default: ""}
entry: why
nodes:
  why: {kind: interrupt, request: str, output: note, message: "Why?"}
edges:
  - {from: why, to: END}
"""


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A folder with the helpers, a permissions file and a graph; the command runs there."""
    (tmp_path / "typeahead_helpers.py").write_text(HELPERS)
    (tmp_path / "ask.yaml").write_text("ask:\n  - pay\n")
    (tmp_path / "why.yaml").write_text(WHY)
    return tmp_path


class Terminal(pty_terminal.Terminal):
    """`loomgraph ARGS…` on a pseudo-terminal, in `work`, its ledger there."""

    def __init__(self, work: Path, *args: str) -> None:
        super().__init__(work, args, terminal_env(work, PROBE_LEDGER=str(work / "ledger.txt")))


def paid(work: Path) -> list[str]:
    ledger = work / "ledger.txt"
    return ledger.read_text().splitlines() if ledger.exists() else []


def run_id_in(shown: str) -> str:
    return shown.split("run=")[1].split()[0]


# --------------------------------------------------------------------- terminal answers

TWO = ["--model", "typeahead_helpers:two_payments", "--tools", "typeahead_helpers:TOOLS"]


def test_lines_left_from_a_pasted_edit_do_not_approve_the_next_call(work: Path) -> None:
    """A person answers `e` for the first call and pastes its arguments as pretty-printed
    JSON: the paste's lines are refused one by one, the first call is denied — and the
    paste's last line `y` silently approves the *second* call (500 to mallory), which the
    person never answered. Lines typed before a question is shown must not answer it."""
    term = Terminal(work, "run", "pay both", *TWO, "--permissions", "ask.yaml")
    term.expect("allow? [y]es, [n]o, [e]dit the arguments")
    term.type(b'e\n{\n  "to": "acme",\n  "amount": 1\n}\ny\n')
    term.expect("the arguments to run it with")  # the paste's rest was dropped: not answers
    term.type(b"\x04")  # Ctrl-D: no edit, so no approval (no journal: the call is denied)
    term.expect("allow? [y]es")  # the second call is asked about, not answered by the `y`
    term.type(b"n\n")
    code, shown = term.end()
    assert code == 0, shown
    assert paid(work) == [], shown


def test_an_answer_that_is_not_utf8_is_refused_not_mangled(work: Path) -> None:
    """A person on a Latin-1 terminal answers a text question with `café` (byte 0xE9): the
    run silently records `caf\ufffd` (a replacement character) as the answer. An answer
    that cannot be read must be refused with a reason and asked again, as a wrong value is."""
    term = Terminal(work, "run", "go", "--graph", "why.yaml", "--runtime", "sqlite:j.db")
    term.expect("answer (str")
    term.type(b"caf\xe9\n")
    asked_again = term.expect("answer (")
    assert "try again" in asked_again, term.shown
    term.type(b"cafe\n")
    code, shown = term.end()
    assert code == 0, shown

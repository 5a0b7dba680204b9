"""The command as people meet it: every argument has help, --version, colour in a terminal
(a real pseudo-terminal) and plain text in a pipe, exit codes, Ctrl-C by a real SIGINT."""

from __future__ import annotations

import argparse
import json
import os
import pty
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from loomgraph.cli.main import build_parser

TESTS = Path(__file__).parent
ROOT = TESTS.parent
ESC = "\x1b["

HELPERS = '''
import asyncio
import sys

from loomgraph.models import ScriptedModel

CALL = {"text": "", "tool_calls": [{"tool": "search", "args": {"query": "x"}}]}


def calls_search(**kw):
    return ScriptedModel([CALL, "done"])


def search(query: str) -> str:
    """Search.

    Args:
        query: what to look for
    """
    return "found"


class Stuck:
    """A model that never answers: the run waits until it is stopped."""

    name = "stuck"

    async def stream(self, request):
        print("MODEL-WAITING", file=sys.stderr, flush=True)
        await asyncio.Event().wait()
        yield {}


stuck = Stuck()
'''


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A folder with helper modules and agent files; the command runs there."""
    (tmp_path / "h.py").write_text(HELPERS)
    (tmp_path / "ask.yaml").write_text(
        "schema_version: 1\nname: asker\nmodel: h:calls_search\ntools: [h:search]\n"
        "runtime: sqlite:./j.db\npermissions: {ask: [search]}\n"
    )
    (tmp_path / "broke.yaml").write_text(
        "schema_version: 1\nname: broke\nmodel: echo\nbudget: {total_tokens: 1}\n"
    )
    (tmp_path / "ok.yaml").write_text(
        "schema_version: 1\nname: ok\ninstructions: Be brief.\nruntime: sqlite:./j.db\n"
    )
    return tmp_path


def environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    env.update(TERM="xterm-256color", COLUMNS="120", **extra)
    return env


def piped(cwd: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loomgraph.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environ(**extra),
        timeout=300,
    )


def in_terminal(cwd: Path, *args: str, **extra: str) -> tuple[int, str]:
    """Run the command with stdout and stderr on a pseudo-terminal; its exit code and output."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "loomgraph.cli.main", *args],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        cwd=cwd,
        env=environ(**extra),
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


# --------------------------------------------------------------------------- the parser


def _parsers(parser: argparse.ArgumentParser, path: str = "loomgraph") -> list[tuple[str, Any]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _parsers(sub, f"{path} {name}")
    return found


def test_every_argument_of_every_command_has_help() -> None:
    missing = []
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if not action.help:
                missing.append(f"{path} {action.dest}")
    assert missing == []
    names = {path for path, _ in _parsers(build_parser())}
    assert {"loomgraph audit verify", "loomgraph runs resume", "loomgraph render"} <= names


def test_commands_that_run_or_inspect_an_agent_take_dash_a() -> None:
    for path, parser in _parsers(build_parser()):
        if path.split()[1:2] == ["keys"]:
            continue  # they load an Agent: a required --agent FILE_OR_MODULE:ATTR (test_cli)
        if path.split()[-1] in (
            "run",
            "render",
            "validate",
            "list",
            "show",
            "resume",
            "retry",
            "fork",
            "diff",
            "pending",
            "approve",
            "deny",
        ):
            assert any("-a" in a.option_strings for a in parser._actions), path


def test_version(tmp_path: Path) -> None:
    done = piped(tmp_path, "--version")
    assert done.returncode == 0 and done.stdout.startswith("loomgraph ")


def test_python_dash_m_loomgraph_is_the_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loomgraph", "--bogus"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environ(),
        timeout=300,
    )
    assert done.returncode == 2 and done.stderr.startswith("usage: loomgraph "), done.stderr


# --------------------------------------------------------------------------- colour or not


COMMANDS = {
    "run": ("run", "hello", "-a", "ok.yaml"),
    "validate": ("validate", "ok.yaml"),
    "graphs": ("graphs",),
    "render": ("render", "react", "-o", "react.svg"),
    "runs-list": ("runs", "list", "-a", "ok.yaml"),
    "runs-show": ("runs", "show", "RUN", "-a", "ok.yaml"),
    "runs-diff": ("runs", "diff", "RUN", "0", "1", "-a", "ok.yaml"),
    "runs-pending": ("runs", "pending", "-a", "ask.yaml"),
    "render-run": ("render", "react", "--run", "RUN", "-a", "ok.yaml", "-o", "run.svg"),
    "audit-verify": ("audit", "verify", "missing.jsonl", "--unsigned"),
}
# Commands that read a run: one is made first, and RUN stands for its id.
NEEDS_A_RUN = {"runs-list", "runs-show", "runs-diff", "render-run"}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_plain_when_piped_colour_in_a_terminal(work: Path, name: str) -> None:
    command = COMMANDS[name]
    if name in NEEDS_A_RUN:
        made = piped(work, "run", "first", "-a", "ok.yaml", "--json")
        run_id = json.loads(made.stdout.splitlines()[-1])["run_id"]
        command = tuple(run_id if arg == "RUN" else arg for arg in command)
    if name == "runs-pending":
        assert piped(work, "run", "hi", "-a", "ask.yaml").returncode == 3
    done = piped(work, *command)
    assert ESC not in done.stdout + done.stderr, name
    code, shown = in_terminal(work, *command)
    assert code == done.returncode, shown
    if name != "graphs":  # a bare list of names has nothing to colour
        assert ESC in shown, shown
    code, shown = in_terminal(work, *command, NO_COLOR="1")
    assert ESC not in shown


# --------------------------------------------------------------------------- exit codes


def test_exit_codes(work: Path) -> None:
    assert piped(work, "run", "hi", "-a", "ok.yaml").returncode == 0
    (work / "bad.yaml").write_text("name: b\nentry: a\nnodes:\n  a: {kind: modle}\n")
    assert piped(work, "validate", "bad.yaml").returncode == 1
    unknown = piped(work, "run", "hi", "--model", "gpt-9")
    assert unknown.returncode == 2 and "'openai:NAME'" in unknown.stderr
    assert piped(work, "runs", "lst").returncode == 2
    asked = piped(work, "run", "hi", "-a", "ask.yaml")
    assert asked.returncode == 3, asked.stdout + asked.stderr
    assert "awaiting_approval" in asked.stdout
    broke = piped(work, "run", "hi", "-a", "broke.yaml")
    assert broke.returncode == 4, broke.stdout + broke.stderr
    assert "budget_exhausted" in broke.stdout


def test_json_lines_everywhere(work: Path) -> None:
    import json

    ran = piped(work, "run", "hi", "-a", "ok.yaml", "--json")
    events = [json.loads(line) for line in ran.stdout.splitlines()]
    assert events[-1]["kind"] == "run_completed"
    listed = piped(work, "runs", "list", "-a", "ok.yaml", "--json")
    assert [json.loads(line)["status"] for line in listed.stdout.splitlines()] == ["completed"]


# --------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_stops_the_run_with_one_line_saying_how_to_resume(work: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loomgraph.cli.main",
            "run",
            "hi",
            "--model",
            "h:stuck",
            "--runtime",
            "sqlite:j.db",
        ],
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
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    with sqlite3.connect(work / "j.db") as db:
        run_id, status = db.execute("SELECT run_id, status FROM runs").fetchone()
    assert lines[0] == (
        f"loomgraph: stopped; resume with: loomgraph runs resume {run_id} --model h:stuck "
        "--runtime sqlite:j.db"
    )
    assert status != "running"

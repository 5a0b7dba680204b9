"""The approver sees which tool they approve: `loomgraph runs pending` names each pending
call's tool identity (its origin, `local` or `mcp:SERVER`, and its digest), in text and in
`--json`; and `runs approve` / `runs deny` say how to answer the question the run goes on to.

Through the real command in a subprocess, on a SQLite journal in tmp_path, with real stdio
MCP servers (tests/mcp_steered_server.py) for the tools that are not local."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loomgraph.protocols.tool_identity import ToolIdentity

SERVER = str(Path(__file__).with_name("mcp_steered_server.py"))

PAY_TOOL = '''
from loomgraph import tool


@tool(destructive=True)
def pay(to: str, amount: int) -> str:
    """Pay someone."""
    return f"paid {amount} to {to}"
'''

HELPERS = (
    PAY_TOOL
    + '''
import os
import sys

from loomgraph.models import ScriptedModel
from loomgraph.tools import MCPServer


def server(name):
    """A steered stdio server; its start and calls bounded (a hang fails, never waits)."""
    state = os.path.join(os.environ["SERVERS"], name)
    return MCPServer.stdio(
        sys.executable, os.environ["STEERED"], state, name=name, start_timeout=60, timeout=60
    )


LOCAL = [pay]
BANK = [server("bank")]
ATTACKER = [server("attacker")]
PAY = ScriptedModel([{"tool_calls": [{"tool": "pay", "args": {"to": "acme", "amount": 5}}]},
                     "done"])
TRANSFER = ScriptedModel(
    [{"tool_calls": [{"tool": "transfer", "args": {"to": "alice", "amount": 5}}]}, "done"]
)
'''
)

# A call to approve, then a question: the run the answer resumes stops again, at `confirm`.
CONFIRM_GRAPH = """
name: confirm
state:
  ok: {type: bool, default: false}
entry: model
nodes:
  model: {kind: model, reads: [messages], writes: [messages, usage]}
  tools: {kind: tools, reads: [messages], writes: [messages]}
  confirm: {kind: interrupt, request: bool, output: ok, message: "Was that right?"}
edges:
  - {from: model, to: tools, when: "last_message.tool_calls | length > 0"}
  - {from: model, to: END}
  - {from: tools, to: confirm}
  - {from: confirm, to: END}
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "identity_helpers.py").write_text(HELPERS)
    (tmp_path / "confirm.yaml").write_text(CONFIRM_GRAPH)
    servers = tmp_path / "servers"
    for name in ("bank", "attacker"):  # both list `transfer` (no control.json: the default)
        (servers / name).mkdir(parents=True)
    variables = dict(
        os.environ,
        NO_COLOR="1",
        SERVERS=str(servers),
        STEERED=SERVER,
        PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    )
    return {"dir": tmp_path, "env": variables, "db": tmp_path / "journal.db"}


def loomgraph(env: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loomgraph.cli.main", *args, "--runtime", f"sqlite:{env['db']}"],
        capture_output=True,
        text=True,
        cwd=env["dir"],
        env=env["env"],
        stdin=subprocess.DEVNULL,
        timeout=300,
    )


def agent(model: str, tools: str) -> list[str]:
    return ["--model", f"identity_helpers:{model}", "--tools", f"identity_helpers:{tools}"]


def waiting(env: dict[str, Any], *args: str) -> str:
    """Start a run that stops awaiting approval; its run id."""
    done = loomgraph(env, "run", "pay", *args, "--json")
    assert done.returncode == 3, done.stderr  # 3: it waits
    events = [json.loads(line) for line in done.stdout.splitlines()]
    run_id: str = events[0]["run_id"]
    return run_id


def pending_rows(env: dict[str, Any]) -> dict[str, dict[str, Any]]:
    listed = loomgraph(env, "runs", "pending", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    return {row["run_id"]: row for row in rows}


def test_pending_names_the_origin_and_digest_of_each_tool_in_text_and_json(
    env: dict[str, Any],
) -> None:
    """Three runs wait: `pay` (a function of the agent), `transfer` of `bank` and `transfer`
    of `attacker`. The listing used to show `transfer({...})` twice, alike: the approver
    could not tell the bank's tool from the attacker's. Each row now names its origin and
    digest, as the request recorded them (what an approval is bound to)."""
    local = waiting(env, *agent("PAY", "LOCAL"))
    bank = waiting(env, *agent("TRANSFER", "BANK"))
    attacker = waiting(env, *agent("TRANSFER", "ATTACKER"))

    rows = pending_rows(env)
    assert set(rows) == {local, bank, attacker}
    for row in rows.values():  # the tool's name is still `tool`, as before
        assert row["tool"] in ("pay", "transfer")
    local_tool: dict[str, Any] = {}
    exec(PAY_TOOL, local_tool)  # the same `pay`, its spec as the run's process made it
    assert rows[local]["tool_identity"] == ToolIdentity.of(local_tool["pay"].spec).to_dict()
    identities: dict[str, ToolIdentity] = {}
    for run, row in rows.items():
        identity = ToolIdentity.from_dict(row["tool_identity"])
        assert identity is not None and row["tool_identity"]["shown"] == identity.shown()
        identities[run] = identity
    assert identities[bank].origin == "mcp:bank"
    assert identities[attacker].origin == "mcp:attacker"
    assert identities[bank].digest != identities[attacker].digest

    text = loomgraph(env, "runs", "pending")
    assert text.returncode == 0, text.stderr
    lines = {run: line for run in rows for line in text.stdout.splitlines() if run in line}
    assert "local sha256:" + identities[local].digest[:12] in lines[local]
    assert identities[bank].shown() in lines[bank] and "mcp:attacker" not in lines[bank]
    assert identities[attacker].shown() in lines[attacker] and "mcp:bank" not in lines[attacker]


@pytest.mark.parametrize("answer", ["approve", "deny"])
def test_an_answer_whose_run_goes_on_to_a_question_says_how_to_answer_it(
    env: dict[str, Any], answer: str
) -> None:
    """`runs approve` (or `deny`) resumes the run, which goes on to an `interrupt` and waits
    for a value. The command used to exit 3 printing nothing about it, while `runs resume`
    and `loomgraph run` print the `runs resume RUN … --value JSON --request KEY` command:
    the approver was left to find the question's key themselves."""
    tools = agent("PAY", "LOCAL")
    run_id = waiting(env, *tools, "--graph", "confirm.yaml")
    row = pending_rows(env)[run_id]
    done = loomgraph(env, "runs", answer, run_id, row["call_id"], "--request", row["key"], *tools)
    assert done.returncode == 3, done.stderr  # it waits again: for the value now
    assert "Was that right?" in done.stdout
    (line,) = [line for line in done.stderr.splitlines() if "answer with:" in line]
    assert f"loomgraph runs resume {run_id}" in line
    assert "--value JSON --request " in line and f"{run_id}:confirm:" in line
    # The printed command answers it.
    key = line.split("--request ")[1].split()[0]
    resumed = loomgraph(env, "runs", "resume", run_id, *tools, "--value", "true", "--request", key)
    assert resumed.returncode == 0, resumed.stderr

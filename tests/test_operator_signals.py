"""Probe "signals": what an SRE reads of a run from outside (OpenTelemetry spans and metrics,
the audit log) disagrees with what the run did.

- A waiting run cancelled over HTTP ends with no audit entry: the trail's last word on it is
  `awaiting_approval`, and nobody is named as having cancelled it.
- (The cost a budget priced, and tokens a broken model attempt billed, missing from the chat
  spans and the token and cost metrics: fixed, tested in `test_span_usage.py`.)
- `loomgraph runs approve` without `--as` writes an `approval` entry naming nobody.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from test_serve_api import served


def _entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- audit: cancel


async def test_a_waiting_run_cancelled_over_http_has_its_end_in_the_audit_log(
    tmp_path: Path,
) -> None:
    """An operator cancelled (over HTTP, as alice) a run waiting for an approval. The journal
    says `cancelled by alice`, but the audit log holds no entry for it: its last entry for the
    run is `run_completed` `awaiting_approval`, so the trail says the run still waits and
    nobody cancelled it. Every end of a run (`cancelled` too) should be audited
    `run_completed` with its status and reason."""
    async with served(tmp_path) as s:
        waiting = (await s.post("alice", "/v1/runs", {"input": "pay a"})).json()
        assert waiting["status"] == "awaiting_approval", waiting
        run_id = waiting["run_id"]
        cancelled = await s.post("alice", f"/v1/runs/{run_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
    ends = [
        e["payload"]
        for e in _entries(tmp_path / "audit.jsonl")
        if e["run_id"] == run_id and e["action"] == "run_completed"
    ]
    assert [end["status"] for end in ends] == ["awaiting_approval", "cancelled"], ends
    assert ends[-1]["reason"] == "cancelled by alice"


# --------------------------------------------------------------------------- audit: approver

HELPERS = '''
from loomgraph import tool
from loomgraph.models import ScriptedModel


@tool(destructive=True)
def pay(to: str, amount: int) -> str:
    """Pay someone."""
    return f"paid {amount} to {to}"


TOOLS = [pay]
PAY = ScriptedModel([{"tool_calls": [{"tool": "pay", "args": {"to": "acme", "amount": 5}}]},
                     "done"])
'''

AGENT_FILE = """schema_version: 1
name: payer
instructions: You pay.
model: signal_helpers:PAY
tools: [signal_helpers:TOOLS]
runtime: sqlite:./journal.db
audit_log: {file: ./audit.jsonl, unsigned: true}
"""


def test_an_approval_given_from_the_shell_names_who_approved(tmp_path: Path) -> None:
    """An operator approved a waiting payment with the very command the stopped run printed
    (`loomgraph runs approve RUN CALL -a agent.yaml --request KEY`, no `--as`). The payment
    ran and the audit log's `approval` entry has `"approver": ""`: the record of who allowed
    a destructive call names nobody. The command should either name someone (the login it
    runs under, say) or refuse to approve anonymously."""
    (tmp_path / "signal_helpers.py").write_text(HELPERS)
    (tmp_path / "agent.yaml").write_text(AGENT_FILE)
    env = dict(os.environ, PYTHONPATH=str(tmp_path), USER="oncall", LOGNAME="oncall")

    def loomgraph(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "loomgraph.cli.main", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
        )

    waiting = loomgraph("run", "pay acme", "-a", "agent.yaml")
    assert waiting.returncode == 3, waiting.stderr  # awaiting approval
    assert "approve with:" in waiting.stderr and "--as" not in waiting.stderr
    row = json.loads(loomgraph("runs", "pending", "-a", "agent.yaml", "--json").stdout)
    done = loomgraph(
        "runs", "approve", row["run_id"], row["call_id"], "-a", "agent.yaml",
        "--request", row["key"],
    )  # fmt: skip
    approvals = [e for e in _entries(tmp_path / "audit.jsonl") if e["action"] == "approval"]
    if done.returncode == 2:  # refused to approve anonymously: nothing was approved
        assert approvals == []
        return
    assert done.returncode == 0, done.stderr
    (approval,) = approvals
    assert approval["payload"]["allow"] is True
    assert approval["payload"]["approver"], approval

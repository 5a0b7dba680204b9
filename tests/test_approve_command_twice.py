"""An approval answered twice from the shell never pays twice (found by a probe; failed
before its fix). Real parts: a SQLite journal file, the `loomgraph` command in a subprocess,
payments counted in a ledger file outside the journal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# ------------------------------------------------------------------ the shell

HELPERS = '''
import os
from loomgraph import tool
from loomgraph.models import ScriptedModel


@tool(destructive=True)
def pay(to: str, amount: int) -> str:
    """Pay someone."""
    with open(os.environ["TRUST_LEDGER"], "a") as f:
        f.write(f"{to}\\t{amount}\\n")
    return f"paid {amount} to {to}"


TOOLS = [pay]


def _turn(request):
    # A model that numbers its calls per turn, as many do: both payments are `call_pay`.
    if request.call_index < 2:
        call = {"id": "call_pay", "tool": "pay", "args": {"to": "acme", "amount": 5}}
        return {"tool_calls": [call]}
    return "done"


PAY_TWICE = ScriptedModel(_turn)
'''


def test_an_approve_command_run_twice_never_pays_a_second_time(tmp_path: Path) -> None:
    """A script answers a waiting payment with `loomgraph runs approve RUN call_pay` and, its
    first attempt having timed out on its side, runs the same command again. The run had gone
    on to a second, identical payment (the model reused the id `call_pay`): the repeated
    command approves it, and acme is paid twice. The HTTP API and `mcp-serve` require the
    request's key for this reason; `runs approve` takes `--request` but does not require it
    (`cli/approvals.py` `_answer`), and an unkeyed answer bound to whatever request of that
    call id was pending when it arrived. Now the command needs `--request` (it prints the
    line that answers the pending request), and the same command run again is refused."""
    (tmp_path / "trust_helpers.py").write_text(HELPERS)
    ledger = tmp_path / "ledger.tsv"
    env = dict(
        os.environ,
        TRUST_LEDGER=str(ledger),
        PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    )
    agent = [
        "--model",
        "trust_helpers:PAY_TWICE",
        "--tools",
        "trust_helpers:TOOLS",
        "--runtime",
        f"sqlite:{tmp_path / 'journal.db'}",
    ]

    def loomgraph(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "loomgraph.cli.main", *args, *agent, "--json"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
        )

    started = loomgraph("run", "pay acme")
    assert started.returncode == 3, started.stderr
    stopped = json.loads(started.stdout.splitlines()[-1])["payload"]["result"]
    run_id, key = stopped["run_id"], stopped["pending"]["key"]
    unnamed = loomgraph("runs", "approve", run_id, "call_pay")  # the request not named
    assert unnamed.returncode == 2, unnamed.stdout
    assert f"--request {key}" in unnamed.stderr  # the line that answers it, to copy
    assert not ledger.exists()  # refused before anything ran
    first = loomgraph("runs", "approve", run_id, "call_pay", "--request", key)
    assert first.returncode == 3, first.stderr  # paid once; waits at the second payment
    assert ledger.read_text().splitlines() == ["acme\t5"]
    again = loomgraph("runs", "approve", run_id, "call_pay", "--request", key)  # repeated
    assert ledger.read_text().splitlines() == ["acme\t5"], "the repeated command paid again"
    assert again.returncode == 2, again.stdout
    assert "answered already" in again.stderr or "not pending" in again.stderr, again.stderr

"""A run is pinned to the budget caps and the audit log it started under, as to its permission
policy (docs/governance.md, *Runs are pinned to their policy*). What this checks:

- `loomgraph runs approve` without the agent file (`-a`) of a budgeted, audited run is
  refused (exit 2, saying to pass `-a`): the approver's command line no longer decides
  whether the run user's caps apply or the approval is logged; with `-a` her per-user cap
  holds (`budget_exhausted` on `user:alice:model_calls`) and the approval naming the
  approver is in her run's audit log;
- in Python, a resume by an Agent without the run's budget, or with other caps, is
  `GovernanceChanged` before anything runs; one with the same caps (another object) goes
  on; `override_policy=True` goes on and writes a `policy_override` entry naming the budget;
- a resume without the run's audit log, or with a log elsewhere, is refused; the same log
  (another object) goes on and logs the approval;
- a retry is refused alike;
- a run journaled before budgets and audit logs were pinned resumes as before, and a run
  started with neither resumes under any.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from loomgraph import Agent, tool
from loomgraph.agent.governance_state import GovernanceChanged, describe_ledger
from loomgraph.cli.main import main
from loomgraph.engine.effects import Approval
from loomgraph.governance import (
    BudgetConfig,
    Caps,
    PostgresLedger,
    SqliteLedger,
    StandardBudget,
)
from loomgraph.models import ScriptedModel
from loomgraph.observability import FileAuditLog
from loomgraph.runtime import SqliteRuntime

# --------------------------------------------------------------------- the command line

# The agent's code, imported by the CLI from the current directory (the test's tmp_path).
TOOLS_MODULE = '''
from loomgraph import tool
from loomgraph.models import ScriptedModel


@tool(destructive=True)
def pay(to: str, amount: int) -> str:
    """Pay someone."""
    return f"paid {amount} to {to}"


def _script(request):
    if request.call_index == 0:
        return {"tool_calls": [{"id": "c1", "tool": "pay", "args": {"to": "acme", "amount": 5}}]}
    return "paid it"


def model():
    return ScriptedModel(_script)
'''

# alice may make one model call in all (per_user), and every run is audited.
AGENT_FILE = """
schema_version: 1
name: payer
instructions: You pay bills.
model: governed_payer:model
tools: [governed_payer:pay]
runtime: sqlite:j.db
budget: {per_user: {model_calls: 1}}
audit_log: {file: ./audit.jsonl, unsigned: true}
"""


def _waiting_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """alice's run, started from the agent file, waiting for approval of `pay` after her one
    model call; its id and the request's key."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "governed_payer.py").write_text(TOOLS_MODULE)
    (tmp_path / "agent.yaml").write_text(AGENT_FILE)
    code = main(["run", "pay acme", "-a", "agent.yaml", "--user", "alice", "--json", "--no-input"])
    assert code == 3  # waiting for approval

    async def pending() -> tuple[str, str]:
        runtime = SqliteRuntime(str(tmp_path / "j.db"))
        try:
            (record,) = await runtime.runs("alice")
        finally:
            await runtime.close()
        assert record.result is not None
        return record.run_id, record.result["pending"]["key"]

    return asyncio.run(pending())


def _approve(
    run_id: str, key: str, capsys: pytest.CaptureFixture[str], *agent_file: str
) -> tuple[int, dict[str, Any], str]:
    """`runs approve` as an approver types it from the pending list (the journal, the run's
    model and tools, who answers), with `agent_file` (`-a agent.yaml`) or without: its exit
    code, its result and its stderr."""
    capsys.readouterr()
    code = main(
        [
            "runs",
            "approve",
            run_id,
            "c1",
            "--request",
            key,
            "--runtime",
            "sqlite:j.db",
            "--model",
            "governed_payer:model",
            "--tools",
            "governed_payer:pay",
            "--as",
            "boss",
            "--json",
            *agent_file,
        ]
    )
    captured = capsys.readouterr()
    out = captured.out.strip().splitlines()
    return code, dict(json.loads(out[-1])["result"]) if out else {}, captured.err


def _run_actions(tmp_path: Path, run_id: str) -> list[tuple[str, Any]]:
    return [
        (entry["action"], entry["payload"].get("approver"))
        for entry in map(json.loads, (tmp_path / "audit.jsonl").read_text().splitlines())
        if entry["run_id"] == run_id
    ]


def test_an_approvers_resume_keeps_the_run_users_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """alice's caps hold whoever takes her run on: without her agent file the approval is
    refused (saying to pass -a), with it her run ends on her cap."""
    run_id, key = _waiting_run(tmp_path, monkeypatch)
    code, result, err = _approve(run_id, key, capsys)
    spent = (result.get("usage") or {}).get("model_calls")
    assert result.get("status") != "completed" or spent == 1, (
        f"alice's run, resumed by an approver without the agent file, went on past her cap "
        f"of 1 model call: {result.get('status')} with {spent} model calls"
    )
    assert code == 2 and "budget" in err and "-a" in err, err
    assert "override_policy" not in err  # the command line has no override
    code, result, err = _approve(run_id, key, capsys, "-a", "agent.yaml")
    assert result["status"] == "budget_exhausted", (code, result, err)
    assert "user:alice:model_calls" in result["reason"]


def test_an_approvers_resume_writes_the_approval_to_the_runs_audit_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The approval that moves money is in the run's own audit log: without the agent file
    (and so without the log) it is refused, nothing paid or logged; with it, logged as boss's."""
    run_id, key = _waiting_run(tmp_path, monkeypatch)
    before = _run_actions(tmp_path, run_id)
    code, result, err = _approve(run_id, key, capsys)
    assert code == 2 and "audit log" in err and "-a" in err, err
    assert result == {} and _run_actions(tmp_path, run_id) == before
    _approve(run_id, key, capsys, "-a", "agent.yaml")
    actions = _run_actions(tmp_path, run_id)
    assert ("approval", "boss") in actions, (
        f"the approval boss gave for alice's payment is not in her run's audit log: {actions}"
    )


# ------------------------------------------------------------------------- the Python API

paid: list[int] = []


@tool(destructive=True)
def pay(to: str, amount: int) -> str:
    """Pay someone."""
    paid.append(amount)
    return f"paid {amount} to {to}"


@pytest.fixture(autouse=True)
def _clear() -> None:
    paid.clear()


def _script() -> list[Any]:
    return [
        {"tool_calls": [{"id": "c1", "tool": "pay", "args": {"to": "acme", "amount": 5}}]},
        "ok",
    ]


def _agent(runtime: SqliteRuntime, **governance: Any) -> Agent:
    return Agent("x", model=ScriptedModel(_script()), tools=[pay], runtime=runtime, **governance)


def _caps(model_calls: int) -> StandardBudget:
    return StandardBudget(BudgetConfig(per_user=Caps(model_calls=model_calls)))


async def _waiting(runtime: SqliteRuntime, **governance: Any) -> str:
    first = await _agent(runtime, **governance).run("pay acme", user_id="alice")
    assert first.status == "awaiting_approval"
    return first.run_id


async def test_a_resume_without_the_runs_budget_or_under_other_caps_is_refused(
    tmp_path: Path,
) -> None:
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    try:
        run_id = await _waiting(runtime, budget=_caps(5))
        for other in ({}, {"budget": _caps(50)}):
            with pytest.raises(GovernanceChanged, match="budget") as caught:
                await _agent(runtime, **other).resume(run_id, approve=Approval("c1", True))
            assert caught.value.run_id == run_id and set(caught.value.changed) == {"budget"}
        assert paid == [] and (await runtime.load_run(run_id)).status == "awaiting_approval"  # type: ignore[union-attr]
        # The same caps, in another budget object (another process's): it goes on.
        done = await _agent(runtime, budget=_caps(5)).resume(run_id, approve=Approval("c1", True))
        assert done.status == "completed" and paid == [5]
    finally:
        await runtime.close()


async def test_a_resume_with_the_runs_caps_in_another_ledger_is_refused(tmp_path: Path) -> None:
    """The caps alone are not the budget: the same caps kept in another ledger start from
    nothing spent (alice's spending stays where her run was charged), so a resume there let
    her past her cap (found by a probe: two payments under `tool_calls=1`)."""
    path = tmp_path / "journal.db"
    runtime = SqliteRuntime(str(path))
    try:
        run_id = await _waiting(runtime, budget=_caps(5))  # its ledger: the journal's file
        elsewhere = StandardBudget(
            BudgetConfig(per_user=Caps(model_calls=5)), SqliteLedger(tmp_path / "other.db")
        )
        with pytest.raises(GovernanceChanged, match=r"other\.db") as caught:
            await _agent(runtime, budget=elsewhere).resume(run_id, approve=Approval("c1", True))
        pinned, current = caught.value.changed["budget"]
        assert pinned["fingerprint"] == current["fingerprint"]  # the same caps
        assert pinned["ledger"]["at"] == os.path.realpath(path)
        assert paid == []
        # The journal's file behind another ledger object is the same ledger: it goes on.
        same = StandardBudget(BudgetConfig(per_user=Caps(model_calls=5)), SqliteLedger(path))
        done = await _agent(runtime, budget=same).resume(run_id, approve=Approval("c1", True))
        assert done.status == "completed" and paid == [5]
    finally:
        await runtime.close()


def test_a_postgres_ledger_is_pinned_by_its_database_and_schema() -> None:
    pytest.importorskip("asyncpg")
    ledger = PostgresLedger("postgresql://u:s3cret@db.example:5432/app", schema="budgets")
    described = describe_ledger(ledger)
    assert described is not None
    assert described == {
        "ledger": "loomgraph.governance.pg_ledger.PostgresLedger",
        "at": "postgres database 'app', schema 'budgets'",
    }  # not the server: one reached through a pooler or another port is the same ledger


async def test_a_run_pinned_to_caps_before_ledgers_were_pinned_goes_on_in_any_ledger(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.db"
    runtime = SqliteRuntime(str(path))
    try:
        run_id = await _waiting(runtime, budget=_caps(5))
    finally:
        await runtime.close()
    with sqlite3.connect(path) as db:  # as a journal written before keeps it: no `ledger`
        (text,) = db.execute("SELECT initial FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        initial = json.loads(text)
        del initial["policy"]["budget"]["ledger"]
        db.execute("UPDATE runs SET initial = ? WHERE run_id = ?", (json.dumps(initial), run_id))
    runtime = SqliteRuntime(str(path))
    try:
        elsewhere = StandardBudget(
            BudgetConfig(per_user=Caps(model_calls=5)), SqliteLedger(tmp_path / "other.db")
        )
        done = await _agent(runtime, budget=elsewhere).resume(run_id, approve=Approval("c1", True))
        assert done.status == "completed" and paid == [5]
    finally:
        await runtime.close()


async def test_a_budget_override_goes_on_and_is_audited(tmp_path: Path) -> None:
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    log = tmp_path / "audit.jsonl"
    try:
        run_id = await _waiting(
            runtime, budget=_caps(5), audit_log=FileAuditLog(log, unsigned=True)
        )
        other = _agent(runtime, budget=_caps(50), audit_log=FileAuditLog(log, unsigned=True))
        done = await other.resume(run_id, approve=Approval("c1", True), override_policy=True)
        assert done.status == "completed" and paid == [5]
    finally:
        await runtime.close()
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    (override,) = [e["payload"] for e in entries if e["action"] == "policy_override"]
    assert override["budget"]["pinned"] != override["budget"]["current"]
    assert "pinned" not in override  # the permission policy did not change


async def test_a_resume_without_the_runs_audit_log_or_with_another_is_refused(
    tmp_path: Path,
) -> None:
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    log = tmp_path / "audit.jsonl"
    try:
        run_id = await _waiting(runtime, audit_log=FileAuditLog(log, unsigned=True))
        elsewhere = FileAuditLog(tmp_path / "other.jsonl", unsigned=True)
        for other in ({}, {"audit_log": elsewhere}):
            with pytest.raises(GovernanceChanged, match="audit log") as caught:
                await _agent(runtime, **other).resume(run_id, approve=Approval("c1", True))
            assert set(caught.value.changed) == {"audit_log"}
        assert paid == []
        same = FileAuditLog(log, unsigned=True)
        done = await _agent(runtime, audit_log=same).resume(
            run_id, approve=Approval("c1", True, approver="boss")
        )
        assert done.status == "completed" and paid == [5]
    finally:
        await runtime.close()
    approvals = [
        e["payload"].get("approver")
        for e in map(json.loads, log.read_text().splitlines())
        if e["action"] == "approval"
    ]
    assert approvals == ["boss"]


async def test_a_retry_without_the_runs_budget_is_refused(tmp_path: Path) -> None:
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    try:
        run_id = await _waiting(runtime, budget=_caps(5))
        with pytest.raises(GovernanceChanged, match="budget"):
            await _agent(runtime).retry(run_id)
    finally:
        await runtime.close()


async def test_a_run_journaled_before_budgets_and_logs_were_pinned_resumes_as_before(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.db"
    runtime = SqliteRuntime(str(path))
    try:
        run_id = await _waiting(
            runtime, budget=_caps(5), audit_log=FileAuditLog(tmp_path / "a.jsonl", unsigned=True)
        )
    finally:
        await runtime.close()
    # The start as a journal written before this change keeps it: the policy alone.
    with sqlite3.connect(path) as db:
        (text,) = db.execute("SELECT initial FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        initial = json.loads(text)
        assert {"budget", "audit_log"} <= set(initial["policy"])
        initial["policy"] = {k: initial["policy"][k] for k in ("fingerprint", "policy")}
        db.execute("UPDATE runs SET initial = ? WHERE run_id = ?", (json.dumps(initial), run_id))
    runtime = SqliteRuntime(str(path))
    try:
        done = await _agent(runtime).resume(run_id, approve=Approval("c1", True))
        assert done.status == "completed" and paid == [5]
    finally:
        await runtime.close()


async def test_a_run_started_without_budget_or_audit_log_resumes_under_either(
    tmp_path: Path,
) -> None:
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    try:
        run_id = await _waiting(runtime)
        governed = _agent(
            runtime,
            budget=_caps(5),
            audit_log=FileAuditLog(tmp_path / "audit.jsonl", unsigned=True),
        )
        done = await governed.resume(run_id, approve=Approval("c1", True))
        assert done.status == "completed" and paid == [5]
    finally:
        await runtime.close()

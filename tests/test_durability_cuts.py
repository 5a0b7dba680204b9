"""Durability where earlier probes did not go: a Postgres journal cut (through a TCP proxy the
test starts, the server itself never touched) at the moment an approval is consumed, and
SIGKILLs of a worker (this file, run as a script) at named points of a governed run: after
the approved call was begun, after the run gave its lease back (found by a probe; each test
fails until its defect is fixed).

Side effects are counted outside the journal, per idempotency key; the audit log is a real
FileAuditLog read back line by line.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import pg
from loomgraph import Agent, tool
from loomgraph.engine.effects import Approval
from loomgraph.models import ScriptedModel
from loomgraph.observability import FileAuditLog
from loomgraph.protocols import RunStatus
from loomgraph.runtime import JournalUnavailable
from loomgraph.runtime.postgres import PostgresRuntime
from tcp_proxy import TcpProxy
from test_approved_replay import pay_then_report
from test_pg_outage import TIMEOUTS, expire, through

pg_schema = pg.pg_schema

# Outside the journal: every execution of `pay`, by idempotency key.
PAID: Counter[str] = Counter()


@tool(destructive=True)
def pay(to: str, amount: int, idempotency_key: str) -> str:
    """Pay someone (destructive: the default rules ask a person first)."""
    PAID[idempotency_key] += 1
    return f"paid {amount} to {to}"


@pytest.fixture(autouse=True)
def _clear() -> None:
    PAID.clear()


class CuttingAuditLog(FileAuditLog):
    """A file audit log that cuts the journal's proxy once an `approval` entry is durable:
    the approval was consumed (journaled, audited), the call not begun yet."""

    proxy: TcpProxy | None = None

    def append_many(self, entries: Any, *, run_id: str, user_id: str | None) -> Any:
        written = super().append_many(entries, run_id=run_id, user_id=user_id)
        if self.proxy is not None and any(action == "approval" for action, _, _ in entries):
            self.proxy.cut()
        return written


def entries(path: Path) -> list[dict[str, Any]]:
    """The audit log's entries, as written."""
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.postgres
async def test_a_journal_cut_as_an_approval_is_consumed_audits_one_use_of_it(
    pg_schema: str, tmp_path: Path
) -> None:
    """alice approves a payment (`Agent.resume(approve=...)`) on a Postgres journal; the
    journal's connection is cut right after the approval was journaled used and its
    `approval` entry written, before the call began (the resume raises
    JournalUnavailable). Once the journal is back, a plain resume pays once (ledger) and a
    second approval is refused, as it should. But the audit log now holds two `approval`
    entries by alice, neither marked `replayed`: `ApprovalDesk.settle` audits an answer read
    back for a call never begun as its first use every time, so each cut at this point adds
    one more "use". Expected: one approval by alice, used once, for one payment.

    (The use's entry is kept with the answer's journal write, and the cut lands after the log
    took it but before the journal could let go of it: no journal can tell that state from a
    crash just before the log took it, so the resume writes the kept copy, behind an
    `audit_restored` marker, rather than risk none. Expected, then: exactly one use audited
    as such, any other non-replayed entry a restored copy of it; nothing kept at the end.)"""
    path = tmp_path / "audit.jsonl"
    port = urlsplit(pg.postgres_dsn()).port or 5432
    direct = PostgresRuntime(pg.postgres_dsn(), schema=pg_schema)

    def agent(runtime: PostgresRuntime, audit: FileAuditLog | None = None) -> Agent:
        return Agent(
            "x",
            model=ScriptedModel(pay_then_report),
            tools=[pay],
            runtime=runtime,
            audit_log=audit or FileAuditLog(path, unsigned=True),
        )

    try:
        first = await agent(direct).run("pay acme")
        assert first.status == RunStatus.AWAITING_APPROVAL
        with TcpProxy("127.0.0.1", port) as proxy:
            cut_off = PostgresRuntime(through(proxy), schema=pg_schema, **TIMEOUTS)
            audit = CuttingAuditLog(path, unsigned=True)
            audit.proxy = proxy
            with pytest.raises(JournalUnavailable):
                await agent(cut_off, audit).resume(
                    first.run_id, approve=Approval("c1", True, approver="alice")
                )
            await cut_off.close()
        assert not PAID  # cut before the call began
        await expire(pg_schema, first.run_id)  # the cut-off worker's lease, run out
        from loomgraph.agent.checkpoints import ApprovalNotPending

        with pytest.raises(ApprovalNotPending):  # used once: a second one is refused
            await agent(direct).resume(first.run_id, approve=Approval("c1", True, "bob"))
        done = await agent(direct).resume(first.run_id)
        assert done.status == RunStatus.COMPLETED, done.reason
        assert done.output == "tool said: paid 5 to acme"
        assert list(PAID.values()) == [1]  # the payment ran once
        assert await direct.kept_audit_entries(first.run_id) == []  # let go of once logged
    finally:
        await direct.close()
    log = entries(path)
    assert [e["payload"].get("replayed", False) for e in log if e["action"] == "tool_result"] == [
        False
    ]
    copies = restored(log)
    used = [
        (e["payload"]["approver"], e["payload"].get("replayed", False))
        for at, e in enumerate(log)
        if e["action"] == "approval" and at not in copies
    ]
    assert [u for u in used if not u[1]] == [("alice", False)], used
    [use] = [
        e["payload"]
        for at, e in enumerate(log)
        if e["action"] == "approval" and at not in copies and not e["payload"].get("replayed")
    ]
    again = [log[at]["payload"] for at in sorted(copies) if log[at]["action"] == "approval"]
    assert all(copy == use for copy in again), again


def restored(log: list[dict[str, Any]]) -> set[int]:
    """The positions of the entries written behind an `audit_restored` marker (copies the
    journal's outbox kept), by run."""
    copies: set[int] = set()
    owed: Counter[str] = Counter()
    for at, entry in enumerate(log):
        run = entry["run_id"]
        if owed[run]:
            copies.add(at)
            owed[run] -= 1
        elif entry["action"] == "audit_restored":
            owed[run] = entry["payload"]["count"]
    return copies


# ------------------------------------------------------------- SIGKILL of a worker
#
# This file is also the worker: `python tests/test_durability_cuts.py DIR KILL [RUN_ID]` runs
# (or, given RUN_ID, resumes) one governed run in DIR and SIGKILLs itself at KILL: right after
# the journal's KILL-th write (a number; 0: never), `lease_released` (right after the run gave
# its lease back) or `pay_begun` (right after the approved `pay` call's effect was journaled
# begun, the audit log slow: an append holding an `approval` entry waits until then, as a
# stalled disk would). The run: the model calls `pay` (the approval handler approves it) and
# `lookup`, then answers; a SQLite journal, memory, a budget and a file audit log, all in DIR;
# each tool call writes a durable ledger line with its idempotency key.

PAY_PROMPT = "Pay acme 5; where is Paris?"
PAY_SCRIPT: list[Any] = [
    {
        "text": "Paying and looking up.",
        "tool_calls": [
            {"id": "c1", "tool": "pay", "args": {"to": "acme", "amount": 5}},
            {"id": "c2", "tool": "lookup", "args": {"city": "Paris"}},
        ],
    },
    "Paid acme; Paris is in France.",
]


def worker_agent(where: Path, kill: str) -> tuple[Agent, Any, Any]:
    """The worker's agent, its journal (counting its writes) and its memory."""
    import os
    import signal
    import threading

    from loomgraph.governance import BudgetConfig, StandardBudget
    from loomgraph.memory import SqliteMemory
    from loomgraph.protocols import EffectRecord
    from loomgraph.runtime.sqlite import SqliteRuntime

    pay_begun = threading.Event()
    completed_logged = threading.Event()  # the log took the run's `run_completed`

    def die(**where_: Any) -> None:
        print(json.dumps({"crash": kill, **where_}), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    def line(key: str, what: str) -> None:
        with open(where / "ledger.tsv", "a", encoding="utf-8") as f:
            f.write(f"{key}\t{what}\n")
            f.flush()
            os.fsync(f.fileno())

    @tool(destructive=True, name="pay")
    def pay_ledgered(to: str, amount: int, idempotency_key: str) -> str:
        """Pay someone."""
        line(idempotency_key, f"pay {to} {amount}")
        return f"paid {amount} to {to}"

    @tool
    def lookup(city: str, idempotency_key: str) -> str:
        """Find the country of a city."""
        line(idempotency_key, f"lookup {city}")
        return "France"

    class Counting(SqliteRuntime):
        """Dies at the worker's kill point."""

        writes = 0

        def _wrote(self, name: str) -> None:
            self.writes += 1
            if kill == str(self.writes):
                die(write=name)

        async def _exec(self, name: str, args: Any) -> int:
            done = await super()._exec(name, args)
            self._wrote(name)
            return done

        def _write(self) -> Any:
            inner = super()._write()
            journal = self

            class Counted:
                async def __aenter__(self) -> Any:
                    return await inner.__aenter__()

                async def __aexit__(self, *exc: Any) -> Any:
                    out = await inner.__aexit__(*exc)
                    if exc[0] is None:
                        journal._wrote("transaction")
                    return out

            return Counted()

        async def begin_effect(self, effect: EffectRecord, **kw: Any) -> Any:
            prior = await super().begin_effect(effect, **kw)
            if effect.kind == "tool" and effect.intent["call"]["tool"] == "pay":
                if kill == "pay_begun":
                    die()
                pay_begun.set()
            return prior

        async def release_lease(self, run_id: str, owner: str) -> bool:
            released = await super().release_lease(run_id, owner)
            if kill == "lease_released":
                # A crash once the log has the run's end (the writer is behind the run: a
                # bounded wait for it, so the kill lands at the same point every time).
                await asyncio.to_thread(completed_logged.wait, 60)
                die()
            return released

    class SlowAudit(FileAuditLog):
        """With `pay_begun`: an append with an `approval` entry waits until `pay` is begun."""

        def append_many(self, entries: Any, *, run_id: str, user_id: str | None) -> Any:
            if kill == "pay_begun" and any(action == "approval" for action, _, _ in entries):
                pay_begun.wait(60)
            written = super().append_many(entries, run_id=run_id, user_id=user_id)
            if any(action == "run_completed" for action, _, _ in entries):
                completed_logged.set()
            return written

    runtime = Counting(where / "journal.db", lease_seconds=6.0)
    memory = SqliteMemory(where / "memory.db")
    agent = Agent(
        "You pay and answer geography.",
        model=ScriptedModel(PAY_SCRIPT),
        tools=[pay_ledgered, lookup],
        runtime=runtime,
        memory=memory,
        budget=StandardBudget(BudgetConfig(tool_calls=1000)),
        audit_log=SlowAudit(where / "audit.jsonl", unsigned=True),
        approval_handler=lambda call, asked: True,
    )
    return agent, runtime, memory


async def worker_main(where: Path, kill: str, run_id: str | None) -> None:
    """Run (or resume) the worker's run; print its id first and its result at the end."""
    agent, runtime, memory = worker_agent(where, kill)
    try:
        if run_id is None:
            session = agent.session(PAY_PROMPT, user_id="alice")
            print(json.dumps({"run_id": session.run_id}), flush=True)
            result = await session.execute(_ignore)
        else:
            result = await agent.resume(run_id)
        print(json.dumps({"result": result.to_dict(), "writes": runtime.writes}), flush=True)
    finally:
        await agent.aclose()
        await memory.close()
        await runtime.close()


async def _ignore(event: Any) -> None:
    """The run's events go nowhere."""


def worker(where: Path, kill: str, run_id: str = "") -> tuple[int, list[dict[str, Any]], str]:
    """Run the worker to its end (its own SIGKILL included): exit code, JSON lines, stderr."""
    import subprocess
    import sys

    args = [sys.executable, __file__, str(where), kill, *([run_id] if run_id else [])]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    return done.returncode, lines, done.stderr


def killed_and_resumed(where: Path, kill: str) -> tuple[str, dict[str, Any]]:
    """The worker's run SIGKILLed at `kill`, its lease run out, then resumed by another
    worker: the run's id and the resumed result."""
    import signal

    from durable_support import expire_lease

    code, lines, err = worker(where, kill)
    assert code == -signal.SIGKILL, (code, lines, err)
    run_id = str(lines[0]["run_id"])
    expire_lease(where / "journal.db", run_id)
    code, lines, err = worker(where, "0", run_id)
    assert code == 0, err
    return run_id, lines[-1]["result"]


def uses(log: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    """The payloads of `action` entries not marked replayed."""
    return [e["payload"] for e in log if e["action"] == action and not e["payload"].get("replayed")]


def test_a_crash_after_the_run_gave_its_lease_back_audits_its_completion_twice(
    tmp_path: Path,
) -> None:
    """A governed run completes; its worker is SIGKILLed right after it gave the run's lease
    back. Its `run_completed` entry was in the audit log already, but the journal's outbox
    still keeps it: the session lets go of kept entries (`keep_unwritten`, its `finally`)
    only after `hold_lease` released the lease. The user resumes the run, as the docs say to
    after a crash: `restore_ended` writes the kept entry again, so the log says the run
    completed twice. Expected: one `run_completed`, as in an uninterrupted run."""
    _, result = killed_and_resumed(tmp_path, "lease_released")
    assert result["status"] == "completed" and result["output"] == PAY_SCRIPT[-1]
    log = entries(tmp_path / "audit.jsonl")
    assert len(uses(log, "run_completed")) == 1, [e["action"] for e in log]


def test_a_crash_after_an_approved_call_was_begun_keeps_the_approvals_use_in_the_audit_log(
    tmp_path: Path,
) -> None:
    """The approval handler approves a `pay` call; the answer is journaled and its `approval`
    entry handed to the run's audit writer, which writes behind (the log is slow); the call's
    effect is journaled begun and the worker is SIGKILLed before the gate's `tool_request`
    flush, so the entry never reached the log. The resume finds the call begun and audits
    the answer it reads back as `replayed: true` (`ApprovalDesk.settle`, `began=`): the log
    holds no use of the approval at all, only a replay of one — a payment whose approval an
    auditor (who skips replays) never sees. Expected: exactly one approval entry not marked
    replayed, as in an uninterrupted run."""
    _, result = killed_and_resumed(tmp_path, "pay_begun")
    assert result["status"] == "completed" and result["output"] == PAY_SCRIPT[-1]
    paid = (tmp_path / "ledger.tsv").read_text().count("\tpay acme 5\n")
    assert paid == 1  # killed before it acted: it ran once, on the resume
    log = entries(tmp_path / "audit.jsonl")
    approvals = [e["payload"] for e in log if e["action"] == "approval"]
    assert [a["approver"] for a in uses(log, "approval")] == ["handler"], approvals


if __name__ == "__main__":
    import sys

    asyncio.run(worker_main(Path(sys.argv[1]), sys.argv[2], sys.argv[3] if sys.argv[3:] else None))

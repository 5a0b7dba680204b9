"""An approval's use is audited once: its `approval` entry is kept in the journal's audit
outbox in the transaction that journals the use, and let go of once the log has it, before
the call acts (tests/test_durability_cuts.py has the journal cut and the SIGKILL that found
the gap; these pin the mechanism).

Real journals (in-memory, a SQLite file, Postgres) and a real `FileAuditLog` read back line
by line; the outage is `CutLog`'s, the one tests/test_audit_outbox.py cuts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import pg
from loomgraph import Agent, tool
from loomgraph.engine.effects import Approval
from loomgraph.models import ScriptedModel
from loomgraph.observability import AuditLogUnavailable, FileAuditLog
from loomgraph.protocols import AuditOutbox, EffectRecord, EffectStatus, RunStatus
from loomgraph.protocols.runtime import current_fence
from loomgraph.runtime import InMemoryRuntime
from loomgraph.runtime.errors import LeaseLost
from loomgraph.runtime.postgres import PostgresRuntime
from loomgraph.runtime.sqlite import SqliteRuntime
from test_approved_replay import pay_then_report
from test_audit_outbox import CutLog, _started

pg_schema = pg.pg_schema

ENTRY = ("approval", "tools", {"call_id": "c1", "approver": "alice"})
KEPT_AT: list[list[Any]] = []  # what the journal kept for the run when `pay` acted


@tool(destructive=True)
async def pay(to: str, amount: int) -> str:
    """Pay someone (destructive: the default rules ask first)."""
    KEPT_AT.append(list(await RUNTIME[0].kept_audit_entries(RUN[0])))
    return f"paid {amount} to {to}"


@tool
def lookup(city: str) -> str:
    """Look a city up (the rules allow it: no approval)."""
    return "France"


RUNTIME: list[Any] = []
RUN: list[str] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    KEPT_AT.clear()
    RUNTIME.clear()
    RUN.clear()


def _journal(kind: str, tmp_path: Path) -> Any:
    return InMemoryRuntime() if kind == "memory" else SqliteRuntime(tmp_path / "journal.db")


def _entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _approvals(path: Path) -> list[tuple[str, bool]]:
    """Each `approval` entry's approver and whether it is marked replayed."""
    return [
        (e["payload"]["approver"], bool(e["payload"].get("replayed")))
        for e in _entries(path)
        if e["action"] == "approval"
    ]


# ---------------------------------------------------------------------------- journals


async def _keeps_with_the_outcome(runtime: Any) -> None:
    """The outcome and the entry are journaled together; a refused outcome (a lost lease,
    an effect never begun) keeps nothing."""
    await _started(runtime, "k1")
    await runtime.begin_effect(EffectRecord("k1", "k1:a", "approval", {"call": {}}))
    old = await runtime.acquire_lease("k1", "a")
    token = current_fence.set(old)
    try:
        await runtime.end_effect_keeping(
            "k1", "k1:a", {"answer": True, "use_kept": True}, EffectStatus.DONE, [ENTRY]
        )
        with pytest.raises(KeyError):  # never begun: nothing kept either
            await runtime.end_effect_keeping("k1", "k1:b", {}, EffectStatus.DONE, [ENTRY])
    finally:
        current_fence.reset(token)
    done = await runtime.effect("k1", "k1:a")
    assert done.status == EffectStatus.DONE and done.outcome == {"answer": True, "use_kept": True}
    assert await runtime.kept_audit_entries("k1") == [ENTRY]
    await runtime.acquire_lease("k1", "b", take_from="a")
    token = current_fence.set(old)  # a zombie's answer
    try:
        with pytest.raises(LeaseLost):
            await runtime.end_effect_keeping(
                "k1", "k1:a", {"answer": False}, EffectStatus.DONE, [("z", "n", {})]
            )
    finally:
        current_fence.reset(token)
    assert (await runtime.effect("k1", "k1:a")).outcome["answer"] is True
    assert await runtime.kept_audit_entries("k1") == [ENTRY]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_journal_keeps_an_entry_with_an_effects_outcome_or_neither(
    tmp_path: Path, kind: str
) -> None:
    runtime = _journal(kind, tmp_path)
    try:
        await _keeps_with_the_outcome(runtime)
    finally:
        await runtime.close()


@pytest.mark.postgres
async def test_the_postgres_journal_keeps_an_entry_with_an_effects_outcome_or_neither(
    pg_schema: str,
) -> None:
    async with PostgresRuntime(pg.postgres_dsn(), schema=pg_schema) as runtime:
        await _keeps_with_the_outcome(runtime)


# ---------------------------------------------------------------------------- runs


def _agent(runtime: Any, log: FileAuditLog, handler: Any = None) -> Agent:
    return Agent(
        "x",
        model=ScriptedModel(pay_then_report),
        tools=[pay],
        runtime=runtime,
        audit_log=log,
        approval_handler=handler,
    )


@pytest.mark.parametrize("answer", [True, False])
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_an_approval_handlers_answer_is_let_go_of_once_the_log_has_it(
    tmp_path: Path, kind: str, answer: bool
) -> None:
    """The handler approves (or denies) `pay`: its use is kept with the answer, in the log
    before the call acts, and the journal keeps nothing once it is (nor at the end)."""
    runtime, path = _journal(kind, tmp_path), tmp_path / "audit.jsonl"
    RUNTIME.append(runtime)
    agent = _agent(runtime, FileAuditLog(path, unsigned=True), lambda call, asked: answer)
    try:
        session = agent.session("pay acme")
        RUN.append(session.run_id)
        result = await session.execute(_ignore)
        assert result.status == RunStatus.COMPLETED, result.reason
        assert await runtime.kept_audit_entries(result.run_id) == []
        answers = [e for e in await runtime.effects(result.run_id) if e.kind == "approval"]
        assert [a.outcome.get("use_kept") for a in answers] == [True]
    finally:
        await agent.aclose()
        await runtime.close()
    assert ([[]] if answer else []) == KEPT_AT  # let go of before `pay` acted
    assert _approvals(path) == [("handler", False)]


async def _ignore(event: Any) -> None:
    """The run's events go nowhere."""


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_call_that_needs_no_approval_keeps_nothing_of_its_own(
    tmp_path: Path, kind: str
) -> None:
    """The hot path is unchanged: a call the rules allow keeps no entry and lets go of none;
    the run's one keep is its end's `run_completed` (one drop once the log has it)."""
    counted: dict[str, int] = {"end_effect_keeping": 0, "keep_audit_entries": 0, "drops": 0}
    base = InMemoryRuntime if kind == "memory" else SqliteRuntime

    class Counted(base):  # type: ignore[misc,valid-type]
        async def end_effect_keeping(self, *args: Any, **kw: Any) -> None:
            counted["end_effect_keeping"] += 1
            await super().end_effect_keeping(*args, **kw)

        async def keep_audit_entries(self, *args: Any) -> None:
            counted["keep_audit_entries"] += 1
            await super().keep_audit_entries(*args)

        async def drop_audit_entries(self, *args: Any) -> None:
            counted["drops"] += 1
            await super().drop_audit_entries(*args)

    def looks_up(request: Any) -> Any:
        if request.call_index == 0:
            return {"tool_calls": [{"id": "l1", "tool": "lookup", "args": {"city": "Paris"}}]}
        return "In France"

    runtime = Counted() if kind == "memory" else Counted(tmp_path / "journal.db")
    agent = Agent(
        "x",
        model=ScriptedModel(looks_up),
        tools=[lookup],
        runtime=runtime,
        audit_log=FileAuditLog(tmp_path / "audit.jsonl", unsigned=True),
    )
    try:
        result = await agent.run("where is Paris?")
    finally:
        await agent.aclose()
        await runtime.close()
    assert result.status == RunStatus.COMPLETED, result.reason
    assert counted == {"end_effect_keeping": 0, "keep_audit_entries": 0, "drops": 1}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_log_outage_as_a_persons_approval_is_used_audits_it_once_at_the_resume(
    tmp_path: Path, kind: str
) -> None:
    """alice approves; the resume takes her answer up, keeping its use with it, and the log
    is down before it can take that entry (nor those made before it): the run stops
    (`AuditLogUnavailable`), its journal keeps them, in order. The log back, the next
    resume writes them once (alice's use among them, not a replay) and the call runs once."""
    runtime, log = _journal(kind, tmp_path), CutLog(tmp_path / "audit.jsonl")
    RUNTIME.append(runtime)
    agent = _agent(runtime, log)
    try:
        first = await agent.run("pay acme")
        assert first.status == RunStatus.AWAITING_APPROVAL
        RUN.append(first.run_id)
        log.down = True
        with pytest.raises(AuditLogUnavailable):
            await agent.resume(first.run_id, approve=Approval("c1", True, approver="alice"))
        kept = [action for action, _, _ in await runtime.kept_audit_entries(first.run_id)]
        assert kept.count("approval") == 1, kept
        log.down = False
        done = await agent.resume(first.run_id)
        assert done.status == RunStatus.COMPLETED and done.output == "tool said: paid 5 to acme"
        assert await runtime.kept_audit_entries(first.run_id) == []
    finally:
        await agent.aclose()
        await runtime.close()
    assert len(KEPT_AT) == 1  # paid once
    assert [a for a in _approvals(log.path) if not a[1]] == [("alice", False)]
    assert log.verify().ok


class Wrapped:
    """A journal of your own, by delegation: without `end_effect_keeping` (`outbox_only`),
    or without an audit outbox at all (`no_outbox`)."""

    def __init__(self, inner: Any, hidden: set[str]) -> None:
        self._inner, self._hidden = inner, hidden

    def __getattr__(self, name: str) -> Any:
        if name in self._hidden:
            raise AttributeError(name)
        return getattr(self._inner, name)


@pytest.mark.parametrize("journal", ["outbox_only", "no_outbox"])
async def test_a_journal_of_your_own_audits_the_use_once_too(tmp_path: Path, journal: str) -> None:
    """Without `end_effect_keeping` the entry is kept just before the answer's outcome;
    without an audit outbox it is audited as before (in the log before the call begins)."""
    hidden = {"end_effect_keeping"}
    if journal == "no_outbox":
        hidden |= {"keep_audit_entries", "kept_audit_entries", "drop_audit_entries"}
    runtime = Wrapped(InMemoryRuntime(), hidden)
    assert isinstance(runtime, AuditOutbox) == (journal == "outbox_only")
    path = tmp_path / "audit.jsonl"
    RUNTIME.append(runtime._inner)
    agent = _agent(runtime, FileAuditLog(path, unsigned=True))
    try:
        first = await agent.run("pay acme")
        RUN.append(first.run_id)
        done = await agent.resume(first.run_id, approve=Approval("c1", True, approver="alice"))
        assert done.status == RunStatus.COMPLETED, done.reason
    finally:
        await agent.aclose()
    # Paid once, its approval in the log by then (the inner journal, with no outbox seen,
    # still holds the first stop's `run_completed`: not this test's business).
    assert [[action for action, _, _ in kept if action == "approval"] for kept in KEPT_AT] == [[]]
    assert _approvals(path) == [("alice", False)]

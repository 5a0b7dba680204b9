"""PostgreSQL faults not tried before, against the real server through a TCP proxy the test
starts: the reply to a run's end lost (the server committed it, or never ran it), the server
going silent while a budgeted run's lease is renewed, and a state of ~11 MB.

A lost reply: the worker's run raises a typed error within its timeouts, and the next look
at the run (a resume) settles it from the journal: the end the server committed, kept as it
was (not written again), or the run going on; no tool runs again (calls counted outside the
journal). A silent server: the run stops once its lease runs out, with the lease's
`JournalUnavailable` (a `LedgerUnavailable` its way out meets charging the cut-off call is
chained to it), and resumed it completes with each tool run once and no hold left."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import pytest

import pg
from loomgraph.errors import ServiceUnavailable
from loomgraph.runtime.postgres import PostgresRuntime
from tcp_proxy import TcpProxy
from test_pg_outage import BOUND, SCRIPT, TIMEOUTS, agent, expire, through

pytestmark = pytest.mark.postgres
pg_schema = pg.pg_schema


class ReplyLosingProxy(TcpProxy):
    """Forwards until the client has sent the statement holding `marker` (its Parse) and, with
    `executed`, asked for it to run (an Execute after that Parse): from then on the server's
    answers are dropped. So the server runs and commits the statement (`executed`), or only
    prepares it (else), and the client hears nothing either way."""

    def __init__(self, host: str, port: int, marker: bytes, *, executed: bool) -> None:
        super().__init__(host, port)
        self.marker, self.executed = marker, executed
        self.parsed = False
        self.losing = False

    def _passes(self, data: bytes, from_server: bool) -> bool:
        if from_server:
            return not self.losing  # once losing, the answer never arrives
        self._watch(data)
        return True

    def _passed(self, data: bytes, from_server: bool) -> None:
        if not from_server and self.parsed and not self.executed:
            self.losing = True

    def _watch(self, data: bytes) -> None:
        """Read the frontend messages of one chunk (type byte, int32 length, body)."""
        at = 0
        while at + 5 <= len(data):
            kind, size = data[at : at + 1], int.from_bytes(data[at + 1 : at + 5], "big")
            body = data[at + 5 : at + 1 + size]
            if kind == b"P" and self.marker in body:
                self.parsed = True
            elif kind == b"E" and self.parsed and self.executed:
                self.losing = True
            at += 1 + size


@pytest.mark.parametrize("executed", [True, False], ids=["committed", "never-ran"])
async def test_a_lost_reply_to_a_runs_end_is_settled_from_the_journal(
    pg_schema: str, executed: bool
) -> None:
    port = urlsplit(pg.postgres_dsn()).port or 5432
    looked_up: list[str] = []
    marker = b"runs SET status = $1"
    with ReplyLosingProxy("127.0.0.1", port, marker, executed=executed) as proxy:
        runtime = PostgresRuntime(through(proxy), schema=pg_schema, **TIMEOUTS)
        await runtime.connect()
        try:
            async with asyncio.timeout(BOUND):
                outcome: Any = await asyncio.gather(
                    agent(runtime, looked_up.append).run("where is Paris?"),
                    return_exceptions=True,
                )
        finally:
            proxy.cut()
            async with asyncio.timeout(BOUND):
                await runtime.close()
    [error] = outcome
    assert proxy.losing, "the run's end was never sent"
    assert isinstance(error, ServiceUnavailable), repr(error)
    assert looked_up == ["Paris", "Tokyo"]

    direct = PostgresRuntime(pg.postgres_dsn(), schema=pg_schema)
    try:
        [record] = await direct.runs()
        # The journal holds what the server did: the end it committed, or the run going on.
        assert record.status == ("completed" if executed else "running"), record
        if executed:
            assert record.result is not None and record.result["output"] == SCRIPT[-1]
        lease = await direct.lease(record.run_id)
        if lease is not None:  # the cut-off worker could not let go of it
            await expire(pg_schema, record.run_id)
        again = await agent(direct, looked_up.append).resume(record.run_id)
        assert again.status == "completed" and again.output == SCRIPT[-1]
        assert looked_up == ["Paris", "Tokyo"], "a tool ran again"
        [after] = await direct.runs()
        assert after.status == "completed" and after.result is not None
        if executed:  # the end is the one committed first, not written again
            assert after.result == record.result and after.updated_at == record.updated_at
    finally:
        await direct.close()


class WaitingModel:
    """Answers as SCRIPT does, but its second call waits until the test lets it go: the run
    sits in a model call while its lease is renewed."""

    name = "waiting"

    def __init__(self, go: asyncio.Event, asked: asyncio.Event) -> None:
        self.go, self.asked = go, asked

    async def stream(self, request: Any) -> Any:
        tools = sum(1 for m in request.messages if m.get("role") == "tool")
        if tools == 1:
            self.asked.set()
            await self.go.wait()
        turn = SCRIPT[tools]
        if isinstance(turn, str):
            yield {"type": "text", "text": turn}
            yield {"type": "finish", "finish_reason": "end_turn"}
            return
        for call in turn["tool_calls"]:
            tool_call = {"id": f"c{tools}", "tool": call["tool"], "args": call["args"]}
            yield {"type": "tool_call", "call": tool_call}
        yield {"type": "usage", "usage": {"input_tokens": 10, "output_tokens": 5}}
        yield {"type": "finish", "finish_reason": "tool_use"}


async def test_a_hang_while_a_budgeted_runs_lease_is_renewed(pg_schema: str) -> None:
    """The journal's server goes silent (the proxy hangs) while a budgeted run sits in a
    model call: its lease cannot be renewed, so the run stops once the lease runs out, with
    JournalUnavailable, never hanging; resumed against the server, it completes with each
    tool run once, and its budget holds nothing after."""
    from loomgraph import Agent
    from loomgraph.governance import BudgetConfig, Caps, StandardBudget
    from loomgraph.runtime import JournalUnavailable

    caps = BudgetConfig(per_user=Caps(model_calls=50, tool_calls=50))
    looked_up: list[str] = []

    async def lookup(city: str) -> str:
        """Find the country of a city."""
        looked_up.append(city)
        return {"Paris": "France", "Tokyo": "Japan"}[city]

    def budgeted(runtime: PostgresRuntime, model: Any) -> Agent:
        return Agent(
            "geography",
            model=model,
            tools=[lookup],
            runtime=runtime,
            budget=StandardBudget(caps),
        )

    port = urlsplit(pg.postgres_dsn()).port or 5432
    go, asked = asyncio.Event(), asyncio.Event()
    with TcpProxy("127.0.0.1", port) as proxy:
        runtime = PostgresRuntime(through(proxy), schema=pg_schema, lease_seconds=3.0, **TIMEOUTS)
        await runtime.connect()
        first = budgeted(runtime, WaitingModel(go, asked))
        try:
            run = asyncio.create_task(first.run("where is Paris?", user_id="ann"))
            async with asyncio.timeout(BOUND):
                await asyncio.wait(
                    {run, asyncio.create_task(asked.wait())}, return_when="FIRST_COMPLETED"
                )
                proxy.hang()  # silent from here on: the next renewal meets it
                outcome = await asyncio.gather(run, return_exceptions=True)
        finally:
            go.set()
            proxy.cut()
            async with asyncio.timeout(BOUND):
                await first.aclose()
    [error] = outcome
    # The lease is why the run stopped, even when its way out met the ledger on the same
    # silent server charging the cut-off call: that error is chained, not raised instead.
    assert isinstance(error, JournalUnavailable), repr(error)
    assert looked_up == ["Paris"]

    direct = PostgresRuntime(pg.postgres_dsn(), schema=pg_schema)
    try:
        [record] = await direct.runs()
        assert record.status == "running"
        if await direct.lease(record.run_id) is not None:
            await expire(pg_schema, record.run_id)
        again = budgeted(direct, WaitingModel(go, asyncio.Event()))
        done = await again.resume(record.run_id)
        assert done.status == "completed" and done.output == SCRIPT[-1], done.reason
        assert looked_up == ["Paris", "Tokyo"], "a tool ran again"
        budget = again.deps.budget
        assert not await budget.ledger.holds(record.run_id)  # type: ignore[attr-defined]
        totals = await budget.totals("user:ann")  # type: ignore[attr-defined]
        assert totals.spent["tool_calls"] == 2
        assert not any(totals.reserved.values())
        await again.aclose()
    finally:
        await direct.close()


async def test_a_ten_megabyte_state_is_journaled_resumed_and_forked(pg_schema: str) -> None:
    """A run whose tools return ~0.9 MB each, twelve times (a state of ~11 MB), under limits
    raised for it: journaled in Postgres, read back whole, forked from a checkpoint in the
    middle; under the default limits the run fails naming the limit it met, and what it
    journaled before stays."""
    from loomgraph import Agent
    from loomgraph.models import ScriptedModel
    from loomgraph.protocols import SizeLimits

    page = "x" * 900_000
    fetched: list[int] = []

    async def fetch(n: int) -> str:
        """Fetch page n."""
        fetched.append(n)
        return f"{n}:{page}"

    def turn(request: Any) -> Any:
        done = sum(1 for m in request.messages if m.get("role") == "tool")
        if done < 12:
            return {"tool_calls": [{"tool": "fetch", "args": {"n": done}}]}
        return f"read {done} pages"

    big = SizeLimits(prompt_chars=30_000_000, tool_result_chars=2_000_000, state_chars=30_000_000)

    def reader(runtime: PostgresRuntime, limits: SizeLimits | None) -> Agent:
        options: dict[str, Any] = {} if limits is None else {"size_limits": limits}
        return Agent("reader", model=ScriptedModel(turn), tools=[fetch], runtime=runtime, **options)

    runtime = PostgresRuntime(pg.postgres_dsn(), schema=pg_schema)
    try:
        agent = reader(runtime, big)
        async with asyncio.timeout(BOUND):
            done = await agent.run("read them all")
        assert done.status == "completed" and done.output == "read 12 pages", done.reason
        transitions = await runtime.transitions(done.run_id)
        pages = [
            m["content"]
            for t in transitions
            for m in t.patch.get("messages", [])
            if m.get("role") == "tool"
        ]
        assert pages == [f"{n}:{page}" for n in range(12)]  # read back whole
        middle = transitions[len(transitions) // 2].seq
        async with asyncio.timeout(BOUND):
            forked = await agent.fork(done.run_id, at=middle)
        assert forked.status == "completed", forked.reason
        assert fetched.count(11) == 2  # the fork fetched on from its checkpoint, once

        default = reader(runtime, None)
        async with asyncio.timeout(BOUND):
            refused = await default.run("read them all")
        assert refused.status == "failed"
        assert "state_chars" in refused.reason and "10,000,000" in refused.reason, refused.reason
        kept = await runtime.transitions(refused.run_id)
        assert kept and all(t.seq == n for n, t in enumerate(kept, start=1))
    finally:
        await runtime.close()

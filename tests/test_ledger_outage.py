"""A budget ledger that cannot be reached mid-run is not the run's failure, as a journal that
cannot be reached is not (tests/test_journal_outage.py): the caller gets `LedgerUnavailable`
(a `ServiceUnavailable`), the run is left `running` in its journal, and a resume once the
ledger is back ends it as an uninterrupted run would, every execution charged exactly once
and no hold lost.

The outages are real. SQLite: another connection (a plain `sqlite3` one, in this test) holds
the ledger file's write lock past the ledger's `busy_timeout`. PostgreSQL: the ledger reaches
the real server through a TCP proxy the test starts, and cuts (or hangs) mid-run; the server
itself is never touched, and the journal is reached directly. Each outage is a blip: it ends
as soon as anything reports the run's failure (an `error` event), so a run that was journaled
as failed for it would be.

The outage is taken at three points of a ReAct run: while the model answers (its settlement
fails), when the tool call is announced (the tool's reservation fails; the tool never runs)
and while the tool runs (its settlement fails after it acted).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

import pg
from loomgraph import Agent, tool
from loomgraph._storage.sqlite_files import SqliteFileProblem
from loomgraph.errors import ServiceUnavailable
from loomgraph.governance import (
    BudgetConfig,
    LedgerUnavailable,
    PostgresLedger,
    SqliteLedger,
    StandardBudget,
)
from loomgraph.governance.crash_charges import visit_hold
from loomgraph.governance.ledger import (
    Change,
    Decide,
    Hold,
    InMemoryLedger,
    Ledger,
    LedgerView,
    Totals,
)
from loomgraph.governance.null import NoHooks
from loomgraph.models import ScriptedModel
from loomgraph.protocols import BudgetExceeded, Event, ModelRequest, RunStatus
from loomgraph.protocols.events import ERROR, NODE_STARTED, TOOL_CALL
from loomgraph.runtime.postgres import PostgresRuntime
from loomgraph.runtime.sqlite import SqliteRuntime
from tcp_proxy import TcpProxy

pg_schema = pg.pg_schema

SCRIPT: list[Any] = [
    {"tool_calls": [{"tool": "lookup", "args": {"city": "Rome"}}]},
    "Rome has 3 million people",
]
CAPS = BudgetConfig(model_calls=100, tool_calls=100, node_visits=100)
BUSY = 0.2  # the SQLite ledger's busy_timeout in the runs, seconds
TIMEOUTS = {"connect_timeout": 5.0, "command_timeout": 5.0}
BOUND = 120.0  # seconds; reaching it means something hung
POINTS = ["model", "reservation", "tool"]
# Executions (model calls, tool calls, node visits begun) a run interrupted at each point
# makes, its resume included: no call twice (the visit the outage cut is begun again). A
# model or tool call whose settlement meets the outage was journaled first, so the resume
# replays it (its hold charged at its reservation); the reservation's call never ran the
# first time. (Before, the outcome was journaled after the charge, and an interrupted call
# ran again: (3, 1, 4) and (2, 2, 4).)
EXECUTIONS = {"model": (2, 1, 4), "reservation": (2, 1, 4), "tool": (2, 1, 4)}


# ---------------------------------------------------------------------------- outages


class Outage:
    """A ledger outage the test starts and ends: `begin()`, `end()`."""

    def begin(self) -> None:
        raise NotImplementedError

    def end(self) -> None:
        raise NotImplementedError


class HeldLock(Outage):
    """Another connection holds the SQLite file's write lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.holder: sqlite3.Connection | None = None

    def begin(self) -> None:
        holder = sqlite3.connect(self.path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # held until `end`
        self.holder = holder

    def end(self) -> None:
        holder, self.holder = self.holder, None
        if holder is not None:
            holder.execute("ROLLBACK")
            holder.close()


class CutProxy(Outage):
    """The TCP proxy between the ledger and the server is cut; it is started again (on the
    same port) when the outage ends."""

    def __init__(self) -> None:
        self.target = ("127.0.0.1", urlsplit(pg.postgres_dsn()).port or 5432)
        self.proxy = TcpProxy(*self.target)
        self.port = self.proxy.port
        self.down = False

    def begin(self) -> None:
        self.proxy.cut()
        self.down = True

    def end(self) -> None:
        if self.down:
            self.proxy = TcpProxy(*self.target, listen=self.port)
            self.down = False

    def close(self) -> None:
        self.proxy.cut()


def through(port: int, password: str | None = None) -> str:
    """The test server's DSN, pointed at a proxy on `port` (with a password, if given)."""
    url = urlsplit(pg.postgres_dsn())
    user = url.netloc.rpartition("@")[0].partition(":")[0] or "postgres"
    if password is not None:
        user = f"{user}:{password}"
    return urlunsplit(url._replace(netloc=f"{user}@127.0.0.1:{port}"))


# ---------------------------------------------------------------------------- the run


class World:
    """What really happened, outside the journal and the ledger: every model call and tool
    execution, every node visit started; and the outage, begun once at `point`."""

    def __init__(self, outage: Outage, point: str) -> None:
        self.outage = outage
        self.point = point
        self.model_calls: list[int] = []
        self.tools: list[str] = []
        self.visits = 0
        self.began = False

    def maybe_begin(self, point: str) -> None:
        if point == self.point and not self.began:
            self.began = True
            self.outage.begin()


class Watching(NoHooks):
    """Counts node visits; begins the outage at a tool call's announcement ("reservation");
    ends it at the first `error` event (a blip, as short as the run lets it be)."""

    def __init__(self, world: World) -> None:
        self.world = world

    async def on_event(self, event: Event) -> None:
        """Watch the run's events."""
        if event.kind == NODE_STARTED:
            self.world.visits += 1
        elif event.kind == TOOL_CALL:
            self.world.maybe_begin("reservation")
        elif event.kind == ERROR:
            self.world.outage.end()


def make_agent(runtime: Any, ledger: Ledger, world: World) -> Agent:
    def script(request: ModelRequest) -> Any:
        world.model_calls.append(request.call_index)
        world.maybe_begin("model")
        return SCRIPT[request.call_index]

    async def lookup(city: str) -> str:
        """Look a city up."""
        world.tools.append(city)
        world.maybe_begin("tool")
        return f"{city}: 3 million"

    return Agent(
        "x",
        model=ScriptedModel(script),
        tools=[lookup],
        runtime=runtime,
        budget=StandardBudget(CAPS, ledger),
        hooks=Watching(world),
    )


async def interrupted_then_resumed(runtime: Any, ledger: Ledger, world: World) -> None:
    """The run meets the outage, stays `running`, and its resume charges everything once."""
    agent = make_agent(runtime, ledger, world)
    try:
        with pytest.raises(LedgerUnavailable) as raised:
            async with asyncio.timeout(BOUND):
                await agent.run("How many people live in Rome?")
        assert isinstance(raised.value, ServiceUnavailable)
        assert "unavailable" in str(raised.value)
        [run] = await runtime.runs()
        # Not journaled as failed: the run is where a crash would have left it.
        assert run.status == RunStatus.RUNNING
        world.outage.end()
        # The holds of the effects whose outcome is unknown are kept, to be charged.
        left = await ledger.holds(run.run_id)
        assert left, "the interrupted effect's hold was lost"
        resumed = await agent.resume(run.run_id)
        assert resumed.status == RunStatus.COMPLETED, resumed.reason
        assert resumed.output == SCRIPT[-1]
        executions = (len(world.model_calls), len(world.tools), world.visits)
        assert executions == EXECUTIONS[world.point]
        totals = await ledger.totals("global")
        # Every call charged exactly once, the interrupted ones at their reservation; the
        # visit the outage cut is done again by the resume, and charged once, then.
        counts = ("model_calls", "tool_calls", "node_visits")
        charged = tuple(totals.spent.get(count, 0) for count in counts)
        assert charged == (*executions[:2], executions[2] - 1)
        assert totals.reserved == {}
        assert await ledger.holds() == []
        charges = await ledger.charges(run.run_id)
        assert sorted((c.id, dict(c.amounts)) for c in charges) == sorted(
            (h.id, dict(h.amounts)) for h in left if not visit_hold(h)
        )
        assert [h.amounts for h in left if visit_hold(h)] == [{"node_visits": 1}]
    finally:
        world.outage.end()
        await agent.aclose()


@pytest.mark.parametrize("point", POINTS)
async def test_a_sqlite_ledger_outage_mid_run_leaves_the_run_to_be_resumed(
    tmp_path: Path, point: str
) -> None:
    path = tmp_path / "ledger.db"
    world = World(HeldLock(path), point)
    runtime = SqliteRuntime(tmp_path / "journal.db")
    ledger = SqliteLedger(path, busy_timeout=BUSY)
    await interrupted_then_resumed(runtime, ledger, world)


@pytest.mark.postgres
@pytest.mark.parametrize("point", POINTS)
async def test_a_postgres_ledger_outage_mid_run_leaves_the_run_to_be_resumed(
    pg_schema: str, point: str
) -> None:
    outage = CutProxy()
    try:
        world = World(outage, point)
        # The journal is reached directly; only the ledger goes through the proxy.
        runtime = PostgresRuntime(pg.postgres_dsn(), schema=pg_schema)
        ledger = PostgresLedger(through(outage.port), schema=pg_schema, **TIMEOUTS)
        await interrupted_then_resumed(runtime, ledger, world)
    finally:
        outage.close()


# ---------------------------------------------------------------------------- each operation


def _reserve(hold_id: str) -> Callable[[Ledger], Awaitable[Any]]:
    hold = Hold(hold_id, "r-1", ("global",), {"tool_calls": 1}, 1.0)
    return lambda ledger: ledger.transact(["global"], None, lambda _view: Change(hold=hold))


def _settle(hold_id: str) -> Callable[[Ledger], Awaitable[Any]]:
    def decide(view: LedgerView) -> Change:
        held = view.hold
        scopes = held.scopes if held is not None else ("global",)
        return Change(remove=held, spend={"tool_calls": 1}, spend_scopes=scopes)

    return lambda ledger: ledger.transact(["global"], hold_id, decide)


# Every operation of the Ledger interface, each with arguments that change something.
WRITES: dict[str, Callable[[Ledger], Awaitable[Any]]] = {
    "transact (reserve)": _reserve("h-2"),
    "transact (settle)": _settle("h-1"),
    "run_clock": lambda ledger: ledger.run_clock("r-2", 1.0, 2.0),
    "forget_run": lambda ledger: ledger.forget_run("r-1"),
}
READS: dict[str, Callable[[Ledger], Awaitable[Any]]] = {
    "totals": lambda ledger: ledger.totals("global"),
    "holds": lambda ledger: ledger.holds(),
    "holds of a run": lambda ledger: ledger.holds("r-1"),
    "charges": lambda ledger: ledger.charges("r-1"),
}
OPERATIONS = {**WRITES, **READS}


async def _each_raises(
    ledger: Ledger,
    check: Callable[[LedgerUnavailable], None],
    operations: dict[str, Callable[[Ledger], Awaitable[Any]]] = OPERATIONS,
) -> None:
    for name, operation in operations.items():
        with pytest.raises(LedgerUnavailable) as raised:
            async with asyncio.timeout(BOUND):
                await operation(ledger)
        assert isinstance(raised.value, ServiceUnavailable), name
        check(raised.value)


async def _each_works(ledger: Ledger) -> None:
    """After the outage: every operation works, and the outage changed nothing."""
    for operation in OPERATIONS.values():
        await operation(ledger)
    # h-1 settled, h-2 reserved, the clock of r-1 forgotten, that of r-2 kept.
    totals = await ledger.totals("global")
    assert (totals.spent, totals.reserved) == ({"tool_calls": 1}, {"tool_calls": 1})
    assert [h.id for h in await ledger.holds()] == ["h-2"]
    assert await ledger.run_clock("r-1", 5.0, None) == (5.0, None)
    assert await ledger.run_clock("r-2", 9.0, 9.0) == (1.0, 2.0)


async def _before(ledger: Ledger) -> None:
    """Open the ledger and hold h-1, as a run would have."""
    await _reserve("h-1")(ledger)
    await ledger.run_clock("r-1", 1.0, 2.0)


async def test_every_sqlite_ledger_write_raises_ledger_unavailable_while_locked_reads_go_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    ledger = SqliteLedger(path, busy_timeout=0.1)
    await _before(ledger)
    lock = HeldLock(path)
    lock.begin()

    def check(err: LedgerUnavailable) -> None:
        assert str(path) in str(err) and "busy_timeout=0.1s" in str(err)
        assert err.where == repr(str(path))
        # What SqliteLedger raised when opening before: code catching it still does.
        assert isinstance(err, SqliteFileProblem) and err.kind == "unavailable"

    try:
        await _each_raises(ledger, check, WRITES)
        # Reads need no write lock: they go on, and see what was there before.
        async with asyncio.timeout(BOUND):
            held = await ledger.totals("global")
            assert (held.spent, held.reserved) == ({}, {"tool_calls": 1})
            assert [h.id for h in await ledger.holds()] == ["h-1"]
            assert [h.id for h in await ledger.holds("r-1")] == ["h-1"]
            assert await ledger.charges("r-1") == []
        # Opening it anew, too.
        fresh = SqliteLedger(path, busy_timeout=0.1)
        with pytest.raises(LedgerUnavailable) as raised:
            await fresh.totals("global")
        check(raised.value)
        await fresh.close()
    finally:
        lock.end()
    await _each_works(ledger)
    await ledger.close()


@pytest.mark.postgres
@pytest.mark.parametrize("how", ["cut", "hang"])
async def test_every_postgres_ledger_operation_raises_ledger_unavailable_while_cut(
    pg_schema: str, how: str
) -> None:
    outage = CutProxy()
    secret = "s3cret-pw"  # the test server trusts local connections: any password works
    fast = {"connect_timeout": 1.0, "command_timeout": 1.0}
    ledger = PostgresLedger(through(outage.port, secret), schema=pg_schema, **fast)
    try:
        await _before(ledger)

        def check(err: LedgerUnavailable) -> None:
            assert secret not in str(err) and secret not in repr(err)
            assert err.__cause__ is None  # the driver's error, which may name it, is dropped
            assert f"127.0.0.1:{outage.port}" in str(err) and pg_schema in str(err)
            if how == "hang":
                assert "no answer in time" in str(err), err

        if how == "cut":
            outage.begin()
        else:
            outage.proxy.hang()
        await _each_raises(ledger, check)
        # Opening it anew, too.
        fresh = PostgresLedger(through(outage.port, secret), schema=pg_schema, **fast)
        with pytest.raises(LedgerUnavailable) as raised:
            async with asyncio.timeout(BOUND):
                await fresh.totals("global")
        check(raised.value)
        async with asyncio.timeout(BOUND):
            await fresh.close()
        outage.begin()  # a hung proxy is cut too, to be started again
        outage.end()
        await _each_works(ledger)
    finally:
        async with asyncio.timeout(BOUND):
            await ledger.close()
        outage.close()


# ---------------------------------------------------------------------------- other errors


def _refuse(_view: LedgerView) -> Change:
    raise BudgetExceeded("global:tool_calls", "over the cap")


async def test_other_sqlite_ledger_errors_keep_their_types(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "ledger.db")
    await _before(ledger)
    with pytest.raises(BudgetExceeded):  # what `decide` raises passes unchanged
        await ledger.transact(["global"], None, _refuse)
    with pytest.raises(sqlite3.IntegrityError):  # a hold id used twice
        await _reserve("h-1")(ledger)
    raw = sqlite3.connect(tmp_path / "ledger.db")
    with raw:
        raw.execute("UPDATE loom_budget_scopes SET spent = 'not json'")
    raw.close()
    with pytest.raises(json.JSONDecodeError):  # a corrupted row
        await ledger.totals("global")
    await ledger.close()
    # A file that is not a database is damaged, not unavailable.
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database, not at all" * 200)
    damaged = SqliteLedger(junk)
    with pytest.raises(SqliteFileProblem) as raised:
        await damaged.totals("global")
    assert raised.value.kind == "corrupted"
    assert not isinstance(raised.value, LedgerUnavailable)
    await damaged.close()
    # A directory that does not exist is unavailable (and a SqliteFileProblem, as before).
    missing = SqliteLedger(tmp_path / "missing" / "ledger.db")
    with pytest.raises(LedgerUnavailable) as unavailable:
        await missing.totals("global")
    assert str(tmp_path / "missing") in str(unavailable.value)
    assert isinstance(unavailable.value, SqliteFileProblem)
    await missing.close()


@pytest.mark.postgres
async def test_other_postgres_ledger_errors_keep_their_types(pg_schema: str) -> None:
    import asyncpg

    ledger = PostgresLedger(pg.postgres_dsn(), schema=pg_schema)
    try:
        await _before(ledger)
        with pytest.raises(BudgetExceeded):
            await ledger.transact(["global"], None, _refuse)
        with pytest.raises(asyncpg.UniqueViolationError):
            await _reserve("h-1")(ledger)
        con = await asyncpg.connect(pg.postgres_dsn())
        try:
            await con.execute(f"UPDATE \"{pg_schema}\".loom_budget_scopes SET spent = 'not json'")
        finally:
            await con.close()
        with pytest.raises(json.JSONDecodeError):
            await ledger.totals("global")
    finally:
        await ledger.close()


async def test_postgres_ledger_timeouts_have_defaults_and_are_checked() -> None:
    pytest.importorskip("asyncpg")
    ledger = PostgresLedger("postgresql://u:pw@127.0.0.1:1/db")
    assert (ledger.connect_timeout, ledger.command_timeout) == (10.0, 15.0)
    for bad in ({"connect_timeout": 0}, {"command_timeout": -1.0}):
        with pytest.raises(ValueError, match="timeout"):
            PostgresLedger("postgresql://u@127.0.0.1:1/db", **bad)  # type: ignore[arg-type]


class BackByTheEnd(InMemoryLedger):
    """Unreachable for one settlement only, and back by the time the run leaves."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next_settlement = False

    async def transact(
        self, scopes: Sequence[str], hold_id: str | None, decide: Decide
    ) -> dict[str, Totals]:
        if self.fail_next_settlement and hold_id is not None:
            self.fail_next_settlement = False
            raise LedgerUnavailable("the test's ledger", "cut for one settlement")
        return await super().transact(scopes, hold_id, decide)


async def test_a_hold_whose_settlement_failed_is_kept_for_the_resume(tmp_path: Path) -> None:
    """The run's end must not release what an outage left held: the resume charges it. The
    call's outcome is journaled before it is charged, so a settlement that fails (the ledger,
    or its audit entry, out of reach) leaves a finished call that the resume replays, never
    one it runs a second time."""
    ran: list[str] = []
    ledger = BackByTheEnd()
    spending = StandardBudget(BudgetConfig(tool_calls=5), ledger)

    @tool
    async def pay() -> str:
        """Pay once."""
        ran.append("paid")
        # The first call's settlement meets the outage.
        ledger.fail_next_settlement = len(ran) == 1
        return "paid"

    turns: list[Any] = [{"tool_calls": [{"tool": "pay", "args": {}}]}, "done"]
    journal = SqliteRuntime(str(tmp_path / "journal.db"))
    agent = Agent("x", model=ScriptedModel(turns), tools=[pay], runtime=journal, budget=spending)
    session = agent.session("go")
    with pytest.raises(LedgerUnavailable):
        await session.execute(agent.deps.hooks.on_event)
    record = await journal.load_run(session.run_id)
    assert record is not None and record.status == "running"
    # The call's hold, and its visit's (given back when the resume does the visit again).
    held = sorted(sorted(h.amounts.items()) for h in await ledger.holds(session.run_id))
    assert held == [[("node_visits", 1)], [("tool_calls", 1)]]

    done = await agent.resume(session.run_id)
    assert done.status == "completed"
    assert ran == ["paid"]  # replayed from the journal, not run again
    totals = await spending.totals("global")
    # Charged once, by the resume (the kept hold), and nothing stays held.
    assert totals.spent["tool_calls"] == 1
    assert not totals.reserved.get("tool_calls") and await ledger.holds() == []
    assert [c.amounts for c in await ledger.charges(session.run_id)] == [{"tool_calls": 1}]
    await agent.aclose()


class CountingModel:
    """Answers "done"; counts its calls."""

    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, request: Any) -> Any:
        self.calls += 1
        yield {"type": "text", "text": "done"}
        yield {"type": "usage", "usage": {"input_tokens": 10, "output_tokens": 2}}
        yield {"type": "finish", "finish_reason": "end_turn"}


async def test_a_model_call_whose_settlement_failed_is_not_made_again(tmp_path: Path) -> None:
    """As for tools: the answer is journaled before its attempt is charged."""
    ledger = BackByTheEnd()
    spending = StandardBudget(BudgetConfig(model_calls=5), ledger)
    model = CountingModel()
    journal = SqliteRuntime(str(tmp_path / "journal.db"))
    agent = Agent("x", model=model, runtime=journal, budget=spending)
    try:
        session = agent.session("go")
        ledger.fail_next_settlement = True  # the model call's settlement is the first
        with pytest.raises(LedgerUnavailable):
            await session.execute(agent.deps.hooks.on_event)
        done = await agent.resume(session.run_id)
        assert done.status == "completed" and done.output == "done"
        assert model.calls == 1
        assert (await spending.totals("global")).spent["model_calls"] == 1
    finally:
        await agent.aclose()

"""A Postgres ledger's transactions that end a hold, racing each other on the same hold.

A transaction naming only a hold (a release, `end_run`, a crash charge) must read the hold to
learn which scopes to lock; if it decided on that first read, a settlement of the same hold
committing before it got the locks would be undone a second time (READ COMMITTED), and the
cap would gain the hold's room for nothing. Every interleaving here is made deterministic by
a connection holding one scope's advisory lock while the endings queue behind it, each
joining the queue before the next starts (bounded waits on `pg_locks`, no sleeps).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pg
from loomgraph._storage.lock_keys import advisory_key
from loomgraph.governance import BudgetConfig, Caps, PostgresLedger, StandardBudget
from loomgraph.governance.crash_charges import close_left_holds
from loomgraph.protocols import BudgetExceeded, BudgetScope, Reservation, Usage

pytestmark = pytest.mark.postgres
pg_schema = pg.pg_schema

_WAITING = (
    "SELECT classid::bigint, objid::bigint FROM pg_locks "
    "WHERE locktype = 'advisory' AND NOT granted"
)


class Ending(enum.Enum):
    """A way a hold ends."""

    SETTLE = "settle"
    RELEASE = "release"
    END_RUN = "end_run"
    CHARGE = "charge"  # a resume charging the holds a crashed attempt left


def _lock_id(key: int) -> tuple[int, int]:
    """How pg_locks shows a bigint advisory key: (classid, objid)."""
    return (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF


async def until_waiting(
    watcher: Any, keys: Sequence[int], count: int, started: Sequence[asyncio.Task[Any]]
) -> None:
    """Return once `count` transactions wait for one of `keys`' locks (bounded: 10 s); fail
    at once if a started task ended instead of waiting."""
    wanted = {_lock_id(k) for k in keys}
    deadline = time.monotonic() + 10
    while True:
        for task in started:
            if task.done():  # it should be blocked behind the lock; say why it is not
                task.result()
                raise AssertionError(f"{task.get_name()} ended while the lock was held")
        rows = await watcher.fetch(_WAITING)
        if sum((row[0], row[1]) in wanted for row in rows) >= count:
            return
        assert time.monotonic() < deadline, f"{count} waiters on the scopes never appeared"


async def end(budget: StandardBudget, how: Ending, held: Reservation) -> dict[str, int]:
    """End `held` the way `how` says; what it added to the spending, when it says."""
    if how is Ending.SETTLE:
        return await budget.settle(held, Usage(tool_calls=1))
    if how is Ending.RELEASE:
        await budget.release(held)
    elif how is Ending.END_RUN:
        await budget.end_run(held.scope)
    else:
        await close_left_holds(budget.ledger, held.scope.run_id, time.time())
    return {}


async def endings_behind_a_lock(
    budget: StandardBudget,
    dsn: str,
    blocked: str,
    scopes: Sequence[str],
    endings: Sequence[tuple[Reservation, Ending]],
) -> list[dict[str, int]]:
    """Hold `blocked`'s lock while each ending joins the queue in turn, then let them run."""
    import asyncpg  # type: ignore[import-untyped]

    ledger = budget.ledger
    assert isinstance(ledger, PostgresLedger)
    keys = [advisory_key(f"loomgraph.budget:{ledger.schema}:{s}") for s in scopes]
    blocker = await asyncpg.connect(dsn)
    watcher = await asyncpg.connect(dsn)
    started: list[asyncio.Task[dict[str, int]]] = []
    try:
        async with blocker.transaction():
            await blocker.execute(
                "SELECT pg_advisory_xact_lock($1)",
                advisory_key(f"loomgraph.budget:{ledger.schema}:{blocked}"),
            )
            for i, (held, how) in enumerate(endings):
                name = f"{how.value} of {held.scope.run_id}"
                started.append(asyncio.create_task(end(budget, how, held), name=name))
                await until_waiting(watcher, keys, i + 1, started)
        return await asyncio.wait_for(asyncio.gather(*started), 30)
    finally:
        for task in started:
            task.cancel()
        await blocker.close()
        await watcher.close()


# ----------------------------------------------------------------- one race, step by step


@pytest.mark.parametrize("second", [Ending.RELEASE, Ending.END_RUN, Ending.CHARGE])
async def test_an_ending_that_queued_behind_a_settlement_does_not_end_the_hold_again(
    pg_schema: str, second: Ending
) -> None:
    # The settlement waits for the scope's lock; the release (end_run, crash charge) reads
    # the hold — still there — and queues behind it. The settlement commits first: the hold
    # is gone when the second gets the lock, so it must change nothing.
    dsn = pg.postgres_dsn()
    ledger = PostgresLedger(dsn, schema=pg_schema, pool_size=4)
    budget = StandardBudget(
        BudgetConfig(per_user=Caps(tool_calls=2), hold_wait_s=0, warn_at=None), ledger
    )
    try:
        held = await budget.reserve(
            Reservation(BudgetScope("r-1", "alice"), "tool", Usage(tool_calls=1))
        )
        endings = [(held, Ending.SETTLE), (held, second)]
        await endings_behind_a_lock(budget, dsn, "user:alice", ["user:alice"], endings)
        totals = await budget.totals("user:alice")
        assert totals.spent.get("tool_calls") == 1
        assert totals.reserved.get("tool_calls", 0) == 0, (
            f"the hold was ended twice: reserved tool_calls is "
            f"{totals.reserved.get('tool_calls')} after a settle and a {second.value}"
        )
        assert await ledger.charges("r-1") == []  # settled, so never charged as a crash
        # Cap 2, spent 1: exactly one more tool call may be held.
        await budget.reserve(Reservation(BudgetScope("r-2", "alice"), "tool", Usage(tool_calls=1)))
        with pytest.raises(BudgetExceeded):
            await budget.reserve(
                Reservation(BudgetScope("r-3", "alice"), "tool", Usage(tool_calls=1))
            )
    finally:
        await ledger.close()


# ------------------------------------------------------------------ every interleaving


@dataclass(frozen=True)
class Race:
    """Holds of one user (and `global`, when capped), ended in this queue order behind the
    lock of `blocked`."""

    with_global: bool
    holds: int
    endings: tuple[tuple[int, Ending], ...]
    blocked: str


@st.composite
def races(draw: st.DrawFn) -> Race:
    with_global = draw(st.booleans())
    holds = draw(st.integers(1, 3))
    ending = st.tuples(st.integers(0, holds - 1), st.sampled_from(Ending))
    endings = draw(st.lists(ending, min_size=1, max_size=5))
    blocked = draw(st.sampled_from(["user", "global"] if with_global else ["user"]))
    return Race(with_global, holds, tuple(endings), blocked)


_users = itertools.count()


async def run_race(schema: str, race: Race) -> None:
    dsn = pg.postgres_dsn()
    user = f"u{next(_users)}"  # a scope of its own per example, in the test's schema
    scopes = ["global", f"user:{user}"] if race.with_global else [f"user:{user}"]
    caps = Caps(tool_calls=10)
    config = (
        BudgetConfig(tool_calls=10**9, per_user=caps, hold_wait_s=0, warn_at=None)
        if race.with_global
        else BudgetConfig(per_user=caps, hold_wait_s=0, warn_at=None)
    )
    ledger = PostgresLedger(dsn, schema=schema, pool_size=6)
    budget = StandardBudget(config, ledger)
    try:
        before = {s: await ledger.totals(s) for s in scopes}
        held = [
            await budget.reserve(
                Reservation(BudgetScope(f"{user}-r{i}", user), "tool", Usage(tool_calls=1))
            )
            for i in range(race.holds)
        ]
        endings = [(held[i], how) for i, how in race.endings]
        blocked = "global" if race.blocked == "global" else f"user:{user}"
        added = await endings_behind_a_lock(budget, dsn, blocked, scopes, endings)

        ended = {i for i, _ in race.endings}
        left = await ledger.holds()
        assert sorted(h.id for h in left if h.run_id.startswith(f"{user}-")) == sorted(
            held[i].id for i in range(race.holds) if i not in ended
        )
        charges = [c for i in range(race.holds) for c in await ledger.charges(f"{user}-r{i}")]
        charged = sum(c.amounts.get("tool_calls", 0) for c in charges)
        settled = sum(a.get("tool_calls", 0) for a in added)
        for scope in scopes:
            totals = await ledger.totals(scope)
            # Each hold was taken back once: what stays reserved is what the open holds hold.
            reserved = totals.reserved.get("tool_calls", 0) - before[scope].reserved.get(
                "tool_calls", 0
            )
            assert reserved == race.holds - len(ended), (scope, race, totals)
            spent = totals.spent.get("tool_calls", 0) - before[scope].spent.get("tool_calls", 0)
            assert spent == settled + charged, (scope, race, totals)
            # A crash charge and a settlement never both charge one hold in full.
            assert charged <= len(ended)
    finally:
        await ledger.close()


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(race=races())
def test_holds_ended_in_any_queue_order_are_each_taken_back_once(
    pg_schema: str, race: Race
) -> None:
    asyncio.run(run_race(pg_schema, race))

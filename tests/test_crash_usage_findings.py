"""A call whose outcome was journaled before its hold was settled is counted once after a crash.

A worker is SIGKILLed after an effect's outcome was journaled and before its reservation was
settled (crash point `after_outcome`), then resumed. The resume charges the left hold (the
ledger's `spent` counts the call once) and replays the journaled outcome. What is checked:

- a model call (SQLite): `RunResult.usage.model_calls` is the calls made (3), not 4: the
  replayed answer counts the call, so its crash charge must not be added again;
- a tool call (SQLite): no tool ran again, so the run's usage counts no crashed tool call
  (`tool_calls` in `RunResult.usage` counts only crashed tool holds that ran again);
- the model call on PostgreSQL, the same as on SQLite.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pg
from loomgraph.agent.recovery import crashed_usage
from loomgraph.governance import BudgetConfig, PostgresLedger, SqliteLedger, StandardBudget
from loomgraph.governance.ledger import Ledger
from loomgraph.protocols import BudgetScope, EffectRecord, EffectStatus, Reservation, Usage
from loomgraph.protocols.governance import EffectRef
from test_crash_charging import crash_then_resume, executions
from test_crash_matrix import Journal

pg_schema = pg.pg_schema


async def test_a_model_call_journaled_before_its_settle_is_counted_once(tmp_path: Path) -> None:
    journal, ledger = Journal(f"sqlite:{tmp_path / 'journal.db'}"), tmp_path / "effects.tsv"
    end = await crash_then_resume(journal, ledger, ("after_outcome", 1))
    models, _tools = executions(ledger)
    assert end["result"]["status"] == "completed"
    assert models == 3  # the crashed call was replayed, never made again
    assert end["spent"]["model_calls"] == 3  # the ledger charged it once (its hold)
    assert end["result"]["usage"]["model_calls"] == models, end["result"]["usage"]


async def test_a_tool_call_journaled_before_its_settle_is_not_counted_as_crashed(
    tmp_path: Path,
) -> None:
    journal, ledger = Journal(f"sqlite:{tmp_path / 'journal.db'}"), tmp_path / "effects.tsv"
    # Effect 5 is the `add` tool call, alone in its step.
    end = await crash_then_resume(journal, ledger, ("after_outcome", 5))
    models, tools = executions(ledger)
    assert end["result"]["status"] == "completed"
    assert (models, tools) == (3, 3)  # replayed, never run again
    assert (end["spent"]["model_calls"], end["spent"]["tool_calls"]) == (3, 3)
    assert end["result"]["usage"].get("tool_calls", 0) == tools - 3, end["result"]["usage"]


async def test_postgres_model_call_journaled_before_its_settle_is_counted_once(
    pg_schema: str, tmp_path: Path
) -> None:
    journal, ledger = Journal(pg.postgres_dsn(), pg_schema), tmp_path / "effects.tsv"
    end = await crash_then_resume(journal, ledger, ("after_outcome", 1))
    models, _tools = executions(ledger)
    assert end["result"]["status"] == "completed"
    assert models == 3
    assert end["spent"]["model_calls"] == 3
    assert end["result"]["usage"]["model_calls"] == models, end["result"]["usage"]


# ---------------------------------------------------------------------------- what is left out

RUN = BudgetScope("r-1", "alice")
CAPS = BudgetConfig(model_calls=10, tool_calls=10)


def _ref(slot: int, execution: int = 1) -> EffectRef:
    return EffectRef(f"r-1:node:1:{slot}", execution)


def _done(slot: int, kind: str, attempts: int = 1) -> EffectRecord:
    key = f"r-1:node:1:{slot}"
    return EffectRecord("r-1", key, kind, {}, {}, EffectStatus.DONE, attempts)


async def _left_holds(budget: StandardBudget, *holds: tuple[str, EffectRef | None]) -> None:
    """Reserve `holds` (kind, effect), then charge them as a resume does (the process died)."""
    for kind, effect in holds:
        amount = Usage(model_calls=1) if kind == "model" else Usage(tool_calls=1)
        await budget.reserve(Reservation(RUN, kind, amount, effect=effect))  # type: ignore[arg-type]
    await budget.begin_run(RUN)


async def test_a_charge_is_left_out_only_when_its_journaled_outcome_counts_it() -> None:
    budget = StandardBudget(CAPS)
    await _left_holds(
        budget,
        ("model", _ref(1)),  # answered, journaled, replayed: its answer counts it
        ("model", _ref(2)),  # answered, journaled, never replayed (the run stopped before)
        ("model", _ref(3)),  # outcome unknown, then run again (execution 2 answered)
        ("tool", _ref(4)),  # ran, journaled: a tool call counts in no usage but the ledger's
        ("tool", _ref(5)),  # outcome unknown: not journaled at all
        ("model", None),  # a hold naming no effect (an older ledger's row): counted
    )
    effects = [_done(1, "model"), _done(2, "model"), _done(3, "model", 2), _done(4, "tool")]
    charges = await budget.charges(RUN.run_id)
    assert [c.effect for c in charges] == [_ref(1), _ref(2), _ref(3), _ref(4), _ref(5), None]
    deps = SimpleNamespace(budgeted=True, budget=budget, runtime=None)
    replayed = {_ref(1).key, _ref(3).key}
    used = await crashed_usage(deps, RUN.run_id, replayed=replayed, effects=effects)  # type: ignore[arg-type]
    assert (used.model_calls, used.tool_calls) == (3, 1)  # 2, 3 and the untied; 5
    # The ledger charged every hold once, whatever the run's usage counts.
    assert (await budget.totals("global")).spent == {"model_calls": 4, "tool_calls": 2}


async def test_no_charge_named_reads_no_effects() -> None:
    budget = StandardBudget(CAPS)
    await _left_holds(budget, ("tool", None))

    class NoJournal:
        async def effects(self, run_id: str) -> list[EffectRecord]:
            raise AssertionError("the journal was read for charges that name no effect")

    deps = SimpleNamespace(budgeted=True, budget=budget, runtime=NoJournal())
    used = await crashed_usage(deps, RUN.run_id, replayed=())  # type: ignore[arg-type]
    assert used.tool_calls == 1


async def test_a_fitted_hold_is_taken_over_only_by_its_own_call() -> None:
    budget = StandardBudget(BudgetConfig(model="gpt-4o-mini", total_tokens=10_000))
    room = await budget.fit_output(RUN, 100, 500, effect=_ref(1))
    amount = Usage(input_tokens=100, output_tokens=room, model_calls=1)
    other = await budget.reserve(Reservation(RUN, "model", amount, effect=_ref(2)))
    mine = await budget.reserve(Reservation(RUN, "model", amount, effect=_ref(1)))
    holds = {h.id: h.effect for h in await budget.ledger.holds(RUN.run_id)}
    assert holds == {other.id: _ref(2), mine.id: _ref(1)}
    assert mine.effect == _ref(1)


# ---------------------------------------------------------------------------- older ledgers

OLD_DDL = [
    "CREATE TABLE loom_budget_holds (id TEXT PRIMARY KEY, run_id TEXT NOT NULL, "
    "scopes TEXT NOT NULL, amounts TEXT NOT NULL, created_at {real} NOT NULL)",
    "CREATE TABLE loom_budget_charges (id TEXT PRIMARY KEY, run_id TEXT NOT NULL, "
    "amounts TEXT NOT NULL, created_at {real} NOT NULL)",
    "INSERT INTO loom_budget_holds VALUES ('old', 'r-1', '[\"global\"]', "
    "'{{\"tool_calls\":1}}', 1.0)",
]


async def _charges_old_and_new_holds(ledger: Ledger) -> None:
    """A ledger opened on tables made before holds named effects: the old hold reads as
    naming none, a new one keeps its effect, and their charges say the same."""
    budget = StandardBudget(BudgetConfig(tool_calls=5), ledger)
    try:
        held = await budget.reserve(
            Reservation(RUN, "tool", Usage(tool_calls=1), effect=_ref(7, 2))
        )
        found = {h.id: h.effect for h in await ledger.holds("r-1")}
        assert found == {"old": None, held.id: _ref(7, 2)}
        await budget.begin_run(RUN)
        charged = {c.id: c.effect for c in await ledger.charges("r-1")}
        assert charged == {"old": None, held.id: _ref(7, 2)}
    finally:
        await ledger.close()


async def test_an_older_sqlite_ledger_gets_the_effect_columns(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with sqlite3.connect(path) as conn:
        for statement in OLD_DDL:
            conn.execute(statement.format(real="REAL"))
    await _charges_old_and_new_holds(SqliteLedger(path))
    again = SqliteLedger(path)  # opened again: nothing to add
    try:
        effects = sorted(str(c.effect) for c in await again.charges("r-1"))
    finally:
        await again.close()
    assert effects == ["EffectRef(key='r-1:node:1:7', execution=2)", "None"]


async def test_an_older_postgres_ledger_gets_the_effect_columns(pg_schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(pg.postgres_dsn())
    try:
        await conn.execute(f'SET search_path TO "{pg_schema}"')
        for statement in OLD_DDL:
            await conn.execute(statement.format(real="DOUBLE PRECISION"))
    finally:
        await conn.close()
    await _charges_old_and_new_holds(PostgresLedger(pg.postgres_dsn(), schema=pg_schema))

"""StandardBudget: every cap, global and per user; reserve/settle/release; warnings; wall clock;
the ledgers (memory, SQLite, Postgres) under concurrency, property tests, and two processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pg
from loomgraph.governance import (
    NANO_USD,
    BudgetConfig,
    BudgetWarning,
    Caps,
    InMemoryLedger,
    Ledger,
    SqliteLedger,
    StandardBudget,
)
from loomgraph.protocols import Budget, BudgetExceeded, BudgetScope, Reservation, Usage
from loomgraph.protocols.pricing import Price, compute_cost

pg_schema = pg.pg_schema
MODEL = "claude-sonnet-4-5"  # $3 in, $15 out, $3.75 cache write per million tokens
ALICE = BudgetScope("run-a", "alice")
BOB = BudgetScope("run-b", "bob")


def model_call(scope: BudgetScope = ALICE, prompt: int = 100, max_out: int = 200) -> Reservation:
    """A model reservation shaped like NodeContext makes it."""
    return Reservation(
        scope, "model", Usage(input_tokens=prompt, output_tokens=max_out, model_calls=1)
    )


def tool_call(scope: BudgetScope = ALICE) -> Reservation:
    return Reservation(scope, "tool", Usage(tool_calls=1))


def node_visit(scope: BudgetScope = ALICE) -> Reservation:
    return Reservation(scope, "node", Usage())


async def committed(budget: StandardBudget, scope: str) -> dict[str, int]:
    totals = await budget.totals(scope)
    return {m: totals.committed(m) for m in set(totals.spent) | set(totals.reserved)}


def test_is_a_budget() -> None:
    assert isinstance(StandardBudget(), Budget)


# ---------------------------------------------------------------------------- every cap

# cap → (a reservation using 100 of... , how many fit under the cap)
CASES: dict[str, tuple[Any, Any, int]] = {
    "input_tokens": (250, lambda s: model_call(s, prompt=100, max_out=1), 2),
    "output_tokens": (450, lambda s: model_call(s, prompt=1, max_out=200), 2),
    "total_tokens": (650, lambda s: model_call(s, prompt=100, max_out=200), 2),
    # 100 prompt tokens at the cache-write price + 200 output tokens = $0.003375
    "cost_usd": (0.00675, lambda s: model_call(s, prompt=100, max_out=200), 2),
    "model_calls": (3, lambda s: model_call(s), 3),
    "tool_calls": (2, tool_call, 2),
    "node_visits": (4, node_visit, 4),
}


@pytest.mark.parametrize("level", ["global", "user"])
@pytest.mark.parametrize("cap", sorted(CASES))
async def test_every_cap_blocks_at_its_limit_and_records_nothing(cap: str, level: str) -> None:
    limit, make, fits = CASES[cap]
    caps = {cap: limit}
    config = (
        BudgetConfig(model=MODEL, **caps)
        if level == "global"
        else BudgetConfig(model=MODEL, per_user=Caps(**caps))
    )
    budget = StandardBudget(config)
    scope = "global" if level == "global" else "user:alice"
    for _ in range(fits):
        await budget.reserve(make(ALICE))
    before = await budget.totals(scope)
    with pytest.raises(BudgetExceeded) as info:
        await budget.reserve(make(ALICE))
    assert info.value.cap == f"{scope}:{cap}"
    assert "> cap" in info.value.detail
    after = await budget.totals(scope)
    assert after == before  # a blocked reservation records nothing
    assert len(await budget.ledger.holds()) == fits


async def test_per_user_caps_are_separate_and_users_override() -> None:
    budget = StandardBudget(
        BudgetConfig(per_user=Caps(tool_calls=1), users={"bob": Caps(tool_calls=3)}, hold_wait_s=0)
    )
    await budget.reserve(tool_call(ALICE))
    with pytest.raises(BudgetExceeded, match="user:alice:tool_calls"):
        await budget.reserve(tool_call(ALICE))
    for _ in range(3):
        await budget.reserve(tool_call(BOB))
    with pytest.raises(BudgetExceeded, match="user:bob:tool_calls"):
        await budget.reserve(tool_call(BOB))
    anonymous = BudgetScope("run-x", None)
    await budget.reserve(tool_call(anonymous))
    with pytest.raises(BudgetExceeded, match=r"user:\(anonymous\):tool_calls"):
        await budget.reserve(tool_call(BudgetScope("run-y", None)))
    # A user who calls themselves "(anonymous)" has caps of their own, not the anonymous ones.
    await budget.reserve(tool_call(BudgetScope("run-z", "(anonymous)")))
    with pytest.raises(BudgetExceeded, match=r"user:\(\(anonymous\):tool_calls"):
        await budget.reserve(tool_call(BudgetScope("run-w", "(anonymous)")))


async def test_global_cap_counts_all_users_together() -> None:
    budget = StandardBudget(BudgetConfig(tool_calls=2, per_user=Caps(tool_calls=5), hold_wait_s=0))
    await budget.reserve(tool_call(ALICE))
    await budget.reserve(tool_call(BOB))
    with pytest.raises(BudgetExceeded, match="global:tool_calls"):
        await budget.reserve(tool_call(BudgetScope("run-c", "carol")))


# ---------------------------------------------------------------------------- amounts


async def test_reserve_prices_the_worst_case_with_the_price_table() -> None:
    budget = StandardBudget(BudgetConfig(model=MODEL, cost_usd=10.0))
    held = await budget.reserve(model_call(prompt=1000, max_out=500))
    worst = max(
        compute_cost(MODEL, Usage(input_tokens=1000, output_tokens=500)),
        compute_cost(MODEL, Usage(cache_write_tokens=1000, output_tokens=500)),
    )
    assert held.id
    assert held.amount.cost_usd == pytest.approx(worst, abs=1e-9)
    reserved = (await budget.totals()).reserved
    assert reserved["cost_usd"] == pytest.approx(worst * NANO_USD, abs=1)
    assert reserved["input_tokens"] == 1000 and reserved["output_tokens"] == 500


async def test_settle_replaces_the_reservation_with_the_actual_amount() -> None:
    budget = StandardBudget(BudgetConfig(model=MODEL, cost_usd=10.0, total_tokens=10_000))
    held = await budget.reserve(model_call(prompt=1000, max_out=500))
    actual: Usage = Usage(input_tokens=700, cache_read_tokens=200, output_tokens=40)
    await budget.settle(held, actual)
    totals = await budget.totals()
    assert totals.reserved.get("cost_usd", 0) == 0 and totals.reserved.get("total_tokens", 0) == 0
    assert totals.spent["total_tokens"] == 940  # cached prompt tokens count as input
    assert totals.spent["cost_usd"] == pytest.approx(compute_cost(MODEL, actual) * NANO_USD, abs=1)
    assert totals.spent["model_calls"] == 1  # the call happened even if usage omits it
    held = await budget.reserve(model_call())
    await budget.settle(held, Usage(input_tokens=1, cost_usd=0.5))  # a given cost is used
    assert (await budget.totals()).spent["cost_usd"] == pytest.approx(
        (compute_cost(MODEL, actual) + 0.5) * NANO_USD, abs=2
    )


async def test_release_gives_the_reservation_back_and_unknown_ids_are_harmless() -> None:
    budget = StandardBudget(BudgetConfig(tool_calls=1))
    held = await budget.reserve(tool_call())
    await budget.release(held)
    await budget.release(held)  # a second release changes nothing
    assert (await budget.totals()).committed("tool_calls") == 0
    await budget.reserve(tool_call())  # the capacity is back


async def test_settling_beyond_the_reservation_is_recorded_and_blocks_later_ones() -> None:
    budget = StandardBudget(BudgetConfig(model=MODEL, cost_usd=0.01))
    held = await budget.reserve(model_call(prompt=10, max_out=10))
    await budget.settle(held, Usage(input_tokens=10, output_tokens=10, cost_usd=0.02))
    assert (await budget.totals()).spent["cost_usd"] == 2 * NANO_USD // 100
    with pytest.raises(BudgetExceeded, match="global:cost_usd"):
        await budget.reserve(model_call(prompt=1, max_out=1))
    await budget.reserve(tool_call())  # costs nothing: not blocked by the cost cap


async def test_settle_without_a_hold_still_charges() -> None:
    budget = StandardBudget(BudgetConfig(tool_calls=5))
    await budget.settle(
        Reservation(ALICE, "tool", Usage(tool_calls=1), "gone"), Usage(tool_calls=1)
    )
    assert (await budget.totals()).spent["tool_calls"] == 1


async def test_node_visits_count_on_settle_and_tools_count_calls() -> None:
    budget = StandardBudget(BudgetConfig(node_visits=10, tool_calls=10))
    await budget.settle(await budget.reserve(node_visit()), Usage())
    await budget.settle(await budget.reserve(tool_call()), Usage(tool_calls=1))
    spent = (await budget.totals()).spent
    assert spent == {"node_visits": 1, "tool_calls": 1}


async def test_prices_override_and_input_margin() -> None:
    table = StandardBudget(
        BudgetConfig(model="my-model", cost_usd=1.0, prices={"my-model": Price(1.0, 2.0)})
    )
    held = await table.reserve(model_call(prompt=1_000_000, max_out=0))
    assert held.amount.cost_usd == pytest.approx(1.0)
    fn = StandardBudget(BudgetConfig(cost_usd=1.0, prices=lambda model, usage: 0.25))
    assert (await fn.reserve(model_call())).amount.cost_usd == pytest.approx(0.25)
    margin = StandardBudget(BudgetConfig(input_tokens=1000, input_margin=1.5))
    await margin.reserve(model_call(prompt=600))
    with pytest.raises(BudgetExceeded, match="input_tokens"):
        await margin.reserve(model_call(prompt=100))  # 900 + 150 > 1000


async def test_a_cost_cap_without_a_model_refuses_to_guess() -> None:
    budget = StandardBudget(BudgetConfig(cost_usd=1.0))
    with pytest.raises(ValueError, match="model"):
        await budget.reserve(model_call())
    budget.model = MODEL
    assert (await budget.reserve(model_call())).amount.cost_usd > 0


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="cost_usd"):
        BudgetConfig(cost_usd=-1)
    with pytest.raises(ValueError, match="warn_at"):
        BudgetConfig(warn_at=1.5)
    with pytest.raises(ValueError, match="per-user"):
        BudgetConfig(per_user=BudgetConfig(per_user=Caps(tool_calls=1)))
    with pytest.raises(ValueError, match="input_margin"):
        BudgetConfig(input_margin=0.5)
    assert BudgetConfig(cost_usd=0.3).limits()["cost_usd"] == 300_000_000


async def test_no_caps_means_no_ledger_traffic() -> None:
    budget = StandardBudget(BudgetConfig())
    held = await budget.reserve(model_call())
    await budget.settle(held, Usage(input_tokens=5))
    assert await budget.ledger.holds() == []
    assert (await budget.totals()).spent == {}


# ---------------------------------------------------------------------------- warnings


async def test_warning_once_per_cap_and_scope() -> None:
    heard: list[BudgetWarning] = []

    async def on_warning(warning: BudgetWarning) -> None:
        heard.append(warning)

    budget = StandardBudget(
        BudgetConfig(tool_calls=10, per_user=Caps(tool_calls=5)), on_warning=on_warning
    )
    for _ in range(3):
        await budget.settle(await budget.reserve(tool_call()), Usage())
    assert heard == []
    await budget.settle(await budget.reserve(tool_call()), Usage())  # alice at 4/5 = 80%
    assert [(w.cap, w.fraction, w.user_id) for w in heard] == [
        ("user:alice:tool_calls", 0.8, "alice")
    ]
    for _ in range(4):
        await budget.settle(await budget.reserve(tool_call(BOB)), Usage())  # global at 8/10
    assert [w.cap for w in budget.warnings()] == [
        "user:alice:tool_calls",
        "global:tool_calls",
        "user:bob:tool_calls",
    ]
    await budget.settle(await budget.reserve(tool_call(BOB)), Usage())
    assert len(heard) == 3  # once per cap and scope


async def test_a_broken_warning_callback_does_not_break_settle() -> None:
    def broken(warning: BudgetWarning) -> None:
        raise RuntimeError("boom")

    budget = StandardBudget(BudgetConfig(tool_calls=1), on_warning=broken)
    await budget.settle(await budget.reserve(tool_call()), Usage())
    assert (await budget.totals()).spent["tool_calls"] == 1
    assert budget.warnings()[0].cap == "global:tool_calls"


# ---------------------------------------------------------------------------- wall clock


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_wall_clock_deadline_blocks_and_warns(tmp_path: Path) -> None:
    clock = Clock()
    config = BudgetConfig(wall_clock_s=100, per_user=Caps(wall_clock_s=50))
    assert config.deadline_for(1000.0, "alice") == 1050.0
    assert config.deadline_for(1000.0, None) == 1050.0
    assert BudgetConfig(wall_clock_s=100).deadline_for(1000.0) == 1100.0
    budget = StandardBudget(config, SqliteLedger(tmp_path / "b.db"), clock=clock)
    assert await budget.begin_run(ALICE) == 1050.0
    clock.now = 1039.0
    await budget.reserve(node_visit())
    assert [w.cap for w in budget.warnings()] == []
    clock.now = 1041.0  # 82% of the time gone
    await budget.reserve(node_visit())
    assert [w.cap for w in budget.warnings()] == ["user:alice:wall_clock_s"]
    clock.now = 1050.0
    with pytest.raises(BudgetExceeded) as info:
        await budget.reserve(tool_call())
    assert info.value.cap == "user:alice:wall_clock_s"
    # A resume (a new budget on the same ledger, later) keeps the original deadline.
    later = StandardBudget(config, SqliteLedger(tmp_path / "b.db"), clock=Clock(2000.0))
    assert await later.begin_run(ALICE) == 1050.0
    with pytest.raises(BudgetExceeded, match="wall_clock_s"):
        await later.reserve(tool_call())
    # The deadline stored with the run is kept even after the ledger forgot the run.
    await later.end_run(ALICE)
    await budget.ledger.close()
    await later.ledger.close()
    fresh = StandardBudget(config, clock=Clock(1010.0))
    assert await fresh.begin_run(ALICE, deadline=1020.0) == 1020.0


async def test_begin_run_charges_holds_a_crashed_attempt_left() -> None:
    budget = StandardBudget(BudgetConfig(tool_calls=2))
    await budget.reserve(tool_call())  # the process "crashes" holding it
    restarted = StandardBudget(BudgetConfig(tool_calls=2), budget.ledger)
    await restarted.begin_run(ALICE)
    assert await restarted.ledger.holds() == []
    # The call may have run: charged at its reservation, once, however often the run opens.
    await restarted.begin_run(ALICE)
    assert (await restarted.totals()).spent == {"tool_calls": 1}
    assert [c.amounts for c in await restarted.charges(ALICE.run_id)] == [{"tool_calls": 1}]
    assert (await restarted.crashed_usage(ALICE.run_id)).tool_calls == 1
    await restarted.reserve(tool_call())
    with pytest.raises(BudgetExceeded):
        await restarted.reserve(tool_call())
    await restarted.end_run(ALICE)
    assert (await restarted.totals()).committed("tool_calls") == 1


# ---------------------------------------------------------------------------- concurrency


def _ledger(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Ledger:
    if kind == "memory":
        return InMemoryLedger()
    if kind == "sqlite":
        return SqliteLedger(tmp_path / "ledger.db")
    from loomgraph.governance import PostgresLedger

    return PostgresLedger(pg.postgres_dsn(), schema=request.getfixturevalue("pg_schema"))


LEDGERS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
CONCURRENT = BudgetConfig(
    model=MODEL, cost_usd=1.0, per_user=Caps(cost_usd=0.1, output_tokens=6_000, model_calls=40)
)


@pytest.fixture(params=LEDGERS)
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Ledger:
    return _ledger(request.param, tmp_path, request)


async def test_a_settlement_after_its_crash_charge_adds_only_what_it_spent_beyond(
    ledger: Ledger,
) -> None:
    """A process stopped past its lease is taken for dead: the resume charges its holds in
    full. When it wakes and settles them, it must not pay for the same calls again."""
    config = BudgetConfig(model=MODEL, output_tokens=10_000, tool_calls=10)
    stopped = StandardBudget(config, ledger)
    tool = await stopped.reserve(tool_call())
    model = await stopped.reserve(model_call(ALICE))
    resumed = StandardBudget(config, ledger)
    await resumed.begin_run(ALICE)  # charges both holds in full
    charged = dict((await resumed.totals()).spent)
    await stopped.settle(tool, Usage(tool_calls=1))
    assert dict((await resumed.totals()).spent) == charged
    reserved = model.amount.output_tokens
    await stopped.settle(model, Usage(input_tokens=1, output_tokens=reserved + 7))
    spent = dict((await resumed.totals()).spent)
    assert spent == {**charged, "output_tokens": charged["output_tokens"] + 7}
    assert await ledger.holds() == []


async def test_fifty_concurrent_tasks_of_one_user_never_pass_a_cap(ledger: Ledger) -> None:
    budget = StandardBudget(CONCURRENT, ledger)
    limits = dict(budget.scopes(ALICE))
    rng = random.Random(5)
    checks = 0

    async def check() -> None:
        nonlocal checks
        for scope, caps in limits.items():
            now = await committed(budget, scope)
            for metric, cap in caps.items():
                assert now.get(metric, 0) <= cap, (scope, metric, now)
        checks += 1

    async def task(i: int) -> int:
        done = 0
        while True:
            try:
                held = await budget.reserve(model_call(BudgetScope(f"run-{i}", "alice")))
            except BudgetExceeded as err:
                assert err.cap.startswith("user:alice:")
                return done
            await check()
            await asyncio.sleep(0)  # yield, so the 50 tasks interleave even in memory
            await budget.settle(
                held, Usage(input_tokens=rng.randint(1, 100), output_tokens=rng.randint(1, 200))
            )
            await check()
            done += 1

    done = sum(await asyncio.gather(*(task(i) for i in range(50))))
    totals = await budget.totals("user:alice")
    assert done > 1 and checks == 2 * done
    assert totals.spent["model_calls"] == done and not any(totals.reserved.values())
    await ledger.close()


def test_all_ledgers_agree(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The check logic is written once: the same script gives the same totals everywhere."""
    with_pg = pg._unavailable_reason() is None or pg.postgres_required()
    ledgers = [
        _ledger(kind, tmp_path, request)
        for kind in ["memory", "sqlite"] + (["postgres"] if with_pg else [])
    ]
    seen = [asyncio.run(_script(ledger)) for ledger in ledgers]
    assert all(s == seen[0] for s in seen)
    assert seen[0][0] == ["ok", "ok", "ok", "user:alice:total_tokens"]


async def _script(ledger: Ledger) -> tuple[list[str], dict[str, int]]:
    budget = StandardBudget(BudgetConfig(model=MODEL, per_user=Caps(total_tokens=1000)), ledger)
    outcomes = []
    for prompt in (300, 300, 300, 300):
        try:
            held = await budget.reserve(model_call(prompt=prompt, max_out=100))
            await budget.settle(held, Usage(input_tokens=prompt - 50, output_tokens=10))
            outcomes.append("ok")
        except BudgetExceeded as err:
            outcomes.append(err.cap)
    spent = (await budget.totals("user:alice")).spent
    await ledger.close()
    return outcomes, spent


# ---------------------------------------------------------------------------- properties

OPS = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "settle", "release"]),
        st.sampled_from(["model", "tool", "node"]),
        st.integers(0, 400),
        st.integers(0, 400),
        st.floats(0, 1.2),
        st.sampled_from(["alice", "bob"]),
    ),
    max_size=40,
)
SMALL = st.none() | st.integers(0, 8)
CAPS = st.builds(
    Caps,
    input_tokens=st.none() | st.integers(0, 2000),
    output_tokens=st.none() | st.integers(0, 2000),
    total_tokens=st.none() | st.integers(0, 3000),
    cost_usd=st.none() | st.floats(0, 0.05),
    model_calls=SMALL,
    tool_calls=SMALL,
    node_visits=SMALL,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, global_caps=CAPS, user_caps=CAPS)
def test_property_spent_plus_reserved_within_cap(
    ops: list[Any], global_caps: Caps, user_caps: Caps
) -> None:
    """Random reserve/settle/release (actual ≤ reserved): committed ≤ cap, spent never drops."""
    caps = {
        name: getattr(global_caps, name)
        for name in (
            "input_tokens",
            "output_tokens",
            "total_tokens",
            "cost_usd",
            "model_calls",
            "tool_calls",
            "node_visits",
        )
    }
    budget = StandardBudget(BudgetConfig(model=MODEL, per_user=user_caps, **caps))

    async def run() -> None:
        held: list[Reservation] = []
        spent_before: dict[str, dict[str, int]] = {}
        for op, kind, prompt, out, share, user in ops:
            scope = BudgetScope(f"run-{user}", user)
            if op == "reserve":
                amount: Usage = (
                    Usage(input_tokens=prompt, output_tokens=out, model_calls=1)
                    if kind == "model"
                    else Usage()
                )
                if kind == "tool":
                    amount = Usage(tool_calls=1)
                with contextlib.suppress(BudgetExceeded):
                    held.append(await budget.reserve(Reservation(scope, kind, amount)))
            elif held:
                r = held.pop(prompt % len(held))
                if op == "release":
                    await budget.release(r)
                else:
                    f = min(share, 1.0)
                    await budget.settle(
                        r,
                        Usage(
                            input_tokens=int(r.amount.input_tokens * f),
                            output_tokens=int(r.amount.output_tokens * f),
                        ),
                    )
            for name, limits in budget.scopes(scope) + budget.scopes(
                BudgetScope("x", "bob" if user == "alice" else "alice")
            ):
                totals = await budget.totals(name)
                for metric, cap in limits.items():
                    assert totals.committed(metric) <= cap, (name, metric)
                for metric, value in spent_before.get(name, {}).items():
                    assert totals.spent.get(metric, 0) >= value
                spent_before[name] = dict(totals.spent)

    asyncio.run(run())


# ---------------------------------------------------------------------------- two processes

CHILD = textwrap.dedent("""
    import asyncio, json, os, random, sys
    from loomgraph.governance import (BudgetConfig, Caps, PostgresLedger, SqliteLedger,
                                      StandardBudget)
    from loomgraph.protocols import BudgetExceeded, BudgetScope, Reservation, Usage

    kind, target, schema = sys.argv[1:4]

    async def main():
        ledger = SqliteLedger(target) if kind == "sqlite" else PostgresLedger(target,
                                                                               schema=schema)
        budget = StandardBudget(BudgetConfig(model="claude-sonnet-4-5", per_user=Caps(
            cost_usd=0.2, output_tokens=12000)), ledger)
        limits = dict(budget.scopes(BudgetScope("x", "alice")))["user:alice"]
        await ledger.totals("user:alice")  # connected before the start signal
        print("ready", flush=True)
        sys.stdin.readline()
        rng, done, worst = random.Random(os.getpid()), 0, 0.0

        async def check():
            nonlocal worst
            totals = await ledger.totals("user:alice")
            for metric, cap in limits.items():
                worst = max(worst, totals.committed(metric) / cap)

        async def reserver(i):
            nonlocal done
            scope = BudgetScope(f"run-{os.getpid()}-{i}", "alice")
            while True:
                try:
                    held = await budget.reserve(Reservation(scope, "model", Usage(
                        input_tokens=100, output_tokens=200, model_calls=1)))
                except BudgetExceeded:
                    return
                await check()
                await budget.settle(held, Usage(input_tokens=rng.randint(50, 100),
                                                output_tokens=rng.randint(1, 200)))
                await check()
                done += 1

        await asyncio.gather(*(reserver(i) for i in range(10)))
        await ledger.close()
        print(json.dumps({"done": done, "worst": worst}), flush=True)

    asyncio.run(main())
""")


def _two_processes(kind: str, target: str, schema: str = "") -> list[dict[str, Any]]:
    """Run 2 x 10 reservers of one user; both processes start on one signal."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, kind, target, schema],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


async def _check_shared_total(ledger: Ledger, results: list[dict[str, Any]]) -> None:
    budget = StandardBudget(
        BudgetConfig(model=MODEL, per_user=Caps(cost_usd=0.2, output_tokens=12000)), ledger
    )
    limits = dict(budget.scopes(ALICE))["user:alice"]
    totals = await budget.totals("user:alice")
    await ledger.close()
    assert all(r["worst"] <= 1.0 for r in results)  # never over a cap, at any check
    assert totals.reserved == {} or not any(totals.reserved.values())
    assert totals.spent["model_calls"] == sum(r["done"] for r in results)
    for metric, cap in limits.items():
        assert totals.spent.get(metric, 0) <= cap
    # Each process alone could exhaust the cap; together they stopped at it.
    assert (
        totals.spent["cost_usd"] > limits["cost_usd"] - 2 * 3_375_000
        or totals.spent["output_tokens"] > 12000 - 2 * 200
    )


def test_two_processes_share_one_sqlite_cap(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    results = _two_processes("sqlite", path)
    asyncio.run(_check_shared_total(SqliteLedger(path), results))


@pytest.mark.postgres
def test_two_processes_share_one_postgres_cap(pg_schema: str) -> None:
    from loomgraph.governance import PostgresLedger

    results = _two_processes("postgres", pg.postgres_dsn(), pg_schema)
    asyncio.run(_check_shared_total(PostgresLedger(pg.postgres_dsn(), schema=pg_schema), results))


class RecordingLedger(SqliteLedger):
    """A SQLite ledger at FULL that notes whether each write transaction was durable."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writes: list[bool] = []

    def _transaction(self, durable: bool = True) -> Any:
        self.writes.append(durable)
        return super()._transaction(durable)


async def test_only_holds_that_guard_a_cap_are_fsynced(tmp_path: Path) -> None:
    """A hold must survive a power cut only when a cap depends on it: a node visit where no
    scope caps visits is held (a process's death leaves it to be charged), committed without
    an fsync; a capped tool call's hold is fsynced. Two fsyncs fewer a governed turn."""
    ledger = RecordingLedger(tmp_path / "ledger.db")
    budget = StandardBudget(BudgetConfig(per_user=Caps(tool_calls=10)), ledger)
    try:
        visit = await budget.reserve(node_visit())
        assert [h.amounts for h in await ledger.holds()] == [{"node_visits": 1}]
        call = await budget.reserve(tool_call())
        writes = ledger.writes[:]
        await budget.settle(visit, Usage())
        await budget.settle(call, Usage(tool_calls=1))
        assert writes[-2:] == [False, True]  # the visit's hold, then the tool call's
        # Still counted: the visit is charged like any settled reservation.
        assert (await budget.totals("user:alice")).spent == {"tool_calls": 1, "node_visits": 1}
        capped = StandardBudget(BudgetConfig(node_visits=5), RecordingLedger(tmp_path / "b.db"))
        await capped.reserve(node_visit())
        assert capped.ledger.writes[-1] is True  # type: ignore[attr-defined]
        await capped.ledger.close()
    finally:
        await ledger.close()


async def test_settle_says_what_it_added_and_a_zombie_adds_nothing_a_resume_charged() -> None:
    """A process stopped past its lease settles after a resume charged its hold in full:
    the ledger adds only what it spent beyond that, and `settle` says so, for the audit
    entry (which used to claim a charge the ledger never made)."""
    budget = StandardBudget(BudgetConfig(tool_calls=5))
    normal = await budget.reserve(tool_call())
    assert await budget.settle(normal, Usage(tool_calls=1)) == {"tool_calls": 1}
    held = await budget.reserve(tool_call())  # then the process is stopped, and taken over
    resumed = StandardBudget(BudgetConfig(tool_calls=5), budget.ledger)
    await resumed.begin_run(ALICE)  # charges the hold it finds, at its reservation
    assert await budget.settle(held, Usage(tool_calls=1)) == {}
    assert (await budget.totals()).spent == {"tool_calls": 2}  # each call charged once

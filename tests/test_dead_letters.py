"""Dead letters: a run whose every recovery crashes is given up after N of them, listed, and
retried only by an operator; other runs are unaffected (finding 4 of issue 13)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import crash_worker as W
import pg
from loomgraph import Agent
from loomgraph.agent.recovery import RunDeadLettered
from loomgraph.agent.resume_errors import ToolNotOffered
from loomgraph.models import ScriptedModel
from loomgraph.protocols import RunStatus
from test_crash_matrix import Journal, run_worker

pg_schema = pg.pg_schema
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Journal:
    """A fresh journal on each backend."""
    if request.param == "sqlite":
        return Journal(f"sqlite:{tmp_path / 'journal.db'}")
    return Journal(pg.postgres_dsn(), request.getfixturevalue("pg_schema"))


def cli(journal: Journal, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `loomgraph runs` command on the journal (SQLite only: --runtime takes a DSN
    without a schema)."""
    return subprocess.run(
        [sys.executable, "-m", "loomgraph.cli.main", "runs", *args, "--runtime", journal.spec],
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_a_run_whose_recoveries_keep_crashing_becomes_a_dead_letter(
    journal: Journal, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.tsv"
    healthy = run_worker(journal, ledger, "run")
    assert healthy.returncode == 0, healthy.stderr
    first = run_worker(journal, ledger, "run", "--poison")
    assert first.returncode == -signal.SIGKILL, first.stderr
    run_id = first.lines[0]["run_id"]
    for attempt in range(1, 4):  # three recoveries, each killed by the same tool
        again = run_worker(journal, ledger, "resume", "--run-id", run_id, "--poison")
        assert again.returncode == -signal.SIGKILL, (attempt, again.stderr)
        assert again.last("crash")["crash"] == "poison"
        record = await _record(journal, run_id)
        assert (record.status, record.recoveries) == ("running", attempt)
    given_up = run_worker(journal, ledger, "resume", "--run-id", run_id, "--poison")
    assert given_up.returncode == 0, given_up.stderr
    result = given_up.last("result")
    assert result["result"]["status"] == "dead_letter" and result["executed"] == []
    assert "gave up after 3 failed recoveries" in result["result"]["reason"]
    record = await _record(journal, run_id)
    assert record.status == RunStatus.DEAD_LETTER and not record.status.final
    assert (await _record(journal, healthy.lines[0]["run_id"])).status == "completed"

    # Not resumed automatically: a plain resume refuses, and runs nothing.
    agent = Agent(W.INSTRUCTIONS, model=ScriptedModel(W.SCRIPT), runtime=journal.open())
    try:
        with pytest.raises(RunDeadLettered, match="retry"):
            await agent.resume(run_id)
        # Nor retried by an Agent without the tool its last recovery was cut off during:
        # the dead letter stays one, its count kept.
        with pytest.raises(ToolNotOffered, match="cut off during a call to 'add'"):
            await agent.retry(run_id)
        kept = await _record(journal, run_id)
        assert (kept.status, kept.recoveries) == (RunStatus.DEAD_LETTER, 3)
    finally:
        await agent.aclose()
    if journal.schema is None:
        listed = cli(journal, "list", "--status", "dead_letter", "--json")
        assert listed.returncode == 0, listed.stderr
        ids = [json.loads(line)["run_id"] for line in listed.stdout.splitlines() if line]
        assert ids == [run_id]

    # An operator retries it (the tool fixed): the count is forgotten and the run completes.
    retried = run_worker(journal, ledger, "retry", "--run-id", run_id)
    assert retried.returncode == 0, retried.stderr
    assert retried.last("result")["result"]["status"] == "completed"
    record = await _record(journal, run_id)
    assert (record.status, record.recoveries) == ("completed", 1)


async def _record(journal: Journal, run_id: str) -> Any:
    runtime: Any = journal.open()
    try:
        return await runtime.load_run(run_id)
    finally:
        await runtime.close()


async def test_max_recoveries_is_configurable_and_failed_resumes_count_in_memory() -> None:
    from loomgraph.protocols import ModelError

    down = ModelError("provider down")
    agent = Agent("", model=ScriptedModel([down] * 5), max_recoveries=1)
    first = await agent.run("go")
    assert first.status == RunStatus.FAILED and "provider down" in first.reason
    again = await agent.resume(first.run_id)  # recovery 1: fails the same way
    assert again.status == RunStatus.FAILED
    given_up = await agent.resume(first.run_id)
    assert given_up.status == RunStatus.DEAD_LETTER
    assert "gave up after 1 failed recoveries; last: " in given_up.reason
    assert "provider down" in given_up.reason
    other = await agent.run("another")  # other runs are unaffected
    assert other.status == RunStatus.FAILED and other.run_id != first.run_id
    retried = await agent.retry(first.run_id)  # the count is forgotten: one more try
    assert retried.status == RunStatus.FAILED
    record = await agent.deps.runtime.load_run(first.run_id)
    assert record is not None and record.recoveries == 1


async def test_a_dead_letter_charges_what_its_last_attempt_held() -> None:
    """The attempt before the last died holding its budget (a node visit, a model call): when
    the next resume gives the run up, those holds are charged as any crashed attempt's are,
    not left reserved against the caps for good."""
    from loomgraph.governance import BudgetConfig, StandardBudget
    from loomgraph.protocols import BudgetScope, ModelError, Reservation, Usage

    budget = StandardBudget(BudgetConfig(model_calls=100))
    down = ModelError("provider down")
    agent = Agent("", model=ScriptedModel([down] * 5), max_recoveries=1, budget=budget)
    first = await agent.run("go", user_id="u")
    again = await agent.resume(first.run_id)  # recovery 1 fails the same way
    assert again.status == RunStatus.FAILED
    # As if that attempt's process had died holding a model call.
    await budget.reserve(Reservation(BudgetScope(first.run_id, "u"), "model", Usage(model_calls=1)))
    ledger = budget.ledger
    assert await ledger.holds(first.run_id)
    given_up = await agent.resume(first.run_id)
    assert given_up.status == RunStatus.DEAD_LETTER
    assert await ledger.holds(first.run_id) == []
    assert [c.amounts.get("model_calls") for c in await ledger.charges(first.run_id)] == [1]

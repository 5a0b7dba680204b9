"""A crashed attempt is charged: SIGKILL between reserve and settle, then resume.

`charging_worker.py` runs the crash matrix's script (3 model calls, 3 tool calls) with a
capped `StandardBudget` whose ledger is in the journal's own database, and writes one durable
line per real execution, model or tool. Killed after an effect ran but before it was
settled, the resume charges the dead attempt's hold in full and runs the effect again, which
is charged again: N executions are charged as N, on SQLite and on PostgreSQL. The node visit
a kill cut is given back, not charged: the resume does it again and charges it once, so the
run is charged the visits of the same run never killed, at every crash point.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import crash_worker as W
import pg
from test_crash_matrix import Journal, break_dead_lease, ledger_lines

WORKER = str(Path(__file__).with_name("charging_worker.py"))
pg_schema = pg.pg_schema


def worker(journal: Journal, ledger: Path, *args: str) -> list[dict[str, Any]]:
    """Run one charging worker to its end (normal exit or its own SIGKILL); its JSON lines."""
    done = subprocess.run(
        [sys.executable, WORKER, *args, *journal.args(), "--ledger", str(ledger)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stderr
    return lines


def last(lines: list[dict[str, Any]], key: str) -> dict[str, Any]:
    found = [line for line in lines if key in line]
    assert found, lines
    return found[-1]


async def crash_then_resume(journal: Journal, ledger: Path, *kills: tuple[str, int]) -> Any:
    """Run killed at the first point, resume killed at each further one, then resume to the
    end; the final worker's result line."""
    first, *more = kills
    lines = worker(journal, ledger, "run", "--point", first[0], "--n", str(first[1]))
    run_id, pid = last(lines, "run_id")["run_id"], last(lines, "run_id")["pid"]
    assert last(lines, "crash")["crash"] == first[0]
    for point, n in more:
        await break_dead_lease(journal, run_id, pid)
        lines = worker(
            journal, ledger, "resume", "--run-id", run_id, "--point", point, "--n", str(n)
        )
        assert last(lines, "crash")["crash"] == point, lines
        pid = last(lines, "resumed")["pid"]
    await break_dead_lease(journal, run_id, pid)
    return last(worker(journal, ledger, "resume", "--run-id", run_id), "result")


def executions(ledger: Path) -> tuple[int, int]:
    """(model calls, tool calls) really executed, from the durable side-effect ledger."""
    keys = [key for key, _ in ledger_lines(ledger)]
    models = sum(1 for key in keys if key.startswith("model:"))
    return models, len(keys) - models


def check_charged(end: dict[str, Any], ledger: Path) -> None:
    """Every execution is charged once: the crashed ones at their reservation, on resume."""
    models, tools = executions(ledger)
    spent = end["spent"]
    assert end["result"]["status"] == "completed"
    assert spent["model_calls"] + spent["tool_calls"] == models + tools
    assert (spent["model_calls"], spent["tool_calls"]) == (models, tools)
    # The run has 6 effects; each execution beyond them is a crashed one, charged once.
    assert end["charges"] == models + tools - 6


@pytest.mark.parametrize(
    ("point", "n", "kind"), [("after_effect", 2, "tool"), ("after_effect", 1, "model")]
)
async def test_sqlite_crashed_attempt_is_charged(
    tmp_path: Path, point: str, n: int, kind: str
) -> None:
    journal, ledger = Journal(f"sqlite:{tmp_path / 'journal.db'}"), tmp_path / "effects.tsv"
    end = await crash_then_resume(journal, ledger, (point, n))
    models, tools = executions(ledger)
    # Six effects, the crashed one run twice (a parallel tool may have been caught too).
    assert models + tools >= 7
    check_charged(end, ledger)
    usage = end["result"]["usage"]
    if kind == "tool":
        assert usage.get("tool_calls") == tools - 3  # the crashed calls, charged on resume
    else:
        # The crashed model call is in the run's usage at its reservation: 4 calls, and at
        # least the reserved max_tokens of output on top of the three answered calls.
        assert usage["model_calls"] == 4
        assert usage["output_tokens"] > 1000


async def test_postgres_crashed_attempt_is_charged(pg_schema: str, tmp_path: Path) -> None:
    journal, ledger = Journal(pg.postgres_dsn(), pg_schema), tmp_path / "effects.tsv"
    end = await crash_then_resume(journal, ledger, ("after_effect", 1))
    models, tools = executions(ledger)
    assert (models, tools) == (4, 3)  # 7 executions
    check_charged(end, ledger)  # charged as 7


@pytest.mark.parametrize("point", W.POINTS)
@pytest.mark.parametrize("n", [1, 2, 3])
async def test_a_killed_run_is_charged_the_visits_of_its_twin(
    tmp_path: Path, point: str, n: int
) -> None:
    """SIGKILLed at the Nth effect's (or transition's) crash point, then resumed: the visits
    charged are the uninterrupted run's (before, the visit in flight was charged twice)."""
    twin = Journal(f"sqlite:{tmp_path / 'twin.db'}")
    untouched = last(worker(twin, tmp_path / "twin.tsv", "run"), "result")
    journal, ledger = Journal(f"sqlite:{tmp_path / 'journal.db'}"), tmp_path / "effects.tsv"
    end = await crash_then_resume(journal, ledger, (point, n))
    assert end["result"]["status"] == "completed"
    assert end["result"]["node_visits"] == untouched["result"]["node_visits"]
    assert end["spent"]["node_visits"] == untouched["spent"]["node_visits"]

"""`Runtime.runs(user_id, status=)` keeps the runs in one status in the query.

Before, every caller that wanted the runs waiting for an approval (`Agent.send_on_expired`,
`loomgraph runs pending`, `runs send-on-expired`, `runs list --status`) read the whole
journal and filtered it in Python: a process calling `send_on_expired` now and then over a
journal of many finished runs read them all each time.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import journal_kinds
import pg
from loomgraph.protocols import RunRecord, RunStatus, Runtime
from loomgraph.runtime.sqlite import SqliteRuntime

pg_schema = pg.pg_schema
make = journal_kinds.make

# (run, user, status it ends in)
RUNS = [
    ("r1", "alice", RunStatus.COMPLETED),
    ("r2", "bob", RunStatus.AWAITING_APPROVAL),
    ("r3", "alice", RunStatus.AWAITING_APPROVAL),
    ("r4", "alice", RunStatus.FAILED),
    ("r5", None, RunStatus.AWAITING_APPROVAL),
]


@contextlib.asynccontextmanager
async def filled(make: journal_kinds.Factory) -> AsyncIterator[Runtime]:
    async with journal_kinds.opened(make) as runtime:
        for run_id, user, status in RUNS:
            await runtime.start_run(RunRecord(run_id, "react", "h", user, None))
            await runtime.finish_run(run_id, status, "", None)
        yield runtime


def ids(records: list[RunRecord]) -> list[str]:
    return [r.run_id for r in records]


async def test_runs_in_one_status_oldest_first(make: journal_kinds.Factory) -> None:
    async with filled(make) as journal:
        assert ids(await journal.runs(status=RunStatus.AWAITING_APPROVAL)) == ["r2", "r3", "r5"]
        assert ids(await journal.runs(status=RunStatus.FAILED)) == ["r4"]
        assert ids(await journal.runs(status=RunStatus.CANCELLED)) == []


async def test_one_users_runs_in_one_status(make: journal_kinds.Factory) -> None:
    async with filled(make) as journal:
        assert ids(await journal.runs("alice", status=RunStatus.AWAITING_APPROVAL)) == ["r3"]
        assert ids(await journal.runs("carol", status=RunStatus.AWAITING_APPROVAL)) == []
        # Without a status, as before.
        assert ids(await journal.runs("alice")) == ["r1", "r3", "r4"]
        assert ids(await journal.runs()) == ["r1", "r2", "r3", "r4", "r5"]


async def test_the_status_is_in_the_query(tmp_path: Path) -> None:
    """A SQL journal is asked for the waiting runs only, not for every run."""
    runtime = SqliteRuntime(str(tmp_path / "journal.db"))
    asked: list[str] = []
    fetch = runtime._fetch

    async def recording(name: str, args: object) -> object:
        asked.append(name)
        return await fetch(name, args)  # type: ignore[arg-type]

    runtime._fetch = recording  # type: ignore[method-assign]
    try:
        await runtime.start_run(RunRecord("r1", "react", "h", "alice", None))
        await runtime.runs(status=RunStatus.AWAITING_APPROVAL)
        await runtime.runs("alice", status=RunStatus.AWAITING_APPROVAL)
    finally:
        await runtime.close()
    assert asked == ["status_runs", "user_status_runs"]

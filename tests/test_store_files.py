"""Every SQLite store watches its file, as the journal does: after the file was deleted or
replaced under an open store, the next write is refused with the store's own "unavailable"
error (nothing goes into the unlinked file, where it would be lost without an error), and
the next use opens the file now at the path.

The budget ledger (a charge lost so would let a run past its cap after a restart), the
server's key store (a key handed out but never kept) and long-term memory."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from loomgraph.governance import SqliteLedger
from loomgraph.governance.ledger import LedgerUnavailable
from loomgraph.memory import SqliteMemory
from loomgraph.memory.errors import MemoryUnavailable
from loomgraph.runtime.errors import JournalUnavailable
from loomgraph.runtime.sqlite import SqliteRuntime
from loomgraph.serve.sql_store import SqliteStore


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{path}{suffix}")


async def _ledger_write(store: Any, n: int) -> None:
    await store.run_clock(f"r{n}", 1000.0 + n, None)


async def _ledger_read(store: Any) -> list[str]:
    return [
        run
        for run in ("r0", "r1", "r2", "r9")  # (one that is not there is recorded at 0.0)
        if (await store.run_clock(run, 0.0, None))[0] != 0.0
    ]


async def _key_write(store: Any, n: int) -> None:
    await store.add_key(f"user{n}")


async def _key_read(store: Any) -> list[str]:
    return sorted(k.user_id for k in await store.keys())


async def _memory_write(store: Any, n: int) -> None:
    await store.set_block(f"user{n}", "notes", f"note {n}")


async def _memory_read(store: Any) -> list[str]:
    return [u for u in ("user0", "user1", "user2", "user9") if await store.get_blocks(u)]


Write = Callable[[Any, int], Awaitable[None]]
STORES: dict[str, tuple[Callable[[str], Any], Write, type[Exception]]] = {
    "ledger": (SqliteLedger, _ledger_write, LedgerUnavailable),
    "key store": (SqliteStore, _key_write, JournalUnavailable),
    "memory": (SqliteMemory, _memory_write, MemoryUnavailable),
}


@pytest.mark.parametrize("how", ["delete", "replace"])
@pytest.mark.parametrize("kind", list(STORES))
async def test_a_write_after_the_stores_file_was_deleted_or_replaced_is_refused(
    tmp_path: Path, kind: str, how: str
) -> None:
    make, write, unavailable = STORES[kind]
    path, other = tmp_path / "store.db", tmp_path / "other.db"
    first = make(str(other))
    try:
        await write(first, 9)  # the other file holds a write of its own
    finally:
        await first.close()
    store = make(str(path))
    try:
        await write(store, 0)
        _remove(path)
        if how == "replace":
            shutil.copy(other, path)
        with pytest.raises(unavailable, match="no longer the file") as caught:
            await write(store, 1)
        assert "no longer the file" in str(caught.value)
        if how == "replace":  # the next use opens the file now at the path
            await write(store, 2)
    finally:
        await store.close()
    if how == "delete":
        assert not path.exists()  # nothing was written anywhere
        return
    reopened = make(str(path))
    try:
        read = {"ledger": _ledger_read, "key store": _key_read, "memory": _memory_read}[kind]
        seen = await read(reopened)
    finally:
        await reopened.close()
    # The replacing file holds its own write and the one after the refusal, never write 1.
    assert seen == (["r2", "r9"] if kind == "ledger" else ["user2", "user9"])


async def test_a_journal_the_server_cannot_reach_is_503_with_retry_after(tmp_path: Path) -> None:
    """The server answers a journal it cannot use now (here: another process holds its write
    lock past the busy timeout) as 503 `unavailable` with `Retry-After`: the request may go
    through later; it is not the server's own fault (500)."""
    import sqlite3

    import httpx

    from loomgraph import Agent
    from loomgraph.models import ScriptedModel
    from loomgraph.serve import create_app

    path = tmp_path / "journal.db"
    agent = Agent(
        "x", model=ScriptedModel(["hello"]), runtime=SqliteRuntime(path, busy_timeout=0.2)
    )
    app = create_app(agent)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        key = await app.state.service.store.add_key("alice")
        auth = {"Authorization": f"Bearer {key}"}
        assert (
            await client.post("/v1/runs", json={"input": "hi"}, headers=auth)
        ).status_code == 201
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the write lock, past the busy timeout
        try:
            made = await client.post("/v1/runs", json={"input": "hi"}, headers=auth)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert made.status_code == 503, made.text
        assert made.json()["error"]["type"] == "unavailable"
        assert made.headers["retry-after"] == "1"
        listed = (await client.get("/v1/runs", headers=auth)).json()["runs"]
        assert len(listed) == 1  # what was stored before is all there
    await agent.aclose()


async def _runtime_write(store: Any, n: int) -> None:
    from loomgraph.protocols import RunRecord

    await store.start_run(RunRecord(f"r{n}", "g", "h", None, None, created_at=1.0, updated_at=1.0))


async def _runtime_read(store: Any) -> list[str]:
    return sorted(r.run_id for r in await store.runs())


RESTORED: dict[str, tuple[Callable[[str], Any], Write, Callable[[Any], Awaitable[list[str]]]]] = {
    "journal": (SqliteRuntime, _runtime_write, _runtime_read),
    "memory": (SqliteMemory, _memory_write, _memory_read),
    "key store": (SqliteStore, _key_write, _key_read),
}


@pytest.mark.parametrize("kind", list(RESTORED))
async def test_a_file_restored_under_an_open_store_is_used_not_overwritten(
    tmp_path: Path, kind: str
) -> None:
    """An operator restores a backup by replacing the file while a process has it open,
    leaving that process's `-wal` at the path: SQLite would replay it onto the restored file
    (a WAL names no database), undoing the restore. The process lets go of the `-wal` it
    knows as its own, so the next use reads the backup, and closing it writes nothing back."""
    import sqlite3

    make, write, read = RESTORED[kind]
    path, backup = tmp_path / "store.db", tmp_path / "backup.db"
    store = make(str(path))
    try:
        await write(store, 0)
        source, target = sqlite3.connect(path), sqlite3.connect(backup)
        source.backup(target)  # the operator's backup, as another process takes it
        source.close()
        target.close()
        await write(store, 1)  # after the backup: in this process's -wal only
        assert Path(f"{path}-wal").exists()
        os.replace(backup, path)  # restored in place; the -wal at the path is the old one's
        with pytest.raises(Exception, match="no longer the file"):
            await write(store, 2)
        assert await read(store) == await _expected(kind, [0])
    finally:
        await store.close()
    reopened = make(str(path))
    try:
        assert await read(reopened) == await _expected(kind, [0])  # the backup, as it was
    finally:
        await reopened.close()


async def _expected(kind: str, writes: list[int]) -> list[str]:
    prefix = "r" if kind == "journal" else "user"
    return [f"{prefix}{n}" for n in writes]

"""A PostgresAuditLog whose server is cut, hangs or refuses an entry: every wait is bounded,
an outage is `AuditLogUnavailable` (a `ServiceUnavailable`: a run is left to be resumed, not
failed), a payload PostgreSQL cannot store is an `AuditLogError` naming the problem, a
cancelled append ends at once, no message shows the DSN's password, and a run cut off by an
outage loses no entry (what the outage cut off is kept in its journal, written at its resume).

The outages are real: the log reaches the server through a TCP proxy the test starts, then
cuts or hangs; the server itself is never touched."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

import pg
from loomgraph import Agent
from loomgraph.errors import ServiceUnavailable
from loomgraph.models import ScriptedModel
from loomgraph.observability import AuditLogError, AuditLogUnavailable, PostgresAuditLog
from loomgraph.protocols import AuditAction, RunStatus
from loomgraph.runtime import InMemoryRuntime
from loomgraph.runtime.postgres import PostgresRuntime
from loomgraph.runtime.sqlite import SqliteRuntime
from tcp_proxy import TcpProxy

pg_schema = pg.pg_schema

pytestmark = pytest.mark.postgres

KEY = b"k" * 32
PASSWORD = "s3cret-pw"  # trust auth: the server ignores it; no message may show it
FAST: dict[str, Any] = {"connect_timeout": 1.0, "command_timeout": 1.0}
BOUND = 60.0  # seconds; reaching it means something hung


def _target() -> tuple[str, int]:
    return ("127.0.0.1", urlsplit(pg.postgres_dsn()).port or 5432)


def through(port: int) -> str:
    """The test server's DSN, through a proxy on `port`, with a password."""
    url = urlsplit(pg.postgres_dsn())
    user = url.netloc.rpartition("@")[0].partition(":")[0] or "postgres"
    return urlunsplit(url._replace(netloc=f"{user}:{PASSWORD}@127.0.0.1:{port}"))


async def _append(log: PostgresAuditLog, payload: Any = None, **fields: Any) -> Any:
    args: dict[str, Any] = {"run_id": "r", "user_id": None, "actor": "a", **fields}
    return await log.append("t", payload={} if payload is None else payload, **args)


def _check_unavailable(err: BaseException) -> None:
    assert isinstance(err, AuditLogUnavailable)
    assert isinstance(err, ServiceUnavailable)
    assert isinstance(err, AuditLogError)
    assert "unavailable" in str(err)
    assert PASSWORD not in str(err)
    assert PASSWORD not in repr(err.__cause__) and PASSWORD not in repr(err.__context__)


# ---------------------------------------------------------------------------- hang


async def test_an_append_to_a_hung_server_raises_unavailable_within_its_timeouts(
    pg_schema: str,
) -> None:
    with TcpProxy(*_target()) as proxy:
        log = PostgresAuditLog(through(proxy.port), key=KEY, table=f"{pg_schema}.a", **FAST)
        try:
            await _append(log)
            proxy.hang()
            started = time.monotonic()
            for operation in (_append(log), log.head(), log.verify()):
                with pytest.raises(AuditLogUnavailable) as raised:
                    async with asyncio.timeout(BOUND):
                        await operation
                _check_unavailable(raised.value)
            # Each within its limits (a statement, or a connect plus a pool wait), not BOUND.
            assert time.monotonic() - started < 20
        finally:
            async with asyncio.timeout(BOUND):
                await log.close()


async def test_a_cancelled_append_to_a_hung_server_ends_at_once(pg_schema: str) -> None:
    with TcpProxy(*_target()) as proxy:
        # Long limits: only the cancel can end the append in time.
        log = PostgresAuditLog(
            through(proxy.port),
            key=KEY,
            table=f"{pg_schema}.a",
            connect_timeout=120.0,
            command_timeout=120.0,
        )
        try:
            await _append(log)
            proxy.hang()
            task = asyncio.ensure_future(_append(log, {"during": "hang"}))
            done, _ = await asyncio.wait({task}, timeout=1.0)
            assert not done  # blocked on the silent server
            task.cancel()
            started = time.monotonic()
            done, _ = await asyncio.wait({task}, timeout=BOUND)
            assert done and task.cancelled()
            assert time.monotonic() - started < 2.0
        finally:
            async with asyncio.timeout(BOUND):
                await log.close()
        assert (await asyncio.wait_for(_read_head(pg_schema), BOUND)).seq == 1


async def _read_head(schema: str) -> Any:
    async with PostgresAuditLog(pg.postgres_dsn(), key=KEY, table=f"{schema}.a") as log:
        return await log.head()


# ---------------------------------------------------------------------------- cut


async def test_a_cut_server_raises_unavailable_then_appends_go_on(pg_schema: str) -> None:
    table = f"{pg_schema}.a"
    proxy = TcpProxy(*_target())
    port = proxy.port
    log = PostgresAuditLog(through(port), key=KEY, table=table, **FAST)
    try:
        for i in range(3):
            await _append(log, {"i": i})
        proxy.cut()
        for operation in (_append(log, {"i": 99}), log.head(), log.verify(), _all(log)):
            with pytest.raises(AuditLogUnavailable) as raised:
                async with asyncio.timeout(BOUND):
                    await operation
            _check_unavailable(raised.value)
        proxy = TcpProxy(*_target(), listen=port)  # the server is back
        entry = await _append(log, {"i": 3})
        assert entry["seq"] == 4
        result = await log.verify()
        assert (result.ok, result.entries) == (True, 4)
    finally:
        proxy.cut()
        async with asyncio.timeout(BOUND):
            await log.close()


async def _all(log: PostgresAuditLog) -> list[Any]:
    return [entry async for entry in log.entries()]


async def test_a_server_that_refuses_from_the_start_raises_unavailable(pg_schema: str) -> None:
    proxy = TcpProxy(*_target())
    proxy.cut()  # nothing listens on its port any more
    log = PostgresAuditLog(through(proxy.port), key=KEY, table=f"{pg_schema}.a", **FAST)
    with pytest.raises(AuditLogUnavailable) as raised:
        async with asyncio.timeout(BOUND):
            await _append(log)
    _check_unavailable(raised.value)
    assert "ConnectionRefusedError" in str(raised.value)
    await log.close()


def test_timeouts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        PostgresAuditLog("postgresql://unused", key=KEY, command_timeout=0)


# ---------------------------------------------------------------------------- payloads


@pytest.mark.parametrize(
    ("payload", "fields", "words"),
    [
        ({"x": "a\x00b"}, {}, "payload['x'] contains a NUL"),
        ({"x": [1, {"y": "\x00"}]}, {}, "payload['x'][1]['y'] contains a NUL"),
        ({"k\x00": 1}, {}, "a key in payload contains a NUL"),
        ({}, {"run_id": "r\x00"}, "run_id contains a NUL"),
        ({}, {"actor": "\x00"}, "actor contains a NUL"),
        ({"x": float("nan")}, {}, "payload['x'] is nan"),
        ({"x": [float("inf")]}, {}, "payload['x'][0] is inf"),
    ],
)
async def test_an_entry_postgres_cannot_store_is_refused_with_the_reason(
    pg_schema: str, payload: dict[str, Any], fields: dict[str, Any], words: str
) -> None:
    async with PostgresAuditLog(pg.postgres_dsn(), key=KEY, table=f"{pg_schema}.a") as log:
        await _append(log)
        with pytest.raises(AuditLogError) as raised:
            await _append(log, payload, **fields)
        assert not isinstance(raised.value, ServiceUnavailable)
        assert words in str(raised.value)
        assert "PostgreSQL cannot store" in str(raised.value)
        entry = await _append(log, {"after": True})
        assert entry["seq"] == 2  # nothing was written; the chain goes on
        assert (await log.verify()).ok


async def test_lone_surrogates_and_mixed_keys_are_stored(pg_schema: str) -> None:
    async with PostgresAuditLog(pg.postgres_dsn(), key=KEY, table=f"{pg_schema}.a") as log:
        entry = await _append(log, {1: "\ud800", "b": 2}, run_id="r\udc80")
        assert entry["payload"] == {"1": "\\ud800", "b": 2}
        assert entry["run_id"] == "r\\udc80"
        assert (await log.verify()).ok


async def test_a_driver_error_is_an_audit_log_error(pg_schema: str) -> None:
    async with PostgresAuditLog(pg.postgres_dsn(), key=KEY, table=f"{pg_schema}.a") as log:
        await _append(log)
        import asyncpg  # type: ignore[import-untyped]

        conn = await asyncpg.connect(pg.postgres_dsn())
        try:
            await conn.execute(f'DROP TABLE "{pg_schema}"."a"')
        finally:
            await conn.close()
        with pytest.raises(AuditLogError, match="UndefinedTableError") as raised:
            await _append(log)
        assert not isinstance(raised.value, ServiceUnavailable)


# ---------------------------------------------------------------------------- a run

# The run of these tests, left alone: one tool call, then the answer.
SCRIPT: list[Any] = [{"tool_calls": [{"tool": "lookup", "args": {"city": "Paris"}}]}, "In France"]


async def _reference(schema: str) -> list[tuple[str, tuple[str, ...]]]:
    """The trail (actions and payload keys) of the run left alone."""

    def lookup(city: str) -> str:
        """Look a city up."""
        return "France"

    async with PostgresAuditLog(pg.postgres_dsn(), key=KEY, table=f"{schema}.ref") as log:
        agent = Agent(
            "geo",
            model=ScriptedModel(list(SCRIPT)),
            tools=[lookup],
            runtime=InMemoryRuntime(),
            audit_log=log,
        )
        try:
            result = await agent.run("where?", user_id="alice")
        finally:
            await agent.aclose()
        assert result.status == RunStatus.COMPLETED
        return _trail([e async for e in log.entries()])


def _trail(entries: list[Any]) -> list[tuple[str, tuple[str, ...]]]:
    return [
        (e["action"], tuple(sorted(e["payload"])))
        for e in entries
        if e["action"] != AuditAction.AUDIT_RESTORED
    ]


async def _check_nothing_missing(
    reference: list[tuple[str, tuple[str, ...]]], audit: PostgresAuditLog, run_id: str
) -> None:
    """The outage cut no entry off for good: every entry of the run left alone is in the
    log in its order (the cut stretch was kept in the journal and written at the resume,
    behind its marker), and none is there twice (but each resume's own `run_started`)."""
    entries = [e async for e in audit.entries(run_id=run_id)]
    found = _trail(entries)
    rest = iter(found)
    assert all(any(item == got for got in rest) for item in reference), (reference, found)
    assert [e["action"] for e in entries].count(AuditAction.AUDIT_RESTORED) == 1
    made = Counter(
        json.dumps([e["action"], e["actor"], e["payload"]], sort_keys=True)
        for e in entries
        if e["action"] not in ("run_started", AuditAction.AUDIT_RESTORED)
    )
    assert [entry for entry, times in made.items() if times > 1] == []


@pytest.mark.parametrize("mode", ["cut", "hang"])
async def test_an_audit_outage_mid_run_leaves_the_run_to_be_resumed(
    pg_schema: str, mode: str
) -> None:
    proxy = TcpProxy(*_target())
    port = proxy.port
    audit = PostgresAuditLog(through(port), key=KEY, table=f"{pg_schema}.audit", **FAST)
    calls: list[str] = []

    async def lookup(city: str) -> str:
        """Look a city up."""
        calls.append(city)
        if len(calls) == 1:
            proxy.cut() if mode == "cut" else proxy.hang()
        return "France"

    runtime = PostgresRuntime(pg.postgres_dsn(), schema=pg_schema)
    agent = Agent(
        "geo", model=ScriptedModel(list(SCRIPT)), tools=[lookup], runtime=runtime, audit_log=audit
    )
    try:
        with pytest.raises(AuditLogUnavailable) as raised:
            async with asyncio.timeout(BOUND):
                await agent.run("where?", user_id="alice")
        _check_unavailable(raised.value)
        [run] = await runtime.runs()
        # Not journaled as failed: the run is where a crash would have left it.
        assert run.status == RunStatus.RUNNING
        proxy.cut()
        proxy = TcpProxy(*_target(), listen=port)  # the audit log is back
        async with asyncio.timeout(BOUND):
            resumed = await agent.resume(run.run_id)
        assert resumed.status == RunStatus.COMPLETED, resumed.reason
        assert (await audit.verify()).ok
        await _check_nothing_missing(await _reference(pg_schema), audit, run.run_id)
        assert await runtime.kept_audit_entries(run.run_id) == []
    finally:
        proxy.cut()
        async with asyncio.timeout(BOUND):
            await agent.aclose()
            await audit.close()
            await runtime.close()


@pytest.mark.parametrize("journal", ["sqlite", "postgres"])
async def test_an_audit_outage_after_the_last_effect_leaves_the_run_to_be_resumed(
    pg_schema: str, journal: str, tmp_path: Any
) -> None:
    """Cut while the last model call answers: its entries are waited for before the run's end
    is journaled, so the run is not `completed` with them missing; it stays `running` and its
    resume ends it, `run_completed` in the log. (A SQLite journal's quick writes reach the
    run's end before the failed append is seen: the case that lost them.)"""
    proxy = TcpProxy(*_target())
    port = proxy.port
    audit = PostgresAuditLog(through(port), key=KEY, table=f"{pg_schema}.audit", **FAST)

    def script(request: Any) -> Any:
        if request.call_index == 0:
            return {"tool_calls": [{"tool": "lookup", "args": {"city": "Paris"}}]}
        proxy.cut()  # the last answer: no effect waits for the log after it
        return "In France"

    def lookup(city: str) -> str:
        """Look a city up."""
        return "France"

    runtime: Any = (
        SqliteRuntime(tmp_path / "journal.db")
        if journal == "sqlite"
        else PostgresRuntime(pg.postgres_dsn(), schema=pg_schema)
    )
    agent = Agent(
        "geo", model=ScriptedModel(script), tools=[lookup], runtime=runtime, audit_log=audit
    )
    try:
        with pytest.raises(AuditLogUnavailable) as raised:
            async with asyncio.timeout(BOUND):
                await agent.run("where?", user_id="alice")
        _check_unavailable(raised.value)
        [run] = await runtime.runs()
        assert run.status == RunStatus.RUNNING  # not `completed` with its last entries lost
        proxy = TcpProxy(*_target(), listen=port)  # the audit log is back
        async with asyncio.timeout(BOUND):
            resumed = await agent.resume(run.run_id)
        assert resumed.status == RunStatus.COMPLETED and resumed.output == "In France"
        assert (await audit.verify()).ok
        actions = [e["action"] async for e in audit.entries(run_id=run.run_id)]
        assert actions[-1] == "run_completed" and actions.count("run_completed") == 1
        await _check_nothing_missing(await _reference(pg_schema), audit, run.run_id)
        assert await runtime.kept_audit_entries(run.run_id) == []
    finally:
        proxy.cut()
        async with asyncio.timeout(BOUND):
            await agent.aclose()
            await audit.close()
            await runtime.close()

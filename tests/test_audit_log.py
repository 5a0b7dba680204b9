"""The hash-chained audit logs: format, verification, tamper detection, concurrency."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pg
from loomgraph.observability import (
    GENESIS_HASH,
    AuditAction,
    AuditHead,
    AuditLogError,
    FileAuditLog,
    NoAuditLog,
    PostgresAuditLog,
    VerifyResult,
)
from loomgraph.observability.audit_chain import dumps, entry_hash
from loomgraph.protocols import AuditLog

pg_schema = pg.pg_schema

KEY = b"audit-secret"


def _fill(log: FileAuditLog, n: int = 8) -> None:
    for i in range(1, n + 1):
        log.append(
            AuditAction.TOOL_REQUEST,
            run_id="run-1" if i % 2 else "run-2",
            user_id="alice",
            actor="agent",
            payload={"i": i, "tool": "search", "args": {"q": f"query {i}"}},
        )


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(lines), encoding="utf-8")


def _rehash_from(lines: list[str], start: int, key: bytes | None) -> list[str]:
    """Recompute every hash from line `start` (1-based) on, as a forger would."""
    out = list(lines)
    prev = GENESIS_HASH if start == 1 else json.loads(out[start - 2])["hash"]
    for index in range(start - 1, len(out)):
        entry = json.loads(out[index])
        entry["prev_hash"] = prev
        entry["hash"] = entry_hash(entry, key)
        prev = entry["hash"]
        out[index] = dumps(entry) + "\n"
    return out


# --------------------------------------------------------------------------- no-op


async def test_no_audit_log_implements_protocol() -> None:
    log = NoAuditLog()
    assert isinstance(log, AuditLog)
    await log.record("run_started", run_id="r", user_id=None, actor="runtime", payload={})


# --------------------------------------------------------------------------- file: format


def test_entry_format_and_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = FileAuditLog(path, key=KEY)
    assert isinstance(log, AuditLog)
    _fill(log, 3)
    lines = _lines(path)
    assert len(lines) == 3
    prev = GENESIS_HASH
    for seq, line in enumerate(lines, start=1):
        entry = json.loads(line)
        assert set(entry) == {
            "seq", "prev_hash", "hash", "time", "run_id", "user_id", "actor", "action", "payload"
        }  # fmt: skip
        assert line == dumps(entry) + "\n"  # one canonical line per entry
        assert entry["seq"] == seq
        assert entry["prev_hash"] == prev
        assert entry["hash"] == entry_hash(entry, KEY)  # HMAC-SHA256 with the key
        assert entry["action"] == "tool_request"
        prev = entry["hash"]
    assert log.head() == AuditHead(3, prev)
    result = log.verify()
    assert (result.ok, result.entries, result.first_bad_seq) == (True, 3, None)
    assert result.head == (3, prev)


def test_non_ascii_and_non_json_payload_values(tmp_path: Path) -> None:
    log = FileAuditLog(tmp_path / "audit.jsonl", key=KEY)
    entry = log.append(
        "approval",
        run_id="r",
        user_id=None,
        actor="user:zoë",
        payload={"note": "ok ✓", "tuple": (1, 2), "obj": Path("/x")},
    )
    assert entry["payload"] == {"note": "ok ✓", "tuple": [1, 2], "obj": "/x"}
    assert "✓" in (tmp_path / "audit.jsonl").read_text(encoding="utf-8")
    assert log.verify().ok


def test_empty_and_missing_log(tmp_path: Path) -> None:
    log = FileAuditLog(tmp_path / "missing.jsonl", key=KEY)
    assert log.head() == (0, GENESIS_HASH)
    result = log.verify()
    assert (result.ok, result.entries) == (True, 0)
    assert list(log.entries()) == []
    assert log.verify(expected_head=(0, GENESIS_HASH)).ok


def test_entries_reader_filters_by_run(tmp_path: Path) -> None:
    log = FileAuditLog(tmp_path / "audit.jsonl", key=KEY)
    _fill(log, 6)
    assert [e["seq"] for e in log.entries()] == [1, 2, 3, 4, 5, 6]
    assert [e["payload"]["i"] for e in log.entries(run_id="run-2")] == [2, 4, 6]


async def test_concurrent_async_records_form_one_chain(tmp_path: Path) -> None:
    log = FileAuditLog(tmp_path / "audit.jsonl", key=KEY)
    await asyncio.gather(
        *(
            log.record("model_call", run_id="r", user_id=None, actor="model", payload={"n": n})
            for n in range(40)
        )
    )
    result = await log.averify()
    assert (result.ok, result.entries) == (True, 40)
    assert sorted(e["payload"]["n"] for e in log.entries()) == list(range(40))


# --------------------------------------------------------------------------- file: tampering


def _tampered(
    tmp_path: Path, change: Callable[[list[str]], list[str]], key: bytes | None = KEY
) -> VerifyResult:
    path = tmp_path / "audit.jsonl"
    log = FileAuditLog(path, key=key) if key else FileAuditLog(path, unsigned=True)
    _fill(log)
    _write(path, change(_lines(path)))
    return log.verify()


def _edit_payload(lines: list[str]) -> list[str]:
    entry = json.loads(lines[4])
    entry["payload"]["args"]["q"] = "something else"
    lines[4] = dumps(entry) + "\n"
    return lines


@pytest.mark.parametrize(
    ("change", "bad_seq", "words"),
    [
        pytest.param(_edit_payload, 5, "hash mismatch", id="edit-payload"),
        pytest.param(
            lambda ls: [*ls[:4], ls[4].replace('"i":5', '"i": 5'), *ls[5:]],
            5,
            "canonical",
            id="edit-whitespace",
        ),
        pytest.param(lambda ls: ls[:4] + ls[5:], 5, "missing", id="delete-line"),
        pytest.param(lambda ls: [*ls[:4], ls[5], ls[4], *ls[6:]], 5, "missing", id="reorder"),
        pytest.param(
            lambda ls: [*ls[:4], ls[3].replace('"seq":4', '"seq":5'), *ls[4:]],
            5,
            "prev_hash",
            id="insert-copied-line",
        ),
        pytest.param(
            lambda ls: [*ls[:4], ls[4].replace('"i":5', '"i":50'), *ls[4:]],
            5,
            "hash mismatch",
            id="insert-forged-line",
        ),
        pytest.param(
            lambda ls: [*ls[:4], '{"seq": 5, "junk": true}\n', *ls[4:]],
            5,
            "malformed",
            id="insert-garbage",
        ),
        pytest.param(lambda ls: [*ls, ls[-1]], 9, "seq 8 found where 9", id="duplicate-last"),
    ],
)
def test_tampering_is_detected(
    tmp_path: Path, change: Callable[[list[str]], list[str]], bad_seq: int, words: str
) -> None:
    result = _tampered(tmp_path, change)
    assert not result.ok
    assert result.first_bad_seq == bad_seq
    assert words in result.problem
    assert result.entries == bad_seq - 1


def test_well_chained_forgery_without_key_breaks_at_next_entry(tmp_path: Path) -> None:
    def insert(lines: list[str]) -> list[str]:
        prev = json.loads(lines[3])
        forged = {**json.loads(lines[4]), "seq": 5, "prev_hash": prev["hash"], "payload": {}}
        forged["hash"] = entry_hash(forged, None)
        return [*lines[:4], dumps(forged) + "\n", *lines[4:]]

    # Unsigned, anyone can compute a valid-looking entry; the real entry 5 no longer links.
    result = _tampered(tmp_path, insert, key=None)
    assert (result.ok, result.first_bad_seq) == (False, 6)


def test_well_chained_forgery_with_key_is_caught_at_the_forgery(tmp_path: Path) -> None:
    def insert(lines: list[str]) -> list[str]:
        prev = json.loads(lines[3])
        forged = {**json.loads(lines[4]), "seq": 5, "prev_hash": prev["hash"], "payload": {}}
        forged["hash"] = entry_hash(forged, None)  # the forger lacks the key
        return [*lines[:4], dumps(forged) + "\n", *lines[4:]]

    result = _tampered(tmp_path, insert, key=KEY)
    assert (result.ok, result.first_bad_seq) == (False, 5)
    assert "hash mismatch" in result.problem


def test_keyed_chain_rejects_a_rewrite_without_the_key(tmp_path: Path) -> None:
    def rewrite(lines: list[str]) -> list[str]:
        entry = json.loads(lines[2])
        entry["payload"] = {"i": 3, "tool": "harmless"}
        lines[2] = dumps(entry) + "\n"
        return _rehash_from(lines, 3, None)  # a consistent SHA-256 chain from entry 3 on

    result = _tampered(tmp_path, rewrite, key=KEY)
    assert (result.ok, result.first_bad_seq) == (False, 3)
    # The same rewrite of an unkeyed log passes on its own: only a recorded head catches it.
    path = tmp_path / "plain.jsonl"
    plain = FileAuditLog(path, unsigned=True)
    _fill(plain)
    head = plain.head()
    _write(path, rewrite(_lines(path)))
    assert plain.verify().ok
    result = plain.verify(expected_head=head)
    assert (result.ok, result.first_bad_seq) == (False, 8)
    assert "rewritten" in result.problem


def test_wrong_or_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _fill(FileAuditLog(path, key=KEY), 3)
    assert FileAuditLog(path, key=KEY).verify().ok
    for other in (FileAuditLog(path, key=b"wrong"), FileAuditLog(path, unsigned=True)):
        result = other.verify()
        assert (result.ok, result.first_bad_seq) == (False, 1)
        # Appending with the wrong key would make the log unverifiable: refused.
        with pytest.raises(AuditLogError, match="does not verify"):
            other.append("approval", run_id="r", user_id=None, actor="x", payload={})
    assert FileAuditLog(path, key=KEY).verify().entries == 3


def test_truncated_tail_is_detected_against_recorded_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = FileAuditLog(path, key=KEY)
    _fill(log)
    head = log.head()
    assert head.seq == 8
    _write(path, _lines(path)[:5])
    assert log.verify().ok  # a clean prefix is a valid chain on its own
    result = log.verify(expected_head=head)
    assert (result.ok, result.entries, result.first_bad_seq) == (False, 5, 6)
    assert "truncated" in result.problem
    # A head from earlier than the current end is fine: entries were appended since.
    assert log.verify(expected_head=(3, json.loads(_lines(path)[2])["hash"])).ok


def _tear(path: Path) -> bytes:
    """Leave the first bytes of an entry 9 at the end, as a crash mid-append would."""
    torn = (dumps({"seq": 9, "some": "entry"}) + "\n")[:12].encode()
    with path.open("ab") as f:
        f.write(torn)
    return torn


def _quarantined(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".quarantine-*"))


def test_torn_last_line_is_quarantined_on_open_and_appends_go_on(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = FileAuditLog(path, key=KEY)
    _fill(log)
    before = _lines(path)  # every acknowledged entry
    torn = _tear(path)
    result = log.verify()  # a reader that has not healed the log still reports it
    assert (result.ok, result.entries, result.first_bad_seq) == (False, 8, 9)
    assert "torn" in result.problem
    assert log.head().seq == 8
    with pytest.raises(AuditLogError, match="torn"):
        list(log.entries())
    reopened = FileAuditLog(path, key=KEY)  # the next run opens the log: healed
    [moved] = _quarantined(path)
    assert moved.read_bytes() == torn
    assert _lines(path)[:8] == before
    entry = list(reopened.entries())[-1]
    assert (entry["seq"], entry["action"]) == (9, AuditAction.AUDIT_QUARANTINED)
    assert entry["payload"]["file"] == moved.name
    assert entry["payload"]["bytes"] == len(torn)
    reopened.append("approval", run_id="r", user_id=None, actor="x", payload={})
    result = reopened.verify()
    assert (result.ok, result.entries) == (True, 10), result.problem
    assert reopened.repair() == b""


def test_torn_line_written_by_another_process_is_healed_by_append(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = FileAuditLog(path, key=KEY)  # opened before the crash
    _fill(log, 3)
    torn = _tear(path)
    stored = log.append("approval", run_id="r", user_id=None, actor="x", payload={})
    assert stored["seq"] == 5  # 4 is the quarantine entry
    assert [p.read_bytes() for p in _quarantined(path)] == [torn]
    assert [e["action"] for e in log.entries()][3:] == ["audit_quarantined", "approval"]
    assert log.verify().ok


def test_torn_line_that_parses_is_still_torn(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = FileAuditLog(path, key=KEY)
    _fill(log, 2)
    lines = _lines(path)
    lines[-1] = lines[-1].rstrip("\n")  # complete JSON, but the newline never made it
    _write(path, lines)
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 2)
    assert "torn" in result.problem


# --------------------------------------------------------------------------- file: processes

WRITERS = 4
APPENDS_PER_WRITER = 1000
# Writers fsync outside the append lock (group commit): 4 writers need far fewer than 4000
# serial fsyncs, which is what kept this at 250 before.

_WRITER = """
import sys
from loomgraph.observability import FileAuditLog

log = FileAuditLog(sys.argv[1], key_env="LOOM_TEST_AUDIT_KEY")
name, count = sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
if sys.stdin.readline().strip() != "go":
    sys.exit(2)
for i in range(count):
    log.append("tool_request", run_id=name, user_id=None, actor=name, payload={"i": i})
"""


def test_processes_append_to_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    names = [f"writer-{n}" for n in range(WRITERS)]
    env = {**os.environ, "LOOM_TEST_AUDIT_KEY": KEY.decode()}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), name, str(APPENDS_PER_WRITER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in names
    ]
    try:
        # Both are started and waiting, so the appends genuinely overlap once released.
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.wait(timeout=600) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
    log = FileAuditLog(path, key=KEY)
    result = log.verify()
    assert (result.ok, result.entries) == (True, WRITERS * APPENDS_PER_WRITER), result.problem
    assert [e["seq"] for e in log.entries()] == list(range(1, WRITERS * APPENDS_PER_WRITER + 1))
    for name in names:
        assert [e["payload"]["i"] for e in log.entries(run_id=name)] == list(
            range(APPENDS_PER_WRITER)
        )


# --------------------------------------------------------------------------- postgres


async def _pg_exec(sql: str, *args: Any) -> None:
    import asyncpg

    conn = await asyncpg.connect(pg.postgres_dsn())
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def _pg_fill(log: PostgresAuditLog, n: int = 8) -> None:
    for i in range(1, n + 1):
        await log.record(
            "tool_result",
            run_id="run-1" if i % 2 else "run-2",
            user_id=None,
            actor="tool:search",
            payload={"i": i, "ok": True, "score": i / 3},
        )


async def test_postgres_append_verify_and_read(pg_schema: str) -> None:
    async with PostgresAuditLog(pg.postgres_dsn(), key=KEY, table=f"{pg_schema}.audit") as log:
        assert isinstance(log, AuditLog)
        with pytest.raises(AuditLogError, match="missing table"):
            await log.head()  # never written: no table, and reading creates none
        await _pg_fill(log)
        head = await log.head()
        assert head.seq == 8
        result = await log.verify(expected_head=head)
        assert (result.ok, result.entries, result.head) == (True, 8, head)
        assert [e["payload"]["i"] async for e in log.entries(run_id="run-2")] == [2, 4, 6, 8]
        entries = [e async for e in log.entries()]
        assert entries[0]["prev_hash"] == GENESIS_HASH
        assert entries[-1]["hash"] == head.hash


BATCH = [("tool_request", "tools", {"n": 1}), ("tool_result", "tools", {"n": 2})]


def test_a_file_batch_is_chained_in_order_with_one_write(tmp_path: Path) -> None:
    log = FileAuditLog(tmp_path / "audit.jsonl", key=KEY)
    log.append("run_started", run_id="r", user_id="u", actor="agent", payload={})
    made = log.append_many([*BATCH, ("transition", "model", {"n": 3})], run_id="r", user_id="u")
    assert [e["seq"] for e in made] == [2, 3, 4]
    assert [e["payload"].get("n") for e in log.entries()] == [None, 1, 2, 3]
    assert log.verify().ok


async def test_a_postgres_batch_is_one_transaction_in_order(pg_schema: str) -> None:
    async with PostgresAuditLog(pg.postgres_dsn(), key=KEY, table=f"{pg_schema}.audit") as log:
        await log.record_many(BATCH, run_id="r", user_id="u")
        assert [e["action"] async for e in log.entries()] == ["tool_request", "tool_result"]
        # One entry it cannot store refuses the whole batch: nothing of it is written.
        with pytest.raises(AuditLogError, match="cannot store"):
            await log.record_many([*BATCH, ("x", "y", {"bad": "nul\x00"})], run_id="r", user_id="u")
        assert (await log.head()).seq == 2
        assert (await log.verify()).ok


async def test_postgres_concurrent_writers_keep_one_chain(pg_schema: str) -> None:
    table = f"{pg_schema}.audit"
    # Two logs with their own pools behave like two processes: separate connections, and
    # both race to create the table.
    logs = [PostgresAuditLog(pg.postgres_dsn(), key=KEY, table=table) for _ in range(2)]
    try:
        await asyncio.gather(
            *(
                log.record("model_call", run_id=f"w{w}", user_id=None, actor="m", payload={"n": n})
                for n in range(50)
                for w, log in enumerate(logs)
            )
        )
        result = await logs[0].verify()
        assert (result.ok, result.entries) == (True, 100), result.problem
    finally:
        for log in logs:
            await log.close()


@pytest.mark.parametrize(
    ("sql", "bad_seq", "words"),
    [
        pytest.param(
            "UPDATE {t} SET line = replace(line, '\"i\":5', '\"i\":55') WHERE seq = 5",
            5,
            "hash mismatch",
            id="edit-line",
        ),
        pytest.param(
            "UPDATE {t} SET payload = jsonb_set(payload, '{{i}}', '55') WHERE seq = 5",
            5,
            "column 'payload'",
            id="edit-payload-column",
        ),
        pytest.param(
            "UPDATE {t} SET actor = 'someone' WHERE seq = 5", 5, "column 'actor'", id="edit-actor"
        ),
        pytest.param("DELETE FROM {t} WHERE seq = 5", 5, "missing", id="delete-row"),
        pytest.param(
            "UPDATE {t} SET seq = -5 WHERE seq = 5; UPDATE {t} SET seq = 5 WHERE seq = 6;"
            " UPDATE {t} SET seq = 6 WHERE seq = -5",
            5,
            "missing",
            id="reorder",
        ),
        pytest.param(
            "INSERT INTO {t} SELECT 9, time, run_id, user_id, actor, action, payload,"
            " prev_hash, hash, line FROM {t} WHERE seq = 8",
            9,
            "seq 8 found where 9",
            id="insert-copy",
        ),
    ],
)
async def test_postgres_tampering_is_detected(
    pg_schema: str, sql: str, bad_seq: int, words: str
) -> None:
    async with PostgresAuditLog(pg.postgres_dsn(), key=KEY, table=f"{pg_schema}.audit") as log:
        await _pg_fill(log)
        await _pg_exec(sql.format(t=log.table))
        result = await log.verify()
        assert (result.ok, result.first_bad_seq) == (False, bad_seq), result.problem
        assert words in result.problem


async def test_postgres_truncation_and_wrong_key(pg_schema: str) -> None:
    table = f"{pg_schema}.audit"
    async with PostgresAuditLog(pg.postgres_dsn(), key=KEY, table=table) as log:
        await _pg_fill(log)
        head = await log.head()
        await _pg_exec(f"DELETE FROM {log.table} WHERE seq > 5")
        assert (await log.verify()).ok
        result = await log.verify(expected_head=head)
        assert (result.ok, result.first_bad_seq) == (False, 6)
        assert "truncated" in result.problem
    async with PostgresAuditLog(pg.postgres_dsn(), key=b"wrong", table=table) as other:
        result = await other.verify()
        assert (result.ok, result.first_bad_seq) == (False, 1)


async def test_postgres_rewrite_without_the_key_is_detected(pg_schema: str) -> None:
    """Rows from seq 3 on are rewritten with a consistent plain SHA-256 chain, every column
    kept in step with the line, as someone with write access but no key would."""
    import asyncpg

    async with PostgresAuditLog(pg.postgres_dsn(), key=KEY, table=f"{pg_schema}.audit") as log:
        await _pg_fill(log)
        conn = await asyncpg.connect(pg.postgres_dsn())
        try:
            rows = await conn.fetch(f"SELECT seq, line FROM {log.table} ORDER BY seq")
            prev = json.loads(rows[1]["line"])["hash"]
            for row in rows[2:]:
                entry = json.loads(row["line"])
                if entry["seq"] == 3:
                    entry["payload"] = {"i": 3, "ok": False, "score": 0}
                entry["prev_hash"] = prev
                entry.pop("hash")
                entry["hash"] = entry_hash(entry, None)
                prev = entry["hash"]
                await conn.execute(
                    f"UPDATE {log.table} SET line = $1, hash = $2, prev_hash = $3,"
                    " payload = $4::jsonb WHERE seq = $5",
                    dumps(entry),
                    entry["hash"],
                    entry["prev_hash"],
                    dumps(entry["payload"]),
                    entry["seq"],
                )
        finally:
            await conn.close()
        result = await log.verify()
        assert (result.ok, result.first_bad_seq, result.entries) == (False, 3, 2)
        assert "hash mismatch" in result.problem


async def test_postgres_forged_row_inserted_in_the_middle_is_detected(pg_schema: str) -> None:
    import asyncpg

    async with PostgresAuditLog(pg.postgres_dsn(), key=KEY, table=f"{pg_schema}.audit") as log:
        await _pg_fill(log)
        conn = await asyncpg.connect(pg.postgres_dsn())
        try:
            t = log.table
            prev = json.loads(await conn.fetchval(f"SELECT line FROM {t} WHERE seq = 4"))
            forged = {**prev, "seq": 5, "prev_hash": prev["hash"], "payload": {"i": 99}}
            forged.pop("hash")
            forged["hash"] = entry_hash(forged, None)  # the forger lacks the key
            await conn.execute(f"UPDATE {t} SET seq = -seq WHERE seq >= 5")
            await conn.execute(f"UPDATE {t} SET seq = 1 - seq WHERE seq < 0")
            await conn.execute(
                f"INSERT INTO {t} SELECT 5, time, run_id, user_id, actor, action, $1::jsonb,"
                f" $2, $3, $4 FROM {t} WHERE seq = 4",
                dumps(forged["payload"]),
                forged["prev_hash"],
                forged["hash"],
                dumps(forged),
            )
        finally:
            await conn.close()
        result = await log.verify()
        assert (result.ok, result.first_bad_seq) == (False, 5), result.problem
        assert "hash mismatch" in result.problem


_PG_WRITER = """
import asyncio, sys
from loomgraph.observability import PostgresAuditLog

async def main():
    dsn, table, name, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    async with PostgresAuditLog(dsn, key_env="LOOM_TEST_AUDIT_KEY", table=table) as log:
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            sys.exit(2)
        for i in range(count):
            await log.append("tool_request", run_id=name, user_id=None, actor=name,
                             payload={"i": i})

asyncio.run(main())
"""


async def test_postgres_processes_append_to_one_chain(pg_schema: str) -> None:
    table = f"{pg_schema}.audit"
    names = [f"writer-{n}" for n in range(WRITERS)]
    env = {**os.environ, "LOOM_TEST_AUDIT_KEY": KEY.decode()}
    async with PostgresAuditLog(pg.postgres_dsn(), key=KEY, table=table):
        pass  # the table exists before the writers race
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _PG_WRITER,
                pg.postgres_dsn(),
                table,
                name,
                str(APPENDS_PER_WRITER),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in names
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            assert await asyncio.to_thread(proc.wait, 600) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
    total = WRITERS * APPENDS_PER_WRITER
    async with PostgresAuditLog(pg.postgres_dsn(), key=KEY, table=table) as log:
        result = await log.verify()
        assert (result.ok, result.entries) == (True, total), result.problem
        assert [e["seq"] async for e in log.entries()] == list(range(1, total + 1))
        for name in names:
            assert [e["payload"]["i"] async for e in log.entries(run_id=name)] == list(
                range(APPENDS_PER_WRITER)
            )


def test_postgres_rejects_bad_table_names() -> None:
    with pytest.raises(ValueError, match="invalid table name"):
        PostgresAuditLog("postgresql://unused", table="audit; DROP TABLE x")


_KILLED_WRITER = """
import sys
from loomgraph.observability import FileAuditLog

log = FileAuditLog(sys.argv[1], key=b"audit-secret")
big = "x" * 200_000  # long lines: a kill often lands in the middle of a write
while True:
    entry = log.append("tool_result", run_id="r", user_id=None, actor="t", payload={"b": big})
    print(entry["seq"], flush=True)  # acknowledged: record() would have returned
"""


def test_every_acknowledged_append_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        acked = [int(proc.stdout.readline()) for _ in range(20)]
    finally:
        proc.kill()
        proc.wait(timeout=60)
        if proc.stdout is not None:
            proc.stdout.close()
    log = FileAuditLog(path, key=KEY)  # heals a torn tail if the kill left one
    log.append("crash_recovered", run_id="r", user_id=None, actor="runtime", payload={})
    result = log.verify()
    assert result.ok, result.problem
    seqs = {e["seq"]: e["action"] for e in log.entries()}
    assert all(seqs[s] == "tool_result" for s in acked)

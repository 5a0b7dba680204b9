"""Audit log and telemetry findings, each a defect once found and now a regression test.

Payloads and lines the audit chain once choked on: every one is now either stored (keys
made strings, lone surrogates escaped) or refused with a typed `AuditLogError`, and a line
nested past the parser's stack is a malformed entry, not a crash.

The Postgres log: an untouched entry with a large float (1e23, which jsonb keeps as the
exact decimal) verifies, while an edited query column is still caught, types included; a
role granted INSERT and SELECT only (the documented hardening) appends and verifies, since
the table is created only by an append that finds it missing; reading a table that does not
exist raises `AuditLogError` naming it and creates nothing; two spellings of one table
(found on the search_path, and schema-qualified) share one append lock.

Keys and heads: a key variable holding raw (non-UTF-8) bytes is those bytes as a key; a
`--head` that is not exactly SEQ:HEX64 in ASCII is a usage error (exit 2).

Content: a span's `set_attributes`, `add_event` and `record_exception` drop content
without capture (and `set_attributes` feeds the usage metrics); an approval handler's
answer that cannot be used is named by its type and shape, never its values, so the
arguments it carried stay out of the `approval` and `permission_decision` entries, and
`Approval.problem()` names types only.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import pg
from loomgraph import Agent
from loomgraph.cli.main import main
from loomgraph.engine.effects import Approval
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.observability import (
    AuditConfigError,
    AuditHead,
    AuditLogError,
    FileAuditLog,
    OTelTelemetry,
    PostgresAuditLog,
)
from loomgraph.observability.audit_chain import dumps, entry_hash, normalize_payload

pg_schema = pg.pg_schema

KEY = b"k" * 32


def _log(tmp_path: Path) -> FileAuditLog:
    return FileAuditLog(tmp_path / "audit.jsonl", key=KEY)


def _append(log: FileAuditLog, payload: Any, action: str = "t", **fields: Any) -> Any:
    args: dict[str, Any] = {"run_id": "r", "user_id": None, "actor": "a", **fields}
    return log.append(action, payload=payload, **args)


# ------------------------------------------------------------------------- payload keys


def test_mixed_key_types_become_strings(tmp_path: Path) -> None:
    log = _log(tmp_path)
    entry = _append(log, {1: "a", "b": 2, None: 3, 2.5: 5, "f": {False: 6}})
    assert entry["payload"] == {"1": "a", "b": 2, "null": 3, "2.5": 5, "f": {"false": 6}}
    assert log.verify().ok


def test_nested_mixed_keys_become_strings(tmp_path: Path) -> None:
    log = _log(tmp_path)
    entry = _append(log, {"outer": [{2: "x", "y": 1}], "t": ({3: 4},)})
    assert entry["payload"] == {"outer": [{"2": "x", "y": 1}], "t": [{"3": 4}]}
    assert log.verify().ok


def test_keys_json_cannot_hold_become_their_str(tmp_path: Path) -> None:
    log = _log(tmp_path)
    entry = _append(log, {(1, 2): "pair"})
    assert entry["payload"] == {"(1, 2)": "pair"}
    assert log.verify().ok


def test_keys_that_collide_once_made_strings_are_refused(tmp_path: Path) -> None:
    log = _log(tmp_path)
    with pytest.raises(AuditLogError, match="'1'"):
        _append(log, {1: "a", "1": "b"})
    assert log.verify().entries == 0  # nothing was written


# ------------------------------------------------------------------------- surrogates


def test_a_lone_surrogate_in_the_payload_is_stored_escaped(tmp_path: Path) -> None:
    log = _log(tmp_path)
    entry = _append(log, {"x": "a\ud800b", "\udc80": 1})
    assert entry["payload"] == {"x": "a\\ud800b", "\\udc80": 1}
    assert log.verify().ok
    assert [e["payload"] for e in log.entries()] == [entry["payload"]]


@pytest.mark.parametrize("field", ["run_id", "user_id", "actor", "action"])
def test_a_lone_surrogate_in_a_field_is_stored_escaped(tmp_path: Path, field: str) -> None:
    log = _log(tmp_path)
    entry = _append(log, {}, **{field: "x\udc80"})
    assert entry[field] == "x\\udc80"
    assert log.verify().ok


def test_a_valid_surrogate_pair_is_kept(tmp_path: Path) -> None:
    log = _log(tmp_path)
    entry = _append(log, {"emoji": "\U0001f600"})
    assert entry["payload"] == {"emoji": "\U0001f600"}


def test_verify_reports_a_line_with_an_escaped_lone_surrogate(tmp_path: Path) -> None:
    # A line written by someone else may carry a `\ud800` escape: a mismatch, not a crash.
    log = _log(tmp_path)
    _append(log, {"x": "ok"})
    path = tmp_path / "audit.jsonl"
    path.write_text(path.read_text().replace('"ok"', '"\\ud800"'))
    result = log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 1)
    assert "hash mismatch" in result.problem


def test_entry_hash_of_a_lone_surrogate_does_not_raise() -> None:
    assert len(entry_hash({"payload": {"x": "\ud800"}}, KEY)) == 64


# ------------------------------------------------------------------------- cycles, depth


def test_a_self_referencing_payload_is_refused(tmp_path: Path) -> None:
    log = _log(tmp_path)
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(AuditLogError, match="refers to itself"):
        _append(log, loop)
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(AuditLogError, match="refers to itself"):
        _append(log, {"items": cyclic})
    assert log.verify().entries == 0


def test_a_shared_but_acyclic_value_is_fine(tmp_path: Path) -> None:
    log = _log(tmp_path)
    shared = {"k": 1}
    entry = _append(log, {"a": shared, "b": [shared, shared]})
    assert entry["payload"] == {"a": {"k": 1}, "b": [{"k": 1}, {"k": 1}]}


def test_a_payload_nested_too_deeply_is_refused(tmp_path: Path) -> None:
    log = _log(tmp_path)
    deep: Any = "x"
    for _ in range(sys.getrecursionlimit() * 2):
        deep = [deep]
    with pytest.raises(AuditLogError, match="nested too deeply"):
        _append(log, {"deep": deep})


def test_normalize_payload_matches_json_for_plain_values() -> None:
    payload = {"b": (1, 2.5, None, True), "a": {"z": "é", "y": [{}]}, "c": object}
    assert normalize_payload(payload) == json.loads(json.dumps(payload, default=str))


# ------------------------------------------------------------------------- deep lines


def _deep_line() -> str:
    depth = 100_000
    return '{"payload":' + "[" * depth + "]" * depth + "}"


def test_verify_reports_a_deeply_nested_line_as_malformed(tmp_path: Path) -> None:
    log = _log(tmp_path)
    for i in range(3):
        _append(log, {"i": i})
    path = tmp_path / "audit.jsonl"
    with path.open("a") as f:
        f.write(_deep_line() + "\n")
    result = log.verify()
    assert (result.ok, result.entries, result.first_bad_seq) == (False, 3, 4)
    assert "malformed entry" in result.problem
    assert "nested too deeply" in result.problem


def test_head_and_entries_refuse_a_deeply_nested_last_line(tmp_path: Path) -> None:
    log = _log(tmp_path)
    _append(log, {})
    path = tmp_path / "audit.jsonl"
    with path.open("a") as f:
        f.write(_deep_line() + "\n")
    with pytest.raises(AuditLogError, match="malformed"):
        log.head()
    with pytest.raises(AuditLogError, match="malformed"):
        list(log.entries())
    with pytest.raises(AuditLogError, match="malformed"):
        _append(log, {})  # never chained onto a line nobody can read


def test_canonical_dumps_unchanged() -> None:
    assert dumps({"b": 1, "a": "é"}) == '{"a":"é","b":1}'


# ------------------------------------------------------------------------- postgres

WAIT = 10.0  # a bound on waiting for an event that comes at once; never reached


async def _pg(sql: str, *args: Any) -> Any:
    import asyncpg

    conn = await asyncpg.connect(pg.postgres_dsn(), timeout=5)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def test_pg_verify_of_an_untouched_large_float_is_ok(pg_schema: str) -> None:
    """jsonb keeps 1e23 as the decimal 100000000000000000000000: the same number, not an
    edit (it once read back as an int unequal to the float: a false tamper alarm)."""
    async with PostgresAuditLog(pg.postgres_dsn(), key=KEY, table=f"{pg_schema}.audit") as log:
        big = {"n": 1e23, "tiny": 5e-324, "max": 1.7976931348623157e308, "neg": -0.0}
        await log.record("tool_request", run_id="r", user_id=None, actor="a", payload=big)
        await log.record("tool_request", run_id="r", user_id=None, actor="a", payload={"n": 2})
        result = await log.verify()
    assert result.ok, result.problem
    assert result.entries == 2


@pytest.mark.parametrize(
    ("edit", "payload"),
    [
        pytest.param('\'{"n": 1e23, "b": 1}\'', {"n": 1e23, "b": True}, id="true-to-1"),
        pytest.param("'{\"n\": 1.00000000000000000001e23}'", {"n": 1e23}, id="near-number"),
        pytest.param('\'{"n": "1e+23"}\'', {"n": 1e23}, id="number-to-text"),
    ],
)
async def test_pg_verify_still_catches_an_edited_payload_column(
    pg_schema: str, edit: str, payload: dict[str, Any]
) -> None:
    """Comparing numbers by value must not blur types or nearby numbers."""
    table = f"{pg_schema}.audit"
    async with PostgresAuditLog(pg.postgres_dsn(), key=KEY, table=table) as log:
        await log.record("tool_request", run_id="r", user_id=None, actor="a", payload=payload)
        assert (await log.verify()).ok
        await _pg(f"UPDATE {table} SET payload = {edit}::jsonb WHERE seq = 1")
        result = await log.verify()
    assert (result.ok, result.first_bad_seq) == (False, 1)
    assert "column 'payload'" in result.problem


async def test_pg_a_role_with_insert_and_select_only_appends_and_verifies(
    pg_schema: str,
) -> None:
    """docs/observability.md's hardening: INSERT and SELECT only on the table. Opening the
    pool once ran CREATE TABLE / CREATE INDEX, which that role may not do."""
    table = f"{pg_schema}.audit"
    async with PostgresAuditLog(pg.postgres_dsn(), key=KEY, table=table) as owner:
        await owner.record("tool_request", run_id="r", user_id=None, actor="a", payload={})
    role = f"audit_{uuid.uuid4().hex[:12]}"
    await _pg(f"CREATE ROLE {role} LOGIN")
    try:
        await _pg(f"GRANT USAGE ON SCHEMA {pg_schema} TO {role}")
        await _pg(f"GRANT INSERT, SELECT ON {table} TO {role}")
        dsn = pg.postgres_dsn().replace("postgres@", f"{role}@", 1)
        async with PostgresAuditLog(dsn, key=KEY, table=table) as app:
            await app.record("tool_request", run_id="r", user_id=None, actor="a", payload={})
            result = await app.verify()
            assert (await app.head()).seq == 2
        assert (result.ok, result.entries) == (True, 2), result.problem
    finally:
        await _pg(f"DROP OWNED BY {role}")
        await _pg(f"DROP ROLE {role}")


async def _tables(schema: str) -> list[str]:
    rows = await _pg(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
    )
    return [row["table_name"] for row in rows]


async def test_pg_reading_a_missing_table_raises_naming_it_and_creates_nothing(
    pg_schema: str,
) -> None:
    """A mistyped table is not an empty log: verify, head and entries raise AuditLogError
    naming it (verify once created the table and said ok with 0 entries)."""
    async with PostgresAuditLog(pg.postgres_dsn(), key=KEY, table=f"{pg_schema}.audti") as log:
        with pytest.raises(AuditLogError, match=r"audti.*does not exist"):
            await log.verify()
        with pytest.raises(AuditLogError, match=r"audti.*does not exist"):
            await log.head()
        with pytest.raises(AuditLogError, match=r"audti.*does not exist"):
            [e async for e in log.entries()]
        assert await _tables(pg_schema) == []
        # The write path creates it when missing.
        await log.record("tool_request", run_id="r", user_id=None, actor="a", payload={})
        assert await _tables(pg_schema) == ["audti"]
        assert (await log.verify()).ok
        # A table this log appended to that then vanishes is not made anew (seq 1 again).
        await _pg(f"DROP TABLE {pg_schema}.audti")
        with pytest.raises(AuditLogError, match=r"audti.*does not exist"):
            await log.record("tool_request", run_id="r", user_id=None, actor="a", payload={})
        assert await _tables(pg_schema) == []


class _PausedAfterHead:
    """A connection whose first `fetchrow` (the head read under the append lock) waits."""

    def __init__(self, conn: Any, paused: asyncio.Event, release: asyncio.Event) -> None:
        self._conn, self._paused, self._release = conn, paused, release

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        row = await self._conn.fetchrow(*args, **kwargs)
        self._paused.set()
        await asyncio.wait_for(self._release.wait(), WAIT)
        return row

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@pytest.mark.parametrize("created_first", [True, False], ids=["table-exists", "table-missing"])
async def test_pg_two_spellings_of_one_table_share_the_append_lock(
    pg_schema: str, created_first: bool
) -> None:
    """`audit` found on the search_path and `schema.audit` are one table and one chain: the
    lock once keyed on the spelling let both read one head (UniqueViolation on insert)."""
    if created_first:
        async with PostgresAuditLog(pg.postgres_dsn(), key=KEY, table=f"{pg_schema}.audit") as o:
            await o.record("run_started", run_id="o", user_id=None, actor="o", payload={})
    bare = PostgresAuditLog(f"{pg.postgres_dsn()}?search_path={pg_schema}", key=KEY, table="audit")
    qualified = PostgresAuditLog(pg.postgres_dsn(), key=KEY, table=f"{pg_schema}.audit")
    async with bare, qualified:
        paused, release = asyncio.Event(), asyncio.Event()
        transaction = bare._transaction

        @asynccontextmanager
        async def held(**options: Any) -> AsyncIterator[Any]:
            async with transaction(**options) as conn:
                yield _PausedAfterHead(conn, paused, release)

        bare._transaction = held  # type: ignore[method-assign]
        first = asyncio.create_task(
            bare.append("tool_request", run_id="a", user_id=None, actor="a", payload={})
        )
        await asyncio.wait_for(paused.wait(), WAIT)  # holds the append lock, head read
        second = asyncio.create_task(
            qualified.append("tool_request", run_id="b", user_id=None, actor="b", payload={})
        )
        await asyncio.wait({second}, timeout=2.0)  # done at once only without a shared lock
        assert not second.done()
        release.set()
        outcomes = await asyncio.gather(first, second, return_exceptions=True)
        assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
        result = await qualified.verify()
    total = 3 if created_first else 2
    assert (result.ok, result.entries) == (True, total), result.problem
    assert await _tables(pg_schema) == ["audit"]


# ------------------------------------------------------------------------- keys and heads


def test_a_key_variable_holding_raw_bytes_is_those_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`export K=$(head -c 32 /dev/urandom)` is a key like a key file of those bytes (a
    bare UnicodeEncodeError once escaped the constructor)."""
    raw = b"\xff\xfe-raw-key-bytes"
    monkeypatch.setitem(os.environb, b"LOOM_TEST_RAW_KEY", raw)
    path = tmp_path / "a.jsonl"
    try:
        log = FileAuditLog(path, key_env="LOOM_TEST_RAW_KEY")
    except AuditConfigError as err:  # the other acceptable outcome: typed, naming it
        assert "LOOM_TEST_RAW_KEY" in str(err)
        return
    log.append("tool_request", run_id="r", user_id=None, actor="a", payload={})
    key_file = tmp_path / "k"
    key_file.write_bytes(raw)
    assert FileAuditLog(path, key_file=key_file).verify().ok
    assert not FileAuditLog(path, key=raw.decode("latin-1")).verify().ok  # the bytes, as is


def test_a_utf8_key_variable_is_its_utf8_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOM_TEST_TEXT_KEY", "clé-secrète")
    path = tmp_path / "a.jsonl"
    FileAuditLog(path, key_env="LOOM_TEST_TEXT_KEY").append(
        "tool_request", run_id="r", user_id=None, actor="a", payload={}
    )
    assert FileAuditLog(path, key="clé-secrète").verify().ok


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda mac: "0x" + mac[2:], id="0x-prefix"),
        pytest.param(lambda mac: mac[:10] + "_" + mac[11:], id="underscore"),
        pytest.param(lambda mac: "+" + mac[1:], id="plus-sign"),
        pytest.param(lambda mac: "-" + mac[1:], id="minus-sign"),
        pytest.param(lambda mac: " " + mac[1:], id="inner-space"),
    ],
)
def test_cli_head_whose_mac_is_not_hex64_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mangle: Any
) -> None:
    """`int(mac, 16)` once let `0x`, `_` and a sign through: a typo reported as tampering
    (exit 1, "rewritten at or before seq 2") instead of a usage error naming the form."""
    path = tmp_path / "a.jsonl"
    log = FileAuditLog(path, key=KEY)
    for i in range(3):
        log.append("tool_request", run_id="r", user_id=None, actor="a", payload={"i": i})
    head = f"2:{mangle(log.head().mac)}"
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    code = main(["audit", "verify", str(path), "--key-file", str(key_file), "--head", head])
    captured = capsys.readouterr()
    assert code == 2, captured.out
    assert "SEQ:HEX64" in captured.err


@pytest.mark.parametrize("seq", ["\u0662", "\u00b2", "+2", "-2", "2 ", "0x2", ""])
def test_a_head_seq_must_be_ascii_digits(seq: str) -> None:
    with pytest.raises(ValueError, match="SEQ:HEX64"):
        AuditHead.parse(f"{seq}:{'a' * 64}")


def test_a_head_in_upper_case_hex_is_read() -> None:
    assert AuditHead.parse(" 12:" + "AB" * 32 + "\n") == AuditHead(12, "ab" * 32)


# ------------------------------------------------------------------------- content

SECRET = "SECRET-ARGS-4e21"


class _Otel:
    def __init__(self, capture_content: bool = False) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        meters = MeterProvider(metric_readers=[self.reader])
        self.telemetry = OTelTelemetry(provider, meters, capture_content=capture_content)

    def token_points(self) -> list[Any]:
        data = self.reader.get_metrics_data()
        return [
            point
            for resource in (data.resource_metrics if data else [])
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == "gen_ai.client.token.usage"
            for point in metric.data.data_points
        ]


def test_span_set_attributes_drops_content_without_capture() -> None:
    """`set_attributes` (plural, the OpenTelemetry span's) once went around the filter."""
    otel = _Otel()
    with otel.telemetry.span("chat m", {}) as span:
        span.set_attributes(  # type: ignore[attr-defined]
            {"gen_ai.input.messages": "SECRET-PROMPT", "gen_ai.tool.call.arguments": SECRET}
        )
    [finished] = otel.exporter.get_finished_spans()
    attributes = dict(finished.attributes or {})
    assert "gen_ai.input.messages" not in attributes
    assert "gen_ai.tool.call.arguments" not in attributes


def test_span_set_attributes_keeps_content_with_capture_and_feeds_usage() -> None:
    otel = _Otel(capture_content=True)
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}
    with otel.telemetry.span("chat m", attrs) as span:
        span.set_attributes(  # type: ignore[attr-defined]
            {"gen_ai.input.messages": [{"role": "user"}], "gen_ai.usage.input_tokens": 7}
        )
    [finished] = otel.exporter.get_finished_spans()
    attributes = dict(finished.attributes or {})
    assert attributes["gen_ai.input.messages"] == '[{"role": "user"}]'  # coerced to JSON
    assert [p.sum for p in otel.token_points()] == [7]  # remembered for the usage metric


def test_span_add_event_and_record_exception_drop_content_without_capture() -> None:
    otel = _Otel()
    with otel.telemetry.span("execute_tool t", {}) as span:
        span.add_event(  # type: ignore[attr-defined]
            "gen_ai.tool.message", {"gen_ai.tool.call.arguments": SECRET, "n": 1}
        )
        span.record_exception(ValueError(SECRET))  # type: ignore[attr-defined]
    [finished] = otel.exporter.get_finished_spans()
    events = {event.name: dict(event.attributes or {}) for event in finished.events}
    assert events["gen_ai.tool.message"] == {"n": 1}
    assert events["exception"] == {"exception.type": "ValueError"}
    assert SECRET not in repr([finished.attributes, finished.events, finished.status])


def test_span_add_event_and_record_exception_keep_content_with_capture() -> None:
    otel = _Otel(capture_content=True)
    with otel.telemetry.span("execute_tool t", {}) as span:
        span.add_event(  # type: ignore[attr-defined]
            "gen_ai.tool.message", {"gen_ai.tool.call.arguments": SECRET}
        )
        span.record_exception(ValueError(SECRET))  # type: ignore[attr-defined]
    [finished] = otel.exporter.get_finished_spans()
    events = {event.name: dict(event.attributes or {}) for event in finished.events}
    assert events["gen_ai.tool.message"] == {"gen_ai.tool.call.arguments": SECRET}
    assert events["exception"]["exception.message"] == SECRET


async def delete(path: str) -> str:
    """Delete a file."""
    return f"deleted {path}"


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda args: args, id="the-arguments"),
        pytest.param(lambda args: [args["path"]], id="a-list"),
        pytest.param(lambda args: {"args": args, "why": "ok"}, id="a-dict-with-more"),
        pytest.param(lambda args: {"args": [args["path"]]}, id="args-not-a-dict"),
        pytest.param(lambda args: Approval("C1", True, [args["path"]]), id="approval-bad-args"),  # type: ignore[arg-type]
        pytest.param(lambda args: Approval("C1", args["path"]), id="approval-bad-allow"),  # type: ignore[arg-type]
        pytest.param(lambda args: Approval("C1", True, {"p": {args["path"]}}), id="not-json"),
    ],
)
async def test_an_unusable_handler_answer_keeps_the_arguments_out_of_the_log(
    tmp_path: Path, answer: Any
) -> None:
    """The `approval` and `permission_decision` entries never contain the arguments; a
    refused answer's reason once quoted the answer (the call's arguments) into both."""
    path = tmp_path / "audit.jsonl"
    audit = FileAuditLog(path, key=KEY)

    def handler(call: Any, decision: Any) -> Any:
        return answer(call["args"])

    turn = {"tool_calls": [{"id": "C1", "tool": "delete", "args": {"path": SECRET}}]}
    agent = Agent(
        "x",
        model=ScriptedModel([turn, "ok"]),
        tools=[delete],
        permissions=StandardPermissions(ask=["delete"]),
        approval_handler=handler,
        audit_log=audit,
    )
    result = await agent.run("go")
    assert result.status == "completed"
    [answered] = [e for e in audit.entries() if e["action"] == "approval"]
    assert answered["payload"]["allow"] is False  # the answer was refused
    assert "approval handler" in answered["payload"]["reason"]
    assert SECRET not in path.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("approval", "named"),
    [
        (Approval(SECRET, True, None, approver=[SECRET]), "Approval.approver .* list"),  # type: ignore[arg-type]
        (Approval("C1", SECRET), "Approval.allow .* str"),  # type: ignore[arg-type]
        (Approval("C1", True, SECRET), "Approval.args .* str"),  # type: ignore[arg-type]
        (Approval("C1", True, {"p": (SECRET,)}), "Approval.args must be plain JSON"),
        (Approval("C1", False, reason=[SECRET]), "Approval.reason .* list"),  # type: ignore[arg-type]
        (Approval(1234, True), "Approval.call_id .* int"),  # type: ignore[arg-type]
    ],
)
def test_approval_problem_names_types_not_values(approval: Approval, named: str) -> None:
    import re

    problem = approval.problem()
    assert problem is not None and re.search(named, problem), problem
    assert SECRET not in problem and "1234" not in problem

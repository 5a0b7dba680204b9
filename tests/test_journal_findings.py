"""Journal findings: text the journal's text columns cannot hold, a SQLite file deleted or
replaced while open, rows whose JSON has the wrong shape."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import journal_kinds
import pg
from loomgraph import Agent
from loomgraph.models import ScriptedModel
from loomgraph.protocols import (
    EffectRecord,
    EffectStatus,
    RunRecord,
    RunStart,
    RunStatus,
    Transition,
    Usage,
)
from loomgraph.runtime.errors import (
    JournalCorrupted,
    JournalIdError,
    JournalUnavailable,
    UnknownRun,
)
from loomgraph.runtime.memory import InMemoryRuntime
from loomgraph.runtime.sqlite import SqliteRuntime

pg_schema = pg.pg_schema
make = journal_kinds.make
Factory = journal_kinds.Factory
opened = journal_kinds.opened


def record(run_id: str = "r1", **kw: Any) -> RunRecord:
    fields: dict[str, Any] = {
        "graph_name": "g",
        "graph_hash": "h",
        "user_id": "u",
        "session_id": "s",
    }
    return RunRecord(run_id=run_id, **{**fields, **kw})


# --------------------------------------------------------------------------- 1: text


BAD_REASON = "open('caf\udcff.txt') failed: bad\x00byte"
STORED_REASON = "open('caf\\udcff.txt') failed: bad\\x00byte"


async def test_a_reason_is_stored_with_surrogates_and_nul_escaped(make: Factory) -> None:
    async with opened(make) as rt:
        await rt.start_run(record(reason=BAD_REASON))
        assert (await rt.load_run("r1")).reason == STORED_REASON
        await rt.finish_run("r1", RunStatus.FAILED, BAD_REASON, None)
        assert (await rt.load_run("r1")).reason == STORED_REASON
        await rt.start_run(record("r2"))
        await rt.finish_run("r2", RunStatus.FAILED, "plain é \\x00 text", None)
        assert (await rt.load_run("r2")).reason == "plain é \\x00 text"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("user_id", "al\x00ice"),
        ("user_id", "al\udcffice"),
        ("session_id", "s\udcff"),
        ("session_id", "s\x00"),
        ("run_id", "r\x00"),
        ("parent_run_id", "p\udcff"),
        ("graph_name", "g\x00"),
        ("run_id", "r" * 513),
        ("user_id", "\U0001f600" * 257),  # 1,028 bytes: two fill an index entry
    ],
)
async def test_an_id_that_cannot_be_stored_is_refused(
    make: Factory, field: str, value: str
) -> None:
    async with opened(make) as rt:
        with pytest.raises(JournalIdError, match=field) as caught:
            await rt.start_run(record(**{field: value}))
        assert isinstance(caught.value, ValueError)
        assert (caught.value.field, caught.value.value) == (field, value)
        assert await rt.runs() == []
        # Nothing can be stored under such an id, so none is found under it.
        assert await rt.runs(user_id="al\x00ice") == []
        assert await rt.runs(user_id="al\udcffice") == []
        assert await rt.load_run("r\x00") is None
        assert await rt.load_run("r\udcff") is None


async def test_node_names_and_effect_keys_that_cannot_be_stored_are_refused(
    make: Factory,
) -> None:
    """The durable journals refuse them; the in-memory one keeps any text, with no cost per
    step (graph validation refuses such node names, and effect keys are made of them)."""
    async with opened(make) as rt:
        await rt.start_run(record())
        if isinstance(rt, InMemoryRuntime):
            await rt.append_transition(Transition("r1", 1, "n\x00", 1, {}, "m", Usage(), 1.0))
            assert [t.node for t in await rt.transitions("r1")] == ["n\x00"]
            return
        with pytest.raises(JournalIdError, match="node"):
            await rt.append_transition(Transition("r1", 1, "n\x00", 1, {}, "m", Usage(), 1.0))
        with pytest.raises(JournalIdError, match="effect key"):
            await rt.begin_effect(EffectRecord("r1", "r1:n:1:\udcff", "tool", {}))
        assert await rt.transitions("r1") == []
        assert await rt.effects("r1") == []


async def test_a_failure_reason_with_a_surrogate_or_nul_is_journaled(make: Factory) -> None:
    async with opened(make) as rt:
        model = ScriptedModel([RuntimeError("bad \udcff name \x00 byte")] * 3)
        agent = Agent("You answer.", model=model, runtime=rt)
        result = await agent.run("Where?")
        assert result.status == RunStatus.FAILED
        kept = await rt.load_run(result.run_id)
        assert kept.status == RunStatus.FAILED
        assert "bad \\udcff name \\x00 byte" in kept.reason


async def test_an_agent_run_with_an_unstorable_user_id_is_refused(make: Factory) -> None:
    async with opened(make) as rt:
        agent = Agent("You answer.", model=ScriptedModel(["hi"]), runtime=rt)
        with pytest.raises(JournalIdError, match="user_id"):
            await agent.run("Where?", user_id="al\x00ice")
        with pytest.raises(JournalIdError, match="session_id"):
            await agent.run("Where?", session_id="s\udcff")
        assert await rt.runs() == []


# --------------------------------------------------------------------------- 2: the file


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{path}{suffix}")


async def _other_journal(path: Path) -> None:
    async with SqliteRuntime(str(path)) as other:
        await other.start_run(record("other"))
        await other.checkpoint()


def transition(seq: int, run_id: str = "r1") -> Transition:
    return Transition(run_id, seq, "n", 1, {"k": seq}, "n", Usage(), 1.0)


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
@pytest.mark.parametrize("how", ["delete", "replace"])
async def test_a_write_after_the_file_was_deleted_or_replaced_is_refused(
    tmp_path: Path, synchronous: Any, how: str
) -> None:
    path, other = tmp_path / "j.db", tmp_path / "other.db"
    await _other_journal(other)
    rt = SqliteRuntime(str(path), synchronous=synchronous)
    try:
        await rt.start_run(record())
        await rt.append_transition(transition(1))  # the inline writer is open too
        _remove(path)
        if how == "replace":
            shutil.copy(other, path)
        with pytest.raises(JournalUnavailable, match="no longer the file"):
            await rt.append_transition(transition(2))
    finally:
        await rt.close()
    if how == "replace":  # the file at the path holds nothing of this journal's
        async with SqliteRuntime(str(path)) as fresh:
            assert [r.run_id for r in await fresh.runs()] == ["other"]
    else:
        assert not path.exists()


@pytest.mark.parametrize("how", ["delete", "replace"])
async def test_a_transaction_after_the_file_was_replaced_is_refused(
    tmp_path: Path, how: str
) -> None:
    path, other = tmp_path / "j.db", tmp_path / "other.db"
    await _other_journal(other)
    async with SqliteRuntime(str(path)) as rt:
        await rt.start_run(record())
        _remove(path)
        if how == "replace":
            shutil.copy(other, path)
        with pytest.raises(JournalUnavailable, match="no longer the file"):
            await rt.acquire_lease("r1", "me")  # a BEGIN IMMEDIATE transaction
        # The next use opens the file now at the path, checked as at any opening.
        if how == "replace":
            assert [r.run_id for r in await rt.runs()] == ["other"]
            with pytest.raises(UnknownRun):
                await rt.append_transition(transition(1))


# --------------------------------------------------------------------------- 3: row shapes


@pytest.mark.parametrize(
    ("column", "update", "read"),
    [
        ("usage", "UPDATE transitions SET usage = '\"x\"'", "transitions"),
        ("patch", "UPDATE transitions SET patch = '[1]'", "transitions"),
        ("snapshot", "UPDATE transitions SET snapshot = '[1]'", "transitions"),
        ("snapshot", "UPDATE transitions SET snapshot = '[1]'", "latest_snapshot"),
        ("intent", "UPDATE effects SET intent = '[1]'", "effects"),
        ("outcome", "UPDATE effects SET outcome = '[1]'", "effects"),
        ("initial", "UPDATE runs SET initial = '[1]'", "load_run"),
        ("initial", "UPDATE runs SET initial = '{\"state\": [1]}'", "load_run"),
        ("result", "UPDATE runs SET result = '[1]'", "load_run"),
    ],
)
async def test_a_row_of_the_wrong_shape_is_corrupted(
    tmp_path: Path, column: str, update: str, read: str
) -> None:
    path = tmp_path / "j.db"
    async with SqliteRuntime(str(path)) as rt:
        await rt.start_run(record(initial=RunStart({"input": "x"})))
        snap = transition(1)
        snap.snapshot = {"k": 1}
        await rt.append_transition(snap)
        await rt.begin_effect(EffectRecord("r1", "r1:n:1:0", "tool", {"a": 1}))
        await rt.end_effect("r1", "r1:n:1:0", {"ok": 1}, EffectStatus.DONE)
        await rt.finish_run("r1", RunStatus.FAILED, "x", {"output": 1})
    with sqlite3.connect(path) as conn:
        conn.execute(update)
    async with SqliteRuntime(str(path)) as rt:
        with pytest.raises(JournalCorrupted, match=rf"unreadable row.*(r1.*{column}|{column}.*r1)"):
            await getattr(rt, read)("r1")

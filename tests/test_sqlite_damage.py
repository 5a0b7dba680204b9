"""Damaged SQLite journals: every case is refused with a typed error naming the file and the
quick_check result, before anything is read or written; a lost `-wal` is detected from the
`-shm` a crash leaves behind, and runs it held are reported as possibly lost.

The crashes are real: a child process commits runs, reports, and is SIGKILLed while it holds
the journal open, leaving its transactions in the `-wal` alone (never checkpointed).
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from loomgraph.protocols import RunRecord
from loomgraph.runtime.errors import (
    JournalCorrupted,
    JournalDamaged,
    RunPossiblyLost,
    UnknownRun,
)
from loomgraph.runtime.sqlite import SqliteRuntime

_CHILD = """
import asyncio, sys
from loomgraph.protocols import RunRecord, Transition, Usage
from loomgraph.runtime.sqlite import SqliteRuntime

async def main(path):
    rt = SqliteRuntime(path)
    for run_id in ("r1", "r2"):
        record = RunRecord(run_id, "g", "h", user_id=None, session_id="s")
        await rt.start_run(record)
        for seq in (1, 2, 3):
            await rt.append_transition(
                Transition(run_id, seq, "model", seq, {"n": seq}, "tools", Usage(), 1.0 + seq)
            )
    print("committed", flush=True)
    sys.stdin.readline()  # hold the journal open until killed

asyncio.run(main(sys.argv[1]))
"""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


async def _crashed_journal(path: Path) -> None:
    """r0 checkpointed into the main file; r1 and r2 committed into the -wal only, then the
    writer is SIGKILLed with the journal open."""
    async with SqliteRuntime(path) as rt:
        await rt.start_run(
            RunRecord(run_id="r0", graph_name="g", graph_hash="h", user_id=None, session_id="s")
        )
        await rt.checkpoint()
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "committed"
        child.send_signal(signal.SIGKILL)
    finally:
        assert child.wait() == -signal.SIGKILL
    assert Path(f"{path}-wal").stat().st_size > 0, "the crash should leave frames in the -wal"
    assert Path(f"{path}-shm").exists()


def _files(path: Path) -> dict[str, str]:
    return {s: _sha(Path(f"{path}{s}")) for s in ("", "-wal", "-shm")}


async def test_crash_with_intact_wal_recovers_everything(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    await _crashed_journal(path)
    async with SqliteRuntime(path) as rt:
        for run_id in ("r0", "r1", "r2"):
            assert await rt.load_run(run_id) is not None
        assert [t.seq for t in await rt.transitions("r2")] == [1, 2, 3]


async def test_crash_with_missing_shm_recovers_everything(tmp_path: Path) -> None:
    # The -shm is an index SQLite rebuilds from the -wal: losing it loses nothing.
    path = tmp_path / "journal.db"
    await _crashed_journal(path)
    Path(f"{path}-shm").unlink()
    async with SqliteRuntime(path) as rt:
        assert await rt.load_run("r2") is not None


@pytest.mark.parametrize("wal", ["missing", "cut", "foreign", "foreign_shm"])
async def test_lost_wal_is_refused_before_anything(tmp_path: Path, wal: str) -> None:
    path = tmp_path / "journal.db"
    await _crashed_journal(path)
    wal_file = Path(f"{path}-wal")
    if wal == "missing":
        wal_file.unlink()
    elif wal == "cut":
        data = wal_file.read_bytes()
        wal_file.write_bytes(data[: len(data) // 2])
    else:  # another crashed database's -wal (or -shm) in place of ours
        other = tmp_path / "other.db"
        await _crashed_journal(other)
        suffix = "-shm" if wal == "foreign_shm" else "-wal"
        shutil.copyfile(f"{other}{suffix}", f"{path}{suffix}")
    before = _files(path)
    for _ in range(2):  # refused again: nothing was rebuilt by the first attempt
        rt = SqliteRuntime(path)
        with pytest.raises(JournalDamaged) as info:
            await rt.load_run("r1")
        await rt.close()
        assert str(path) in str(info.value)
        assert info.value.integrity == "ok"  # the main file alone is intact
        assert "quick_check: ok" in str(info.value)
        assert _files(path) == before
    expected = {"missing": "is missing", "cut": "cut short"}.get(wal, "does not belong")
    assert expected in info.value.detail
    assert isinstance(info.value, JournalCorrupted)


async def test_foreign_wal_is_refused_even_when_damage_is_accepted(tmp_path: Path) -> None:
    path, other = tmp_path / "journal.db", tmp_path / "other.db"
    await _crashed_journal(path)
    await _crashed_journal(other)
    shutil.copyfile(f"{other}-wal", f"{path}-wal")
    before = _files(path)
    with pytest.raises(JournalDamaged, match="move that -wal aside"):
        await SqliteRuntime(path, accept_damage=True).load_run("r0")
    assert _files(path) == before


async def test_accepted_loss_reports_runs_as_possibly_lost(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    await _crashed_journal(path)
    Path(f"{path}-wal").unlink()
    async with SqliteRuntime(path, accept_damage=True) as rt:
        assert await rt.load_run("r0") is not None  # checkpointed before the crash
        with pytest.raises(RunPossiblyLost) as info:
            await rt.load_run("r1")
    assert isinstance(info.value, UnknownRun)
    assert str(path) in str(info.value)
    assert "may have been lost" in str(info.value)
    assert "is missing" in info.value.damage
    # The loss is recorded in the journal: later openings still know it.
    async with SqliteRuntime(path) as rt:
        with pytest.raises(RunPossiblyLost):
            await rt.load_run("r2")
        with pytest.raises(RunPossiblyLost):
            await rt.finish_run("r2", "completed", None, None)  # type: ignore[arg-type]
        with pytest.raises(RunPossiblyLost):  # what a follower of the run reads
            await rt.transitions_after("r2", 3)


async def test_undamaged_journal_still_says_unknown(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    await _crashed_journal(path)
    async with SqliteRuntime(path) as rt:
        assert await rt.load_run("nope") is None
        with pytest.raises(UnknownRun) as info:
            await rt.transitions("nope")
    assert not isinstance(info.value, RunPossiblyLost)


def _flip_page(path: Path) -> None:
    # Page 2 is the root of the first table (b-tree page header at its start): flipped
    # bytes there are structural damage quick_check finds.
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for i in range(page, page + 12):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flipped", "cut_pages", "cut_mid_page", "not_a_database"])
async def test_damaged_main_file_is_refused(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "journal.db"
    async with SqliteRuntime(path) as rt:
        for n in range(40):
            await rt.start_run(
                RunRecord(
                    run_id=f"r{n}",
                    graph_name="g" * 2000,
                    graph_hash="h",
                    user_id=None,
                    session_id="s",
                )
            )
        await rt.checkpoint()
    data = path.read_bytes()
    if damage == "flipped":
        _flip_page(path)
    elif damage == "cut_pages":
        path.write_bytes(data[: len(data) // 2 // 4096 * 4096])
    elif damage == "cut_mid_page":
        path.write_bytes(data[:-100])
    else:
        path.write_text("these are my notes, not a journal\n" * 200)
    before = _sha(path)
    rt = SqliteRuntime(path)
    with pytest.raises(JournalDamaged) as info:
        await rt.load_run("r1")
    await rt.close()
    assert str(path) in str(info.value)
    # A cut inside the last page may spare every page in use: quick_check then says "ok"
    # and the refusal rests on the file size alone.
    assert info.value.integrity not in ("", "" if damage == "cut_mid_page" else "ok")
    assert f"quick_check: {info.value.integrity}" in str(info.value)
    assert _sha(path) == before
    # At most the empty -wal and -shm a read-only SQLite connection creates.
    assert Path(f"{path}-wal").stat().st_size == 0 if Path(f"{path}-wal").exists() else True


async def test_flipped_bytes_after_a_crash_write_nothing(tmp_path: Path) -> None:
    # The check runs on a read-only connection: the -wal a crash left is not checkpointed
    # into the damaged file.
    path = tmp_path / "journal.db"
    await _crashed_journal(path)
    _flip_page(path)
    before = _files(path)
    with pytest.raises(JournalDamaged):
        await SqliteRuntime(path).load_run("r1")
    after = _files(path)
    assert (after[""], after["-wal"]) == (before[""], before["-wal"])


async def test_agent_resume_of_a_lost_run_says_possibly_lost(tmp_path: Path) -> None:
    from loomgraph import Agent
    from loomgraph.models import ScriptedModel

    path = tmp_path / "journal.db"
    await _crashed_journal(path)
    Path(f"{path}-wal").unlink()
    agent = Agent("x", model=ScriptedModel(lambda r: "hi"), runtime=f"sqlite:{path}")
    with pytest.raises(JournalDamaged, match="accept_damage=True"):
        await agent.resume("r1")
    runtime = SqliteRuntime(path, accept_damage=True)
    agent = Agent("x", model=ScriptedModel(lambda r: "hi"), runtime=runtime)
    with pytest.raises(RunPossiblyLost, match=r"journal\.db.*may have been lost"):
        await agent.resume("r1")
    await runtime.close()

"""Durability findings, fixed: leases after a crash and across clock steps, forks of child
checkpoints, a damaged journal read for a resume, a fork or the history.

Checks:
- a lease owner killed and not yet reaped (a zombie) is dead: its lease is taken over at
  once (`owner_is_dead`, and a real worker SIGKILLed mid-tool then resumed);
- `InMemoryRuntime`'s leases expire by the monotonic clock: a wall-clock step neither lets a
  second resume drive a live run nor keeps an ended lease live; `Lease.expires_at` stays in
  epoch seconds;
- `fork(at=seq)` of a child graph's transition is refused (`NotACheckpoint`, naming the
  checkpoints a fork can start from), nothing journaled; a missing seq likewise;
- a transition naming a node the run's graph lacks, a snapshot whose `messages` is not a
  list, a tool effect whose intent holds no tool call: `JournalCorrupted` naming the run and
  the row, before an approval is journaled or a fork started; a structured answer's step (a
  node of no graph) is no damage.

Run as a script (`python tests/test_durable_findings.py worker DIR`) this module is the
worker process of the zombie test: one run on `DIR/journal.db` whose `pay` tool writes a
ledger line (with its idempotency key) and then SIGKILLs its process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from loomgraph import Agent, tool
from loomgraph.agent.checkpoints import NotACheckpoint
from loomgraph.agent.leases import owner_is_dead, process_start
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.protocols import RunStatus
from loomgraph.runtime import SqliteRuntime
from loomgraph.runtime.errors import JournalCorrupted, RunConflict
from loomgraph.runtime.lease_table import LeaseTable

KILL_ENV = "LOOMGRAPH_DURABLE_FINDINGS_KILL"
PAY_TURN: dict[str, Any] = {
    "tool_calls": [{"id": "P", "tool": "pay", "args": {"to": "acme", "amount": 5}}]
}


def _ledger(folder: Path) -> list[str]:
    path = folder / "ledger.txt"
    return path.read_text().splitlines() if path.exists() else []


def _paying_tool(folder: Path) -> Any:
    """`pay`: one fsynced ledger line per execution (outside the journal), then, in the
    worker, a SIGKILL of its own process mid-tool (its outcome is never journaled)."""

    @tool(name="pay")
    def pay(to: str, amount: int, idempotency_key: str = "") -> str:
        """Pay someone."""
        with open(folder / "ledger.txt", "a") as f:
            f.write(f"{idempotency_key}\n")
            f.flush()
            os.fsync(f.fileno())
        if os.environ.get(KILL_ENV):
            sys.stdout.write(json.dumps({"crash": "mid_tool"}) + "\n")
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return f"paid {amount} to {to}"

    return pay


def _worker(folder: Path) -> None:
    """The worker process: start the run, say its id, die inside `pay`."""

    async def main() -> None:
        runtime = SqliteRuntime(str(folder / "journal.db"), lease_seconds=300)
        model = ScriptedModel([PAY_TURN, "done"])
        agent = Agent("x", model=model, tools=[_paying_tool(folder)], runtime=runtime)
        async for event in agent.stream("pay acme"):
            if event.kind == "run_started":
                sys.stdout.write(json.dumps({"run_id": event.run_id}) + "\n")
                sys.stdout.flush()

    asyncio.run(main())


# --------------------------------------------------------------------------- zombies


async def _died_unreaped(proc: subprocess.Popen[Any]) -> None:
    """Wait (bounded) for a child to end, leaving it unreaped, as a busy parent does."""
    waited = asyncio.to_thread(os.waitid, os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    await asyncio.wait_for(waited, 60)


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
async def test_a_killed_process_not_yet_reaped_is_a_dead_owner() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        start = process_start(proc.pid)
        assert start is not None
        host = socket.gethostname()
        owner, older = f"{host}:{proc.pid}:{start}:abcd1234", f"{host}:{proc.pid}:abcd1234"
        assert not owner_is_dead(owner) and not owner_is_dead(older)  # alive
        proc.kill()
        await _died_unreaped(proc)
        assert Path(f"/proc/{proc.pid}/stat").exists()  # still there: a zombie
        assert process_start(proc.pid) is None
        assert owner_is_dead(owner)
        assert owner_is_dead(older)  # an owner named before start times were kept too
    finally:
        proc.kill()
        proc.wait(timeout=60)


async def test_a_worker_killed_mid_tool_and_not_yet_reaped_has_its_lease_taken_over_at_once(
    tmp_path: Path,
) -> None:
    proc = subprocess.Popen(
        [sys.executable, __file__, "worker", str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, KILL_ENV: "1"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("{"), first
        run_id = json.loads(first)["run_id"]
        assert json.loads(proc.stdout.readline()) == {"crash": "mid_tool"}
        await _died_unreaped(proc)
        runtime = SqliteRuntime(str(tmp_path / "journal.db"), lease_seconds=300)
        model = ScriptedModel([PAY_TURN, "done"])
        agent = Agent("x", model=model, tools=[_paying_tool(tmp_path)], runtime=runtime)
        try:
            result = await agent.resume(run_id)
        except RunConflict as err:
            pytest.fail(f"the dead, unreaped worker's lease was not taken over: {err}")
        finally:
            await agent.aclose()
        assert result.status == "completed", result.reason
        key = f"{run_id}:tools:1:1"
        assert _ledger(tmp_path) == [key, key]  # executed again once, with the same key
    finally:
        proc.wait(timeout=60)
        if proc.stdout is not None:
            proc.stdout.close()


# --------------------------------------------------------------------------- clock steps


def test_in_memory_leases_are_measured_by_the_monotonic_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = LeaseTable()
    lease = table.acquire("r", "a", 30.0, None)
    assert abs(lease.expires_at - (time.time() + 30.0)) < 5  # epoch seconds
    real_time, real_monotonic = time.time, time.monotonic
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600.0)  # the wall clock steps
    assert table.live("r")
    with pytest.raises(RunConflict) as caught:
        table.acquire("r", "b", 30.0, None)
    assert (caught.value.owner, caught.value.expires_at) == ("a", lease.expires_at)
    assert table.lease("r") == lease  # as taken: the same on every read
    renewed = table.renew("r", "a", 30.0)  # epoch seconds by the wall clock of its renewal
    assert renewed.token == lease.token and renewed.expires_at > real_time() + 3600
    monkeypatch.setattr(time, "time", lambda: real_time() - 3600.0)  # and steps back
    monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() + 31.0)  # 31 s pass
    assert not table.live("r")  # ended, whatever the wall clock says
    taken = table.acquire("r", "b", 30.0, None)
    assert (taken.owner, taken.token) == ("b", lease.token + 1)


async def test_a_clock_step_does_not_let_a_second_resume_drive_a_live_in_memory_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entered: list[str] = []
    started, twice = asyncio.Event(), asyncio.Event()
    gate = asyncio.Event()

    @tool(name="pay")
    async def pay(to: str, amount: int, idempotency_key: str = "") -> str:
        """Pay someone."""
        entered.append(idempotency_key)
        started.set()
        if len(entered) > 1:
            twice.set()
        await gate.wait()
        return f"paid {amount} to {to}"

    agent = Agent("x", model=ScriptedModel([PAY_TURN, "done", PAY_TURN, "done"]), tools=[pay])
    first = asyncio.create_task(agent.run("pay acme"))
    second: asyncio.Task[Any] | None = None
    try:
        await asyncio.wait_for(started.wait(), 30)
        (record,) = await agent.deps.runtime.runs()
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 3600.0)  # the clock steps 1 h
        second = asyncio.create_task(agent.resume(record.run_id))
        again = asyncio.create_task(twice.wait())
        done, _ = await asyncio.wait({second, again}, timeout=30, return_when="FIRST_COMPLETED")
        again.cancel()
        monkeypatch.undo()
        assert len(entered) == 1, f"the tool ran twice at once: {entered}"
        assert second in done and isinstance(second.exception(), RunConflict)
    finally:
        monkeypatch.undo()
        gate.set()
        for task in (first, second):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        await agent.aclose()
    assert (await first).status == "completed"


# --------------------------------------------------------------------------- forks


async def test_a_fork_at_a_child_graph_transition_is_refused_naming_the_checkpoints(
    tmp_path: Path,
) -> None:
    calls: list[tuple[int, int]] = []

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        calls.append((a, b))
        return a + b

    (tmp_path / "outer.yaml").write_text(
        "name: outer\nentry: work\n"
        "nodes:\n  work: {kind: subgraph, graph: react, inputs: {input: input},"
        " outputs: {output: output}}\n"
        "edges:\n  - {from: work, to: END}\n"
    )
    add_turn = {"tool_calls": [{"tool": "add", "args": {"a": 1, "b": 2}}]}
    agent = Agent(
        "x",
        model=ScriptedModel([add_turn, "3"] * 3),
        tools=[add],
        architecture=tmp_path / "outer.yaml",
        runtime=SqliteRuntime(str(tmp_path / "journal.db")),
    )
    try:
        parent = await agent.run("add 1 and 2")
        assert parent.status == "completed" and calls == [(1, 2)]
        checkpoints = {c.seq: c for c in await agent.history(parent.run_id)}
        assert (checkpoints[2].node, checkpoints[2].next_node) == ("work/tools", "model")
        last = max(checkpoints)
        assert checkpoints[last].node == "work"  # the one top-level transition
        calls.clear()
        with pytest.raises(NotACheckpoint) as caught:
            await agent.fork(parent.run_id, at=2)
        err = caught.value
        assert isinstance(err, ValueError)  # as a missing checkpoint always was
        assert (err.run_id, err.seq, err.checkpoints) == (parent.run_id, 2, (0, last))
        assert f"0, {last}" in str(err) and "'work'" in str(err), str(err)
        with pytest.raises(NotACheckpoint, match=f"has no checkpoint 99.*0, {last}"):
            await agent.fork(parent.run_id, at=99)
        assert calls == []
        assert len(await agent.runs()) == 1  # nothing journaled
        forked = await agent.fork(parent.run_id, at=0)  # a checkpoint of its own graph
        assert forked.status == "completed" and calls == [(1, 2)]
    finally:
        await agent.aclose()


# --------------------------------------------------------------------------- damage


@tool(destructive=True, name="pay")
def _asked_pay(to: str, amount: int) -> str:
    """Pay someone."""
    return f"paid {amount} to {to}"


def _asking_agent(path: Path, **runtime: Any) -> Agent:
    return Agent(
        "x",
        model=ScriptedModel([PAY_TURN, "done"]),
        tools=[_asked_pay],
        runtime=SqliteRuntime(str(path), **runtime),
        permissions=StandardPermissions(ask=["pay"]),
    )


def _edit(path: Path, sql: str) -> None:
    """Change one row of the journal file behind loomgraph's back (as flipped bytes do)."""
    raw = sqlite3.connect(path)
    with raw:
        assert raw.execute(sql).rowcount == 1
    raw.close()


async def _waiting(path: Path, **runtime: Any) -> tuple[str, list[Any]]:
    """A run journaled in `path` waiting for approval of its payment: its id and effects."""
    first = _asking_agent(path, **runtime)
    try:
        waiting = await first.run("pay acme")
        assert waiting.status == "awaiting_approval"
        return waiting.run_id, list(await first.deps.runtime.effects(waiting.run_id))
    finally:
        await first.aclose()


def _flip_model_effect(path: Path, run_id: str, effects: list[Any]) -> str:
    """Journal the run's model call as a tool call (its kind damaged); the model call's key."""
    model_key: str = next(e.key for e in effects if e.kind == "model")
    own = model_key.removeprefix(run_id).lstrip(":")  # kept without the run id
    _edit(path, f"UPDATE effects SET kind = 'tool' WHERE key LIKE '%{own}'")
    return model_key


async def _refused_before_the_approval(path: Path, run_id: str, where: str) -> None:
    """Resuming with an approval raises `JournalCorrupted` naming the run and `where`; the
    approval is not journaled and the run still waits for it."""
    later = _asking_agent(path)
    try:
        with pytest.raises(JournalCorrupted) as caught:
            await later.resume(run_id, approve=True)
        assert run_id in str(caught.value) and where in str(caught.value), str(caught.value)
        effects = await later.deps.runtime.effects(run_id)
        assert not [e for e in effects if e.kind == "approval"], "the approval was spent"
        record = await later.deps.runtime.load_run(run_id)
        assert record is not None and record.status == RunStatus.AWAITING_APPROVAL
    finally:
        await later.aclose()


async def test_a_transition_naming_a_node_the_graph_lacks_is_a_corrupted_journal(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.db"
    run_id, _ = await _waiting(path)
    _edit(path, "UPDATE transitions SET next_node = 'tool' WHERE seq = 1")
    await _refused_before_the_approval(path, run_id, "transition 1")
    later = _asking_agent(path)
    try:
        with pytest.raises(JournalCorrupted, match="transition 1"):
            await later.history(run_id)
        with pytest.raises(JournalCorrupted, match="transition 1"):
            await later.fork(run_id, at=1)
        assert len(await later.runs()) == 1
    finally:
        await later.aclose()


async def test_a_transition_of_a_node_the_graph_lacks_is_a_corrupted_journal(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.db"
    run_id, _ = await _waiting(path)
    _edit(path, "UPDATE transitions SET node = 'modle' WHERE seq = 1")
    await _refused_before_the_approval(path, run_id, "transition 1")


async def test_a_snapshot_whose_messages_are_not_a_list_is_a_corrupted_journal(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.db"
    run_id, _ = await _waiting(path, snapshot_every=1)
    _edit(path, "UPDATE transitions SET snapshot = json_set(snapshot, '$.messages', 5)")
    await _refused_before_the_approval(path, run_id, "transition 1")


async def test_a_model_effect_read_as_a_tool_call_is_a_corrupted_journal(tmp_path: Path) -> None:
    @tool(name="pay")
    def pay(to: str, amount: int) -> str:
        """Pay someone."""
        return f"paid {amount} to {to}"

    path = tmp_path / "journal.db"
    agent = Agent(
        "x",
        model=ScriptedModel([PAY_TURN, "done", "again"]),
        tools=[pay],
        runtime=SqliteRuntime(str(path)),
    )
    try:
        done = await agent.run("pay acme")
        assert done.status == "completed"
        effects = list(await agent.deps.runtime.effects(done.run_id))
        model_key = _flip_model_effect(path, done.run_id, effects)
        with pytest.raises(JournalCorrupted) as caught:
            await agent.fork(done.run_id, at=2)
        assert done.run_id in str(caught.value) and model_key in str(caught.value)
        assert len(await agent.runs()) == 1  # no fork journaled
    finally:
        await agent.aclose()


async def test_a_damaged_effect_row_is_found_before_the_approval_is_spent(
    tmp_path: Path,
) -> None:
    # A finished tool effect whose intent names no call (a model call's row, its kind
    # flipped): the resume refuses it before it journals the person's answer.
    path = tmp_path / "journal.db"
    run_id, effects = await _waiting(path)
    model_key = _flip_model_effect(path, run_id, effects)
    await _refused_before_the_approval(path, run_id, model_key)


class _Answer(BaseModel):
    city: str


async def test_a_structured_answer_step_is_no_damage(tmp_path: Path) -> None:
    agent = Agent(
        "x",
        model=ScriptedModel(['{"city": "Tokyo"}']),
        runtime=SqliteRuntime(str(tmp_path / "journal.db")),
    )
    try:
        result = await agent.run("where?", output_schema=_Answer)
        assert result.parsed == _Answer(city="Tokyo")
        steps = [c.node for c in await agent.history(result.run_id)]
        assert "structured_output" in steps, steps
        again = await agent.resume(result.run_id)  # a finished run: its stored result
        assert again.status == "completed"
    finally:
        await agent.aclose()


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    _worker(Path(sys.argv[2]))

"""Property: for any script and any crash point, resuming gives the state of a run never crashed.

The crash is simulated in-process: a wrapping journal raises `Crash` (a BaseException, so no
layer of the run catches it, as none survives a kill) just before or just after its Nth write
(start_run, begin_effect, end_effect, append_transition, finish_run), and from then on
refuses every call, as a dead process would. A fresh Agent on a fresh journal object over the
same SQLite file then resumes the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loomgraph import Agent
from loomgraph.models import ScriptedModel
from loomgraph.protocols import EffectRecord, UnknownRun
from loomgraph.runtime.sqlite import SqliteRuntime

WRITES = ("start_run", "begin_effect", "end_effect", "append_transition", "finish_run")


class Crash(BaseException):
    """The simulated death of the process."""


class CrashingRuntime:
    """Delegates to a real journal; dies before or after its Nth write, then stays dead."""

    def __init__(self, inner: SqliteRuntime, at: int | None, after: bool) -> None:
        self.inner, self.at, self.after = inner, at, after
        self.writes = 0
        self.dead = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if not callable(method):
            return method  # lease_seconds and the like
        if name in WRITES:
            return self._write(method)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.dead:
                raise Crash("the process is dead")
            return await method(*args, **kwargs)

        return call

    def _write(self, method: Any) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.dead:
                raise Crash("the process is dead")
            self.writes += 1
            crash = self.writes == self.at
            if crash and not self.after:
                self.dead = True
                raise Crash(f"before write {self.writes}")
            value = await method(*args, **kwargs)
            if crash:
                self.dead = True
                raise Crash(f"after write {self.writes}")
            return value

        return call


def script_of(turns: list[list[tuple[str, int]]], answer: str) -> list[Any]:
    """Model turns: each a list of tool calls (tool, argument), then the final answer."""
    out: list[Any] = []
    for calls in turns:
        out.append(
            {"text": "", "tool_calls": [{"tool": tool, "args": {"x": x}} for tool, x in calls]}
        )
    return [*out, answer]


def make_agent(
    path: Path, script: list[Any], ledger: list[str], at: int | None = None, after: bool = False
) -> tuple[Agent, CrashingRuntime]:
    """An Agent on the SQLite file, its journal wrapped to crash at write `at`."""

    async def double(x: int, idempotency_key: str) -> int:
        """Double a number."""
        ledger.append(idempotency_key)
        return 2 * x

    async def negate(x: int, idempotency_key: str) -> int:
        """Negate a number."""
        ledger.append(idempotency_key)
        return -x

    runtime = CrashingRuntime(SqliteRuntime(path, verify=False), at, after)
    agent = Agent("Compute.", model=ScriptedModel(script), tools=[double, negate], runtime=runtime)
    return agent, runtime


async def first_run(agent: Agent, runtime: CrashingRuntime) -> tuple[str, list[EffectRecord]]:
    """Run until done or crashed; the run id and the effects journaled by then."""
    session = agent.session("go", user_id="prop")
    with contextlib.suppress(Crash):
        await session.execute(agent.deps.hooks.on_event)
    inner = runtime.inner
    effects = await inner.effects(session.run_id)
    lease = await inner.lease(session.run_id) if await inner.load_run(session.run_id) else None
    if lease is not None:
        # The dead "process" still holds the run's lease: release it, as an operator would.
        await inner.release_lease(session.run_id, lease.owner)
    await inner.close()
    return session.run_id, effects


async def resume_and_read(agent: Agent, runtime: CrashingRuntime, run_id: str) -> Any:
    """Resume with a fresh Agent; its result, final state and transitions."""
    try:
        result = await agent.resume(run_id)
        history = await agent.history(run_id)
        transitions = await runtime.inner.transitions(run_id)
        effects = await runtime.inner.effects(run_id)
    finally:
        await runtime.inner.close()
    return result, history[-1].state if history else None, transitions, effects


tool_calls = st.lists(
    st.tuples(st.sampled_from(["double", "negate"]), st.integers(-5, 5)), min_size=1, max_size=3
)
scripts = st.tuples(st.lists(tool_calls, max_size=3), st.text(max_size=20))


@settings(max_examples=30, deadline=None)
@given(scripts, st.data())
def test_resume_after_any_crash_gives_the_uncrashed_final_state(
    drawn: tuple[list[list[tuple[str, int]]], str], data: st.DataObject
) -> None:
    turns, answer = drawn
    script = script_of(turns, answer)
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        # The uncrashed run, counting the journal writes it makes.
        ledger: list[str] = []
        agent, runtime = make_agent(base / "reference.db", script, ledger)
        ref_id, _ = asyncio.run(first_run(agent, runtime))
        total = runtime.writes
        agent, runtime = make_agent(base / "reference.db", script, ledger)
        expected, ref_state, ref_transitions, _ = asyncio.run(
            resume_and_read(agent, runtime, ref_id)
        )
        assert expected.status == "completed"
        assert len(ledger) == sum(len(t) for t in turns)

        at = data.draw(st.integers(1, total), label="crash at write")
        after = data.draw(st.booleans(), label="after the write")
        ledger = []
        agent, runtime = make_agent(base / "crashed.db", script, ledger, at, after)
        run_id, open_effects = asyncio.run(first_run(agent, runtime))
        assert runtime.dead
        ran_before = Counter(ledger)
        agent, runtime = make_agent(base / "crashed.db", script, ledger)
        if at == 1 and not after:  # died before the run was recorded: nothing to resume
            with pytest.raises(UnknownRun):
                asyncio.run(resume_and_read(agent, runtime, run_id))
            return
        result, state, transitions, effects = asyncio.run(resume_and_read(agent, runtime, run_id))

    assert result.status == "completed" and result.output == expected.output
    assert state == ref_state
    steps = [(t.node, t.visit) for t in transitions]
    assert steps == [(t.node, t.visit) for t in ref_transitions]  # no node ran twice
    # Each tool effect ran once; twice (same key) only if it ran before the crash while its
    # outcome never reached the journal.
    unfinished = {e.key for e in open_effects if e.status != "done"}
    for key, count in Counter(ledger).items():
        assert count == (2 if key in unfinished and ran_before[key] else 1), key
    assert len(set(ledger)) == sum(len(t) for t in turns)
    assert all(e.status == "done" for e in effects)

"""A process killed in the answer window — after a resume took a person's answer up, before the
tool call or node that uses it ran — leaves a run that goes on with that answer: it is never
asked again, and the approved call runs once (its idempotency key in a ledger outside the
journal). The answer is journaled, under the run's lease, before the run is `running`.

Real processes SIGKILLed at named points (`answer_window_agent`'s docstring): resumes by hand
on SQLite and Postgres, and `loomgraph worker` processes of a fleet (the probe's scenario: a
slow `on_event` hook at `run_started`). In process: the answer's effect is the one the tool
gate or the interrupt would write, written once; refused answers journal nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import answer_window_agent as A
import pg
from fault_fleet import CLI, Workers, fleet_env
from loomgraph import Agent
from loomgraph.agent.checkpoints import ApprovalNotPending, ApprovalUsed, ResumeError, ValueUsed
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.protocols import EffectRecord, EffectStatus, RunStatus, SizeLimits
from loomgraph.runtime.memory import InMemoryRuntime
from loomgraph.runtime.sqlite import SqliteRuntime
from test_fleet import sql, until, wait_until_ready

pg_schema = pg.pg_schema

HELPER = str(Path(__file__).with_name("answer_window_agent.py"))
WAITS = {"approve": RunStatus.AWAITING_APPROVAL, "value": RunStatus.INTERRUPTED}
# Where the run stands when the process dies at each point.
DIES_IN = {"answered": "waiting", "running": RunStatus.RUNNING, "run_started": RunStatus.RUNNING}


def backends() -> Iterator[Any]:
    yield pytest.param("sqlite", id="sqlite")
    yield pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)


@pytest.fixture
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    """`--journal` and `--schema` of a fresh journal on the backend asked for."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'journal.db'}", None
    return pg.postgres_dsn(), request.getfixturevalue("pg_schema")


def helper(
    mode: str, journal: tuple[str, str | None], ledger: Path, kind: str, *extra: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """One step of `answer_window_agent.py` in a process of its own, to its end."""
    spec, schema = journal
    args = [HELPER, mode, "--journal", spec, "--ledger", str(ledger), "--kind", kind, *extra]
    if schema:
        args += ["--schema", schema]
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def result_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return lines[-1]["result"]  # type: ignore[no-any-return]


def open_journal(journal: tuple[str, str | None]) -> Any:
    spec, schema = journal
    return A.journal(spec, schema)  # no kill point armed in this process


def died_status(arm: Path) -> str:
    """The run's status as the killed process read it just before it died."""
    return str(json.loads((arm.parent / (arm.name + ".died")).read_text())["status"])


@pytest.mark.parametrize("journal", list(backends()), indirect=True)
@pytest.mark.parametrize("kind", ["approve", "value"])
@pytest.mark.parametrize("point", A.POINTS)
async def test_a_resume_killed_in_the_answer_window_goes_on_with_the_answer(
    journal: tuple[str, str | None], tmp_path: Path, kind: str, point: str
) -> None:
    ledger, arm = tmp_path / "ledger", tmp_path / "arm"
    started = result_of(helper("run", journal, ledger, kind))
    run_id = started["run_id"]
    assert started["status"] == WAITS[kind]
    arm.touch()
    killed = helper(
        "answer",
        journal,
        ledger,
        kind,
        "--run-id",
        run_id,
        ANSWER_KILL_AT=point,
        ANSWER_ARM=str(arm),
    )
    assert killed.returncode == -signal.SIGKILL, (killed.stdout, killed.stderr)
    waiting = str(WAITS[kind])
    assert died_status(arm) == (waiting if DIES_IN[point] == "waiting" else DIES_IN[point])

    # A second answer is refused (the first is journaled), before anything is written.
    runtime = open_journal(journal)
    second = A.agent_on(runtime, kind, str(ledger))
    try:
        if point == "answered":
            refused: type[Exception] = ApprovalUsed if kind == "approve" else ValueUsed
        else:
            refused = ApprovalNotPending if kind == "approve" else ResumeError
        with pytest.raises(refused):
            if kind == "approve":
                await second.resume(run_id, approve=False)
            else:
                await second.resume(run_id, value=A.VALUE + 1)
    finally:
        await second.aclose()

    done = result_of(helper("resume", journal, ledger, kind, "--run-id", run_id))
    assert done["status"] == RunStatus.COMPLETED, done
    runtime = open_journal(journal)
    try:
        record = await runtime.load_run(run_id)
        effects = await runtime.effects(run_id)
    finally:
        await runtime.close()
    # The crash after the run was taken up is counted as a recovery; the one before is not
    # (the run still read waiting: only the answer was journaled).
    assert record.recoveries == (0 if point == "answered" else 1)
    answers = [e for e in effects if e.kind in ("approval", "answer")]
    assert len(answers) == 1 and answers[0].status == EffectStatus.DONE
    assert answers[0].attempts == 1
    if kind == "approve":
        assert done["output"] == "paid bob"
        assert answers[0].outcome == {"answer": True, "by": ""}
        tools = [e.key for e in effects if e.kind == "tool"]
        # The approved call ran exactly once, with the key the journal has for it.
        assert ledger.read_text().splitlines() == tools and len(tools) == 1
    else:
        assert done["output"] == f"did the work {A.VALUE} times"
        assert answers[0].outcome == {"value": A.VALUE}


# --------------------------------------------------------------------------- the fleet

LEASE, HEARTBEAT, POLL = 2.0, 2.0, 0.5


class AnswerWorkers(Workers):
    """`loomgraph worker --agent answer_window_agent:make` processes."""

    def start(self) -> subprocess.Popen[str]:
        log = open(self.logs / f"worker-{len(self.procs)}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [*CLI, "worker", "--agent", "answer_window_agent:make", *self.args],
            env=self.env,
            cwd=self.logs,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        log.close()
        self.procs.append(proc)
        wait_until_ready(proc, self.lines)
        return proc


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("kind", "point"),
    [
        ("approve", "run_started"),  # the probe's scenario
        ("approve", "running"),
        ("approve", "answered"),
        ("value", "run_started"),
        ("value", "answered"),
    ],
)
async def test_a_worker_killed_in_the_answer_window_leaves_the_answer_to_the_next(
    pg_schema: str, tmp_path: Path, kind: str, point: str, restore_env: None
) -> None:
    arm = tmp_path / "arm"
    asks = {"FLEET_ASK": "1"} if kind == "approve" else {"FLEET_INTERRUPT": "1"}
    env = await fleet_env(
        pg_schema,
        tmp_path,
        FLEET_LEASE=str(LEASE),
        ANSWER_KILL_AT=point,
        ANSWER_ARM=str(arm),
        **asks,
    )
    agent = A.make()
    args = ("--heartbeat", str(HEARTBEAT), "--poll", str(POLL), "--concurrency", "2")
    fleet = AnswerWorkers(env, tmp_path, *args, "--log-level", "warning")
    fleet.start()
    fleet.start()
    try:
        run_id = await agent.submit("job", user_id="u")
        waiting = await agent.wait(run_id, timeout=60)
        assert waiting.status == WAITS[kind], (waiting.status, waiting.reason)
        arm.touch()
        if kind == "approve":
            await agent.submit_resume(run_id, approve=True)
        else:
            await agent.submit_resume(run_id, value=3)
        [dead] = await until("the worker to die in the window", fleet.dead, 60)
        assert dead.returncode == -signal.SIGKILL
        expected = DIES_IN[point]
        assert died_status(arm) == (str(WAITS[kind]) if expected == "waiting" else expected)
        if point != "answered":  # the run waits for nothing: another answer is refused
            with pytest.raises((ApprovalNotPending, ResumeError)):
                if kind == "approve":
                    await agent.submit_resume(run_id, approve=False)
                else:
                    await agent.submit_resume(run_id, value=4)
        done = await agent.wait(run_id, timeout=90)
        record = await agent.deps.runtime.load_run(run_id)
        effects = await agent.deps.runtime.effects(run_id)
    finally:
        fleet.stop()
        await agent.aclose()
    # Gone on with the answer taken up before the kill, never asked again.
    assert done.status == RunStatus.COMPLETED, (done.status, done.reason)
    answers = [e for e in effects if e.kind in ("approval", "answer")]
    assert [(e.status, e.attempts) for e in answers] == [(EffectStatus.DONE, 1)]
    assert record.recoveries == (0 if point == "answered" else 1)
    if kind == "value":
        assert done.output == "did the work 3 times"
        return
    assert answers[0].outcome == {"answer": True, "by": ""}
    tools = sorted(e.key for e in effects if e.kind == "tool")
    assert len(tools) == 3
    # Every call ran exactly once, the approved one too, under the journal's key.
    attempts = await sql(f"SELECT key FROM {pg_schema}.attempts WHERE run_id = $1", run_id)
    assert sorted(r[0] for r in attempts) == tools


# --------------------------------------------------------------------------- in one process


class Counting(InMemoryRuntime):
    """Counts the intents journaled under each key."""

    def __init__(self) -> None:
        super().__init__()
        self.begun: dict[str, int] = {}

    async def begin_effect(self, effect: EffectRecord, **kw: Any) -> EffectRecord | None:
        self.begun[effect.key] = self.begun.get(effect.key, 0) + 1
        return await super().begin_effect(effect, **kw)


async def pay(to: str) -> str:
    """Pay someone."""
    return f"paid {to}"


def paying(runtime: Any, *turns: Any) -> Agent:
    call = {"tool_calls": [{"tool": "pay", "args": {"to": "bob"}}]}
    return Agent(
        "x",
        model=ScriptedModel([call, *turns, "done"]),
        tools=[pay],
        runtime=runtime,
        permissions=StandardPermissions(ask=["pay"]),
    )


async def test_the_approval_is_journaled_once_as_the_gate_writes_it() -> None:
    runtime = Counting()
    agent = paying(runtime)
    waiting = await agent.run("pay bob")
    assert waiting.pending is not None
    key = waiting.pending.key
    edited = {"args": {"to": "carol"}}
    from loomgraph.engine.effects import Approval

    answer = Approval(waiting.pending.call["id"], True, edited["args"], "alice", "carol, not bob")
    done = await agent.resume(waiting.run_id, approve=answer)
    assert done.status == RunStatus.COMPLETED
    effect = await runtime.effect(waiting.run_id, key)
    assert effect is not None and effect.kind == "approval"
    assert effect.intent == {"call": waiting.pending.call}
    assert effect.outcome == {"answer": edited, "by": "alice", "reason": "carol, not bob"}
    assert runtime.begun[key] == 1  # the gate found it and wrote nothing again
    tool = next(e for e in await runtime.effects(waiting.run_id) if e.kind == "tool")
    assert tool.intent["call"]["args"] == {"to": "carol"}


async def test_an_interrupt_value_is_journaled_once_under_the_question_key() -> None:
    from loomgraph.authoring.loader import graph_from_yaml

    runtime = Counting()
    agent = Agent(
        "x",
        model=ScriptedModel(["unused"]),
        runtime=runtime,
        architecture=graph_from_yaml(A.HOW_MANY),
    )
    waiting = await agent.run("count")
    assert waiting.pending is not None
    key = waiting.pending.key
    done = await agent.resume(waiting.run_id, value=3)
    assert done.output == "did the work 3 times"
    effect = await runtime.effect(waiting.run_id, key)
    assert effect is not None and effect.kind == "answer"
    assert effect.intent == {"node": "ask", "type": "int"} and effect.outcome == {"value": 3}
    assert runtime.begun[key] == 1
    with pytest.raises(ResumeError):  # answered and gone on: nothing waits for a value
        await agent.resume(waiting.run_id, value=4)


async def test_an_edit_over_the_size_limit_is_refused_before_anything_is_journaled(
    tmp_path: Path,
) -> None:
    runtime = SqliteRuntime(tmp_path / "j.db")
    call = {"tool_calls": [{"tool": "pay", "args": {"to": "bob"}}]}
    agent = Agent(
        "x",
        model=ScriptedModel([call, "done"]),
        tools=[pay],
        runtime=runtime,
        permissions=StandardPermissions(ask=["pay"]),
        size_limits=SizeLimits(tool_args_chars=100),
    )
    try:
        waiting = await agent.run("pay bob")
        again = await agent.resume(waiting.run_id, approve={"args": {"to": "x" * 500}})
        assert again.status == RunStatus.AWAITING_APPROVAL and "refused" in again.reason
        assert await runtime.effect(waiting.run_id, waiting.pending.key) is None
        done = await agent.resume(waiting.run_id, approve=True)
    finally:
        await agent.aclose()
    assert done.status == RunStatus.COMPLETED


class DiesAfterAnswer(SqliteRuntime):
    """Raises `Died` (a BaseException: nothing catches it, as nothing survives a kill) right
    after the answer's outcome is journaled, and refuses every write after."""

    dead = False

    def _alive(self) -> None:
        if self.dead:
            raise Died

    async def end_effect(self, run_id: str, key: str, outcome: Any, status: Any) -> None:
        self._alive()
        await super().end_effect(run_id, key, outcome, status)
        if A._is_answer(key):
            self.dead = True
            raise Died

    async def begin_effect(self, effect: EffectRecord, **kw: Any) -> EffectRecord | None:
        self._alive()
        return await super().begin_effect(effect, **kw)

    async def finish_run(self, *args: Any, **kw: Any) -> None:
        self._alive()
        await super().finish_run(*args, **kw)

    async def append_transition(self, *args: Any, **kw: Any) -> None:
        self._alive()
        await super().append_transition(*args, **kw)


class Died(BaseException):
    """The simulated death of the process."""


@pytest.mark.parametrize("kind", ["approve", "value"])
async def test_a_run_whose_answer_is_journaled_while_it_still_waits_goes_on_with_it(
    tmp_path: Path, kind: str
) -> None:
    path, ledger = tmp_path / "j.db", tmp_path / "ledger"
    first = A.agent_on(DiesAfterAnswer(path), kind, str(ledger))
    waiting = await first.run("pay bob")
    with pytest.raises(Died):
        if kind == "approve":
            await first.resume(waiting.run_id, approve=True)
        else:
            await first.resume(waiting.run_id, value=3)
    await first.deps.runtime.close()
    runtime = SqliteRuntime(path)
    agent = A.agent_on(runtime, kind, str(ledger))
    try:
        lease = await runtime.lease(waiting.run_id)
        if lease is not None:  # the "dead" process's: released, as an operator would
            await runtime.release_lease(waiting.run_id, lease.owner)
        record = await runtime.load_run(waiting.run_id)
        assert record.status == WAITS[kind]  # only the answer was journaled
        with pytest.raises(ApprovalUsed if kind == "approve" else ValueUsed):
            if kind == "approve":
                await agent.resume(waiting.run_id, approve=False)
            else:
                await agent.resume(waiting.run_id, value=4)
        done = await agent.resume(waiting.run_id)
    finally:
        await agent.aclose()
    assert done.status == RunStatus.COMPLETED
    assert done.output == ("paid bob" if kind == "approve" else "did the work 3 times")
    if kind == "approve":
        assert len(ledger.read_text().splitlines()) == 1

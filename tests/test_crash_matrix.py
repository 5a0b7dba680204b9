"""The crash matrix: a real run SIGKILLed at every named point, then resumed in a new process.

`crash_worker.py` runs the built-in `react` graph (model → 2 parallel tools → model → tool →
answer) with tools that write a durable side-effect ledger, and kills itself at the chosen
point of the chosen effect or transition. A second worker process resumes the run. Checked:
the final state equals an uncrashed run's; no finished node ran again; no finished effect ran
again; each ledger key has one line, two (with the same key) only for an effect that ran but
whose outcome the crash kept from the journal, and the journal reported exactly those as
`unknown_after_crash`. Every point of every effect and transition is tried, on SQLite and
on PostgreSQL. The last tests resume one run from two processes at once:
exactly one may advance it (the per-run lease).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import crash_worker as W
import pg
from loomgraph import Agent
from loomgraph.memory.null import NoMemory
from loomgraph.models import ScriptedModel
from loomgraph.protocols import EffectRecord, Episode, Runtime

WORKER = str(Path(__file__).with_name("crash_worker.py"))
pg_schema = pg.pg_schema

# The (node, visit) path of every run of the script, crashed or not.
PATH = [("model", 1), ("tools", 1), ("model", 2), ("tools", 2), ("model", 3)]
TOOL_KEYS = {
    "tools:1:1": {"city": "Paris"},
    "tools:1:2": {"city": "Tokyo"},
    "tools:2:1": {"a": 2, "b": 3},
}


@dataclass(frozen=True)
class Journal:
    """Where the worker journals: `sqlite:PATH`, or a Postgres DSN and schema."""

    spec: str
    schema: str | None = None

    def args(self) -> list[str]:
        """The worker's journal options."""
        return ["--journal", self.spec, *(["--schema", self.schema] if self.schema else [])]

    def open(self) -> Runtime:
        """A fresh journal object in this process."""
        return W.open_journal(self.spec, self.schema)


@dataclass
class Worker:
    """A finished worker process: its exit code and the JSON lines it printed."""

    returncode: int
    lines: list[dict[str, Any]]
    stderr: str

    def last(self, key: str) -> dict[str, Any]:
        """The last printed line carrying `key`."""
        found = [line for line in self.lines if key in line]
        assert found, f"worker printed no {key!r} line; stderr:\n{self.stderr}"
        return found[-1]


def run_worker(journal: Journal, ledger: Path, *args: str) -> Worker:
    """Run one worker to its end (normal exit or its own SIGKILL)."""
    done = subprocess.run(
        [sys.executable, WORKER, *args, *journal.args(), "--ledger", str(ledger)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return Worker(done.returncode, lines, done.stderr)


def ledger_lines(ledger: Path) -> list[tuple[str, dict[str, Any]]]:
    """The ledger as (key, args) pairs, in the order they were written."""
    if not ledger.exists():
        return []
    pairs = [line.split("\t") for line in ledger.read_text().splitlines()]
    return [(key, json.loads(args)) for key, args in pairs]


def suffix(run_id: str, key: str) -> str:
    """An effect key without its run id (`tools:1:2`)."""
    assert key.startswith(run_id + ":"), key
    return key[len(run_id) + 1 :]


async def journal_view(journal: Journal, run_id: str) -> dict[str, Any]:
    """What the journal says about a run: record, transitions, effects, final state."""
    runtime = journal.open()
    try:
        agent = Agent(W.INSTRUCTIONS, model=ScriptedModel(W.SCRIPT), runtime=runtime)
        record = await runtime.load_run(run_id)
        assert record is not None
        history = await agent.history(run_id)
        return {
            "record": record,
            "transitions": await runtime.transitions(run_id),
            "effects": {e.key: e for e in await runtime.effects(run_id)},
            "state": history[-1].state if history else None,
        }
    finally:
        await runtime.close()  # type: ignore[attr-defined]


async def break_dead_lease(journal: Journal, run_id: str, pid: int) -> None:
    """Release the lease the killed worker left behind, as an operator who knows it is dead.

    Without this the run stays leased to the dead worker until the lease expires
    (`lease_seconds`, 30 s by default) and a resume meanwhile gets RunConflict.
    """
    runtime: Any = journal.open()
    try:
        lease = await runtime.lease(run_id)
        if lease is not None:
            assert f":{pid}:" in lease.owner, (lease, pid)  # the dead worker's own lease
            assert await runtime.release_lease(run_id, lease.owner)
    finally:
        await runtime.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uncrashed run of the same script (on SQLite): its final state and ledger."""
    import asyncio

    folder = tmp_path_factory.mktemp("reference")
    journal, ledger = Journal(f"sqlite:{folder / 'journal.db'}"), folder / "ledger.tsv"
    done = run_worker(journal, ledger, "run")
    assert done.returncode == 0, done.stderr
    run_id = done.lines[0]["run_id"]
    view = asyncio.run(journal_view(journal, run_id))
    return {
        "state": view["state"],
        "result": done.last("result")["result"],
        "ledger": [(suffix(run_id, k), a) for k, a in ledger_lines(ledger)],
    }


def test_the_uncrashed_reference_run(reference: dict[str, Any]) -> None:
    assert reference["result"]["status"] == "completed"
    assert reference["result"]["output"] == W.SCRIPT[-1]
    assert sorted(reference["ledger"]) == sorted(TOOL_KEYS.items())
    tool_messages = [m for m in reference["state"]["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == ["France", "Japan", "5"]


async def crash_and_resume(
    journal: Journal, ledger: Path, point: str, n: int, reference: dict[str, Any]
) -> None:
    """Crash at (point, n), resume in a new process, and check everything the matrix promises."""
    crashed = run_worker(journal, ledger, "run", "--point", point, "--n", str(n))
    assert crashed.returncode == -signal.SIGKILL, (crashed.returncode, crashed.stderr)
    run_id = crashed.lines[0]["run_id"]
    crash = crashed.last("crash")
    assert (crash["crash"], crash["n"]) == (point, n)

    before = await journal_view(journal, run_id)
    assert before["record"].status == "running"
    await break_dead_lease(journal, run_id, crashed.lines[0]["pid"])
    ran_before = Counter(k for k, _ in ledger_lines(ledger))
    done_before = {k for k, e in before["effects"].items() if e.status == "done"}
    open_before = set(before["effects"]) - done_before  # intent journaled, no outcome

    resumed = run_worker(journal, ledger, "resume", "--run-id", run_id)
    assert resumed.returncode == 0, resumed.stderr
    result = resumed.last("result")
    after = await journal_view(journal, run_id)

    # The same end as a run that never crashed.
    assert result["result"]["status"] == "completed"
    assert result["result"]["output"] == reference["result"]["output"]
    assert after["record"].status == "completed"
    assert after["state"] == reference["state"]

    # No finished node ran again: each (node, visit) once, in the uncrashed order.
    steps = [(t.node, t.visit) for t in after["transitions"]]
    assert steps == PATH
    assert [t.seq for t in after["transitions"]] == list(range(1, len(PATH) + 1))

    # No finished effect ran again; every unfinished one ran exactly once more.
    all_keys = set(after["effects"])
    assert len(all_keys) == W.EFFECTS
    assert Counter(result["executed"]) == Counter(all_keys - done_before)

    # The ledger: one line per key, two (same key, same args) only when the effect ran but
    # the crash came before its outcome was journaled.
    twice = {k for k in open_before if ran_before[k]}
    lines = ledger_lines(ledger)
    counts = Counter(k for k, _ in lines)
    assert {suffix(run_id, k) for k in counts} == set(TOOL_KEYS)
    for key, count in counts.items():
        assert count == (2 if key in twice else 1), (key, count, point, n)
        assert all(a == TOOL_KEYS[suffix(run_id, key)] for k, a in lines if k == key)
    if point == "after_effect" and crash["kind"] == "tool":
        assert crash["key"] in twice and counts[crash["key"]] == 2

    # The journal reported every intent without an outcome as unknown_after_crash (and an
    # event said so); it is re-executed with the same key and then done, on attempt two.
    assert set(result["unknown"]) == open_before
    assert set(result["unknown_events"]) == open_before
    if point in ("after_intent", "after_effect"):
        assert crash["key"] in open_before  # the crashed effect: intent, no outcome
        assert after["effects"][crash["key"]].attempts == 2
    elif point in ("before_intent", "after_outcome") and "key" in crash:
        assert crash["key"] not in open_before
    effects: dict[str, EffectRecord] = after["effects"]
    for key, effect in effects.items():
        assert effect.status == "done", effect
        assert effect.attempts == (2 if key in open_before else 1), effect
        assert effect.recovered == (key in open_before), effect  # the crash stays visible


def matrix(full: bool) -> Iterator[Any]:
    """(point, n) for every effect and transition, or a representative few of each."""
    effects = range(1, W.EFFECTS + 1) if full else (1, 3, 5)  # a model call, parallel, lone tool
    transitions = range(1, W.TRANSITIONS + 1) if full else (1, 2, 5)
    for point in W.POINTS:
        for n in transitions if point == "after_transition" else effects:
            yield pytest.param(point, n, id=f"{point}-{n}")


@pytest.mark.parametrize(("point", "n"), list(matrix(full=True)))
async def test_crash_matrix_sqlite(
    tmp_path: Path, point: str, n: int, reference: dict[str, Any]
) -> None:
    journal = Journal(f"sqlite:{tmp_path / 'journal.db'}")
    await crash_and_resume(journal, tmp_path / "ledger.tsv", point, n, reference)


@pytest.mark.postgres
@pytest.mark.parametrize(("point", "n"), list(matrix(full=True)))
async def test_crash_matrix_postgres(
    tmp_path: Path, pg_schema: str, point: str, n: int, reference: dict[str, Any]
) -> None:
    journal = Journal(pg.postgres_dsn(), pg_schema)
    await crash_and_resume(journal, tmp_path / "ledger.tsv", point, n, reference)


# --------------------------------------------------------------------------- two resumers


def backends() -> Iterator[Any]:
    """SQLite, and PostgreSQL (the case of many machines) when it is reachable."""
    yield pytest.param("sqlite", id="sqlite")
    yield pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)


@pytest.fixture
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Journal:
    """A fresh journal on the backend the test is parametrised with."""
    if request.param == "sqlite":
        return Journal(f"sqlite:{tmp_path / 'journal.db'}")
    schema: str = request.getfixturevalue("pg_schema")
    return Journal(pg.postgres_dsn(), schema)


async def crashed_run(journal: Journal, ledger: Path) -> str:
    """A run killed after its first transition (the model turn), its dead lease released."""
    crashed = run_worker(journal, ledger, "run", "--point", "after_transition", "--n", "1")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    run_id: str = crashed.lines[0]["run_id"]
    await break_dead_lease(journal, run_id, crashed.lines[0]["pid"])
    return run_id


def worker_process(journal: Journal, ledger: Path, *args: str) -> subprocess.Popen[str]:
    """A worker started in the background, its stdin and stdout piped."""
    return subprocess.Popen(
        [sys.executable, WORKER, *args, *journal.args(), "--ledger", str(ledger)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> Worker:
    """Close a background worker's stdin (held tools go on at end of file); wait for it."""
    out, err = process.communicate("", timeout=120)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return Worker(process.returncode, lines, err)


@pytest.mark.parametrize("journal", list(backends()), indirect=True)
async def test_a_second_resume_gets_run_conflict_while_the_first_holds_the_run(
    journal: Journal, tmp_path: Path, reference: dict[str, Any]
) -> None:
    ledger = tmp_path / "ledger.tsv"
    run_id = await crashed_run(journal, ledger)
    first = worker_process(journal, ledger, "resume", "--run-id", run_id, "--hold")
    try:
        # The first resumer is inside a tool, mid-run, holding the run's lease.
        assert first.stdout is not None
        line = json.loads(first.stdout.readline())
        assert suffix(run_id, line["holding"]).startswith("tools:1:")
        second = run_worker(journal, ledger, "resume", "--run-id", run_id)
        assert second.returncode == 3, (second.lines, second.stderr)
        assert "leased by" in second.last("conflict")["conflict"]
        assert second.last("conflict")["executed"] == []
    finally:
        done = finish(first)
    assert done.returncode == 0, done.stderr
    assert done.last("result")["result"]["output"] == reference["result"]["output"]
    counts = Counter(k for k, _ in ledger_lines(ledger))
    assert {suffix(run_id, k) for k in counts} == set(TOOL_KEYS)
    assert set(counts.values()) == {1}  # no effect ran twice
    view = await journal_view(journal, run_id)
    assert [(t.node, t.visit) for t in view["transitions"]] == PATH
    assert view["state"] == reference["state"]
    # Once the run is finished a resume returns its stored result and executes nothing.
    again = run_worker(journal, ledger, "resume", "--run-id", run_id)
    assert again.returncode == 0 and again.last("result")["executed"] == []


@pytest.mark.parametrize("journal", list(backends()), indirect=True)
async def test_two_processes_resuming_one_run_at_once_advance_it_once(
    journal: Journal, tmp_path: Path, reference: dict[str, Any]
) -> None:
    ledger = tmp_path / "ledger.tsv"
    run_id = await crashed_run(journal, ledger)
    racers = [worker_process(journal, ledger, "resume", "--run-id", run_id) for _ in range(2)]
    done = [finish(r) for r in racers]
    # Each either finished the run (returning the same result) or was refused the lease.
    for worker in done:
        assert worker.returncode in (0, 3), worker.stderr
        if worker.returncode == 0:
            assert worker.last("result")["result"]["output"] == reference["result"]["output"]
    executed = [w.last("result" if w.returncode == 0 else "conflict")["executed"] for w in done]
    assert sorted(bool(e) for e in executed) == [False, True], executed  # one advanced it
    counts = Counter(k for k, _ in ledger_lines(ledger))
    assert {suffix(run_id, k) for k in counts} == set(TOOL_KEYS)
    assert set(counts.values()) == {1}
    view = await journal_view(journal, run_id)
    assert [(t.node, t.visit) for t in view["transitions"]] == PATH
    assert view["state"] == reference["state"]


class CountingMemory(NoMemory):
    """Keeps nothing, but counts the episodes it is asked to remember."""

    def __init__(self) -> None:
        self.remembered: list[str] = []

    async def remember(self, episode: Episode) -> None:
        self.remembered.append(episode.run_id)


class LateLease(W.KillingRuntime):
    """A journal whose `acquire_lease` waits until told, to order two resumers exactly."""

    def __init__(self, inner: Any, go: asyncio.Event, waiting: asyncio.Event) -> None:
        super().__init__(inner, W.Killer(None, 0))
        self.go, self.waiting = go, waiting
        self.finished: list[str] = []

    async def acquire_lease(
        self, run_id: str, owner: str, ttl: float | None = None, **kw: Any
    ) -> Any:
        self.waiting.set()
        await self.go.wait()
        return await self.inner.acquire_lease(run_id, owner, ttl, **kw)

    async def finish_run(self, run_id: str, status: Any, reason: str, result: Any) -> None:
        self.finished.append(status)
        await self.inner.finish_run(run_id, status, reason, result)


async def test_a_resume_that_got_the_lease_after_the_run_finished_does_not_finish_it_again(
    tmp_path: Path,
) -> None:
    """B reads the run while it is unfinished, then gets the lease only after A finished it.

    B must then see the run as finished (the stored result, nothing executed), not drive it
    again from END: that journals a second, different result and stores a second episode.
    """
    journal, ledger = Journal(f"sqlite:{tmp_path / 'journal.db'}"), tmp_path / "ledger.tsv"
    run_id = await crashed_run(journal, ledger)
    memory = CountingMemory()
    go, waiting = asyncio.Event(), asyncio.Event()
    a_inner, b_inner = journal.open(), journal.open()
    a_runtime = W.KillingRuntime(a_inner, W.Killer(None, 0))
    b_runtime = LateLease(b_inner, go, waiting)

    def agent(runtime: Any) -> Agent:
        tools = W.make_tools(str(ledger), runtime.killer, hold=False)
        return Agent(
            W.INSTRUCTIONS,
            model=ScriptedModel(W.SCRIPT),
            tools=tools,
            runtime=runtime,
            memory=memory,
        )

    try:
        b_task = asyncio.create_task(agent(b_runtime).resume(run_id))
        await waiting.wait()  # B has read the run (still running) and waits for the lease
        a_result = await agent(a_runtime).resume(run_id)
        go.set()
        b_result = await b_task
        stored = await b_inner.load_run(run_id)  # type: ignore[attr-defined]
    finally:
        await a_inner.close()  # type: ignore[attr-defined]
        await b_inner.close()  # type: ignore[attr-defined]
    assert a_result.status == "completed"
    assert set(Counter(k for k, _ in ledger_lines(ledger)).values()) == {1}
    assert b_runtime.finished == [], "the second resumer journaled the run's end again"
    assert memory.remembered == [run_id], "the run's episode was stored twice"
    assert b_result == a_result
    assert stored.result == a_result.to_dict()

"""The agent the fleet tests run in `loomgraph worker` subprocesses: `--agent fleet_agent:make`.

Configured by the environment (set by the test): `FLEET_DSN`, `FLEET_SCHEMA`,
`FLEET_LEASE` (lease seconds), `FLEET_TURN_MS` (how long each model turn takes),
`FLEET_ASK` (the third `work` call asks for approval), `FLEET_MAX_RECOVERIES`,
`FLEET_INTERRUPT` (the run first waits for a number from a person, then does its work that
many times over: the graph `HOW_MANY`), `FLEET_CLOCK_FILE` (with `FLEET_ASK`: approval
requests expire after 60 s on a desk clock the test moves through that file,
tests/desk_clock.py), `FLEET_HOLD_ANSWER` (a folder: the first worker about to journal an
answer creates `held` there holding its pid, and waits for a file `go` before it goes on —
a worker to SIGSTOP between taking an answer job and journaling the answer; then it writes
to `done` what became of it: `journaled`, or the exception's type).

The model asks for two `work` calls (in one turn), then one more, then answers. `work`
writes one ledger row per idempotency key (`INSERT … ON CONFLICT DO NOTHING`: an idempotent
API absorbs a repeat with the same key) with when it ran and for whom, and one `attempts`
row per execution; a prompt containing `poison` makes it SIGKILL its own process, every time.
A prompt containing `slow` makes each `work` call last `FLEET_SLOW_MS` (default 1500) ms.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import asyncpg

from loomgraph import Agent
from loomgraph.governance import StandardPermissions
from loomgraph.models import ScriptedModel
from loomgraph.models.scripted import Turn, as_turn
from loomgraph.protocols import ModelRequest
from loomgraph.runtime.postgres import PostgresRuntime
from loomgraph.tools.context import ToolContext

LEDGER_DDL = [
    "CREATE TABLE IF NOT EXISTS {s}.ledger (key TEXT PRIMARY KEY, run_id TEXT, user_id TEXT, "
    "started DOUBLE PRECISION, ended DOUBLE PRECISION, pid INT)",
    "CREATE TABLE IF NOT EXISTS {s}.attempts (key TEXT, run_id TEXT, user_id TEXT, "
    "started DOUBLE PRECISION, ended DOUBLE PRECISION, pid INT)",
]

_pools: dict[int, Any] = {}


async def _pool() -> Any:
    loop = id(asyncio.get_running_loop())
    if loop not in _pools:
        _pools[loop] = await asyncpg.create_pool(os.environ["FLEET_DSN"], min_size=0, max_size=4)
    return _pools[loop]


async def work(item: str, context: ToolContext) -> str:
    """Do one unit of work for the user (writes the side-effect ledger)."""
    schema = os.environ["FLEET_SCHEMA"]
    started = time.time()
    if "poison" in item:
        os.kill(os.getpid(), signal.SIGKILL)
    pause = float(os.environ.get("FLEET_SLOW_MS", "1500")) if "slow" in item else 40.0
    await asyncio.sleep(pause / 1000)
    ended = time.time()
    pool = await _pool()
    args = (context.idempotency_key, context.run_id, context.user_id, started, ended, os.getpid())
    await pool.execute(f"INSERT INTO {schema}.attempts VALUES ($1, $2, $3, $4, $5, $6)", *args)
    await pool.execute(
        f"INSERT INTO {schema}.ledger VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key) DO NOTHING",
        *args,
    )
    return f"done {item}"


def _turn(request: ModelRequest) -> Turn:
    """Two `work` calls, then one more, then the answer; the items name the prompt's words."""
    prompt = next((m["content"] for m in request.messages if m.get("role") == "user"), "")
    flag = " ".join(w for w in ("poison", "slow") if w in prompt)
    if request.call_index == 0:
        calls = [{"tool": "work", "args": {"item": f"a {flag}"}}]
        calls.append({"tool": "work", "args": {"item": "b"}})
        return as_turn({"tool_calls": calls}, 0)
    if request.call_index == 1:
        return as_turn({"tool_calls": [{"tool": "work", "args": {"item": "c"}}]}, 1)
    return Turn(text=f"answer to {prompt}")


class PacedModel(ScriptedModel):
    """The scripted model, each turn taking `FLEET_TURN_MS` milliseconds (a model's latency)."""

    async def stream(self, request: ModelRequest) -> Any:  # type: ignore[override]
        await asyncio.sleep(float(os.environ.get("FLEET_TURN_MS", "20")) / 1000)
        async for chunk in super().stream(request):
            yield chunk


# Waits for a person's number (`submit_resume(run_id, value=N)`), then answers with it.
HOW_MANY = """
name: how-many
entry: ask
state:
  times: {type: int}
nodes:
  ask: {kind: interrupt, request: int, message: 'How many times?', output: times}
  answer: {kind: function, call: "fleet_agent:did", reads: [times], writes: [output]}
edges:
  - {from: ask, to: answer}
  - {from: answer, to: END}
"""


def did(state: Any) -> dict[str, Any]:
    """The answer of a `HOW_MANY` run."""
    return {"output": f"did the work {state['times']} times"}


def _hold_answers(folder: str) -> None:
    """Make the first answer this process journals wait in `folder` (`FLEET_HOLD_ANSWER`)."""
    from loomgraph.agent import resuming

    journal_answer = resuming.journal_answer

    async def held(*args: Any, **kwargs: Any) -> Any:
        try:
            fd = os.open(os.path.join(folder, "held"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:  # another worker holds (or held) one: this one goes on
            return await journal_answer(*args, **kwargs)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        said = "journaled"
        try:
            while not os.path.exists(os.path.join(folder, "go")):
                await asyncio.sleep(0.02)
            return await journal_answer(*args, **kwargs)
        except BaseException as err:
            said = type(err).__name__
            raise
        finally:  # what became of the held answer, for the test to read
            with open(os.path.join(folder, "done"), "w") as f:
                f.write(said)

    resuming.journal_answer = held  # type: ignore[assignment]


def make(**overrides: Any) -> Agent:
    """The fleet tests' agent on the Postgres journal the environment names."""
    if os.environ.get("FLEET_HOLD_ANSWER"):
        _hold_answers(os.environ["FLEET_HOLD_ANSWER"])
    runtime = PostgresRuntime(
        os.environ["FLEET_DSN"],
        schema=os.environ["FLEET_SCHEMA"],
        lease_seconds=float(os.environ.get("FLEET_LEASE", "30")),
        pool_size=4,
    )
    options: dict[str, Any] = {
        "model": PacedModel(_turn),
        "tools": [work],
        "runtime": runtime,
        "max_recoveries": int(os.environ.get("FLEET_MAX_RECOVERIES", "2")),
    }
    if os.environ.get("FLEET_ASK"):  # the third call waits for a person's approval
        timeout = None
        if os.environ.get("FLEET_CLOCK_FILE"):
            import desk_clock

            desk_clock.follow_file(os.environ["FLEET_CLOCK_FILE"])
            timeout = 60.0
        options["permissions"] = StandardPermissions(
            allow=["work"], ask=["work(item=c)"], approval_timeout_s=timeout
        )
    if os.environ.get("FLEET_INTERRUPT"):
        from loomgraph.authoring.loader import graph_from_yaml

        options["architecture"] = graph_from_yaml(HOW_MANY)
    options.update(overrides)
    return Agent("You do work.", **options)
